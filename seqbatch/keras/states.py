"""The state variables of stateful RNN layers: find them, zero them, sync them."""

from __future__ import annotations

from typing import Any

import keras


def stateful_rnns(model: keras.layers.Layer) -> list[keras.layers.RNN]:
    """Every built stateful RNN layer in ``model``, nested models and wrappers included.

    The forward and backward layers of a ``Bidirectional`` are listed, not the wrapper.

    Args:
        model: a model or a layer.

    Returns:
        The ``keras.layers.RNN`` instances (``LSTM``, ``GRU``, ...) with ``stateful=True``
        whose states exist.

    Examples:
        >>> import keras, seqbatch
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True, name="lstm"),
        ...     keras.layers.Bidirectional(keras.layers.GRU(4, stateful=True, name="gru")),
        ... ])
        >>> sorted(layer.name for layer in seqbatch.keras.stateful_rnns(model))
        ['backward_gru', 'forward_gru', 'lstm']
    """
    # Keras has no public recursive listing of sublayers; `_flatten_layers` is the one that
    # Keras itself uses, and it reaches inside nested models and wrappers alike.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.RNN) and layer.stateful and layer.states is not None
    ]


def _sync_jax_state(model: keras.layers.Layer) -> None:
    # Under JAX, fit() and evaluate() keep the variables' values in the trainer's state: put
    # them back into the variables before reading or writing any.
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _state_variables(model: keras.layers.Layer) -> list[Any]:
    return [v for layer in stateful_rnns(model) for v in keras.tree.flatten(layer.states)]


def reset_states(model: keras.layers.Layer) -> None:
    """Zero the state of every stateful RNN in ``model``: Keras 2's ``model.reset_states()``.

    Reaches RNNs inside nested models, ``Bidirectional`` and other wrappers such as
    :class:`StreamReset`. Under the JAX backend the trainer's state is synced first, so the
    function also works inside a callback.

    Args:
        model: a model or a layer.

    Examples:
        >>> import numpy as np, keras, seqbatch
        >>> inner = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ... ])
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)), inner,
        ...     keras.layers.Bidirectional(keras.layers.GRU(4, stateful=True)),
        ... ])
        >>> _ = model.predict(np.ones((2, 3, 1)), verbose=0)
        >>> seqbatch.keras.reset_states(model)
        >>> [float(np.abs(s.numpy()).max())
        ...  for layer in seqbatch.keras.stateful_rnns(model) for s in layer.states]
        [0.0, 0.0, 0.0, 0.0]
    """
    _sync_jax_state(model)
    for layer in stateful_rnns(model):
        layer.reset_state()
