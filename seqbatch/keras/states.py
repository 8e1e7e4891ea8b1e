"""The state variables of stateful RNN layers: find them, zero them, sync them, carry them.

A state is carried only forwards in time: a stateful RNN that runs backwards is refused.
"""

from __future__ import annotations

import types
from typing import Any

import keras
from keras import ops


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model or keras.layers.Layer. Received: model of type "
            f"{type(model).__name__}"
        )


def stateful_rnns(model: keras.layers.Layer) -> list[keras.layers.RNN]:
    """Every built stateful RNN layer in ``model``, nested models and wrappers included.

    The forward and backward layers of a ``Bidirectional`` are listed, not the wrapper.

    Args:
        model: a model or a layer.

    Returns:
        The ``keras.layers.RNN`` instances (``LSTM``, ``GRU``, ...) with ``stateful=True``
        whose states exist.

    Raises:
        TypeError: ``model`` is not a Keras layer or model.

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
    _check_model(model)
    # Keras has no public recursive listing of sublayers; `_flatten_layers` is the one that
    # Keras itself uses, and it reaches inside nested models and wrappers alike.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.RNN) and layer.stateful and layer.states is not None
    ]


def check_runs_forwards(model: keras.layers.Layer) -> None:
    """Raise ``ValueError`` if a stateful RNN of ``model`` runs backwards in time.

    A backward RNN (``go_backwards=True``, or the backward layer of a ``Bidirectional``)
    reads each window from its last step to its first, so a stateful one starts the last step
    of window ``k + 1`` from the state that window ``k`` left at its first step: never the
    continuation of a stream. Layers not yet built are checked too.

    Args:
        model: a model or a layer.

    Raises:
        TypeError: ``model`` is not a Keras layer or model.
        ValueError: a stateful RNN of ``model`` runs backwards.

    Examples:
        >>> import keras, seqbatch
        >>> from seqbatch.keras.states import check_runs_forwards
        >>> check_runs_forwards(keras.layers.Bidirectional(keras.layers.GRU(4)))
        >>> check_runs_forwards(
        ...     keras.layers.Bidirectional(keras.layers.GRU(4, stateful=True), name="bi")
        ... )  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: A stateful RNN must run forwards in time...Received: Bidirectional 'bi'...
    """
    _check_model(model)
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    wrappers = {
        id(getattr(w, side)): w
        for w in layers
        if isinstance(w, keras.layers.Bidirectional)
        for side in ("forward_layer", "backward_layer")
    }
    for rnn in layers:
        if not (isinstance(rnn, keras.layers.RNN) and rnn.stateful and rnn.go_backwards):
            continue
        kind = type(rnn).__name__
        wrapper = wrappers.get(id(rnn))
        if wrapper is not None:
            where = f"the layer '{rnn.name}' of Bidirectional '{wrapper.name}'"
            fix = (
                f"Wrap a stateless RNN, Bidirectional({kind}(..., stateful=False)), which reads "
                "each window both ways on its own, or use a forward-only stateful RNN"
            )
            received = f"Bidirectional '{wrapper.name}' of {kind}(stateful=True)"
        else:
            where = f"the layer '{rnn.name}'"
            fix = (
                "Use go_backwards=False, or stateful=False to read each window backwards on its own"
            )
            received = f"{kind} '{rnn.name}' with stateful=True, go_backwards=True"
        raise ValueError(
            f"A stateful RNN must run forwards in time on seqbatch batches: {where} runs "
            "backwards, so it would start the last step of each window from the state that "
            "the window before left at its first step, never a continuation of the stream. "
            f"{fix}. Received: {received}"
        )


def _sync_jax_state(model: keras.layers.Layer) -> None:
    # Under JAX, fit() and evaluate() keep the variables' values in the trainer's state: put
    # them back into the variables before reading or writing any.
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def _state_variables(model: keras.layers.Layer) -> list[Any]:
    return [v for layer in stateful_rnns(model) for v in keras.tree.flatten(layer.states)]


class _CarriedState:
    """Lists one RNN state variable among a layer's non-weight state, as a seed's is listed.

    Keras lists ``layer.variables`` (what the JAX trainer passes through every step, and
    returns updated) as the layer's weights plus ``state`` of each entry of
    ``layer._seed_generators``; ``weights``, ``get_weights()`` and saved weights hold the
    weights only. An entry there is carried by the trainer and stays out of the weights.
    """

    def __init__(self, variable: Any) -> None:
        self.state = variable


def _track_states(rnn: keras.layers.RNN) -> None:
    carried = {id(entry.state) for entry in rnn._seed_generators}
    for variable in keras.tree.flatten(rnn.states):
        if id(variable) not in carried:
            rnn._seed_generators.append(_CarriedState(variable))


def _inner_loop_from_a_copy(
    self: keras.layers.RNN, sequences: Any, initial_state: Any, mask: Any, training: bool = False
) -> Any:
    # The fused LSTM and GRU paths start from the state variable's own tensor, which the
    # layer then overwrites in place: autograd needs the value it started from.
    fresh = keras.tree.map_structure(ops.copy, initial_state)
    return type(self).inner_loop(self, sequences, fresh, mask, training=training)


def _copy_initial_state(rnn: keras.layers.RNN) -> None:
    if "inner_loop" not in vars(rnn):
        rnn.inner_loop = types.MethodType(_inner_loop_from_a_copy, rnn)


def _assign_in_place(rnn: keras.layers.RNN) -> None:
    # Under a mixed precision policy (mixed_float16, mixed_bfloat16) a torch Variable read
    # inside a layer's autocast scope is a cast copy, and RNN.call assigns the last state into
    # that copy: the state variable stays zero. RNN.call casts the states it reads to the
    # compute dtype itself, so they need no autocast.
    for variable in keras.tree.flatten(rnn.states):
        variable._autocast = False


def carry_states(model: keras.layers.Layer) -> None:
    """Make every stateful RNN of ``model`` carry its state on the running Keras backend.

    Keras 3.15 keeps a stateful RNN's state on TensorFlow only. On JAX the state variables
    are created untracked and the trainer passes only tracked variables through ``fit()``,
    ``evaluate()``, ``predict()`` and ``train_on_batch()``, so the state stays zero: here
    they are listed among the layer's non-weight state (beside random seeds), which the
    trainer carries, and stay out of ``weights``, ``get_weights()`` and saved weights. On
    torch a stateful ``LSTM`` or ``GRU`` fails in backward ("modified by an inplace
    operation"): here each call starts from a copy of the state; and under a mixed precision
    policy (``mixed_float16``, ``mixed_bfloat16``) the state stays zero: here the state
    variables are exempted from autocasting, which writes the state into a cast copy. Nothing
    changes on TensorFlow. Calling it again does nothing more.

    A stateful RNN that runs backwards (``go_backwards=True``, or inside ``Bidirectional``)
    is refused: its state would never continue a stream (``check_runs_forwards``).

    Every entry point of ``seqbatch.keras`` calls it: :class:`StreamSequence` in ``fit()``,
    ``evaluate()`` and ``predict()``, :class:`StatefulTraining`, :func:`reset_states`,
    :class:`StreamReset` and :func:`with_batch_size`.

    Args:
        model: a model or a layer.

    Raises:
        TypeError: ``model`` is not a Keras layer or model.
        ValueError: a stateful RNN of ``model`` runs backwards.
    """
    check_runs_forwards(model)
    backend = keras.backend.backend()
    if backend not in ("jax", "torch"):
        return
    _sync_jax_state(model)
    for rnn in stateful_rnns(model):
        if backend == "jax":
            _track_states(rnn)
        else:
            _copy_initial_state(rnn)
            _assign_in_place(rnn)


def reset_states(model: keras.layers.Layer) -> None:
    """Zero the state of every stateful RNN in ``model``: Keras 2's ``model.reset_states()``.

    Reaches RNNs inside nested models and wrappers such as :class:`StreamReset`. Under the JAX backend the trainer's state is synced first, so the
    function also works inside a callback. It also makes the model carry its states on
    every backend (:func:`carry_states`): start a loop of ``train_on_batch`` with it.

    Args:
        model: a model or a layer.

    Raises:
        TypeError: ``model`` is not a Keras layer or model.
        ValueError: a stateful RNN of ``model`` runs backwards (:func:`carry_states`).

    Examples:
        >>> import numpy as np, keras, seqbatch
        >>> inner = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ... ])
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)), inner,
        ...     keras.layers.GRU(4, stateful=True),
        ... ])
        >>> seqbatch.keras.reset_states(model)
        >>> _ = model.predict(np.ones((2, 3, 1)), verbose=0)
        >>> [bool(np.abs(keras.ops.convert_to_numpy(s)).max() > 0)
        ...  for layer in seqbatch.keras.stateful_rnns(model) for s in layer.states]
        [True, True, True]
        >>> seqbatch.keras.reset_states(model)
        >>> [float(np.abs(keras.ops.convert_to_numpy(s)).max())
        ...  for layer in seqbatch.keras.stateful_rnns(model) for s in layer.states]
        [0.0, 0.0, 0.0]
    """
    carry_states(model)
    # Not RNN.reset_state(): it fails on the nested states of an RNN of a list of cells.
    for variable in _state_variables(model):
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
