"""Layers for stateful models fed by seqbatch: per-stream resets inside the graph."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from seqbatch.keras.states import carry_states


@keras.saving.register_keras_serializable(package="seqbatch")
class StreamReset(keras.layers.Wrapper):
    """A stateful RNN that zeroes the state of exactly the streams flagged in ``reset``.

    Called on ``[x, reset]``, with ``x`` of shape ``(B, W, *features)`` and ``reset`` of
    shape ``(B,)`` (bool or 0/1), it runs the wrapped layer from the initial state
    ``s * (1 - reset)`` for each of its states ``s``: the carried state for the streams that
    continue, zeros for the streams that start a new series. The multiplication happens in
    the graph, so it holds with ``steps_per_execution > 1`` and keeps the fused (cuDNN) LSTM
    path. Feed it with ``StreamSequence(batches, reset_input=True)`` or the tf.data adapter's
    ``reset_input=True``.

    Args:
        layer: a stateful RNN layer (``LSTM(..., stateful=True)``, ``GRU``, ``SimpleRNN``,
            ``keras.layers.RNN``) or a ``Bidirectional`` of one.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Raises:
        ValueError: ``layer`` is not a stateful RNN.

    Examples:
        Stream 0 starts over in the second batch, stream 1 goes on:

        >>> import numpy as np, keras, seqbatch
        >>> x_in = keras.Input(batch_shape=(2, 3, 1))
        >>> reset_in = keras.Input(batch_shape=(2,))
        >>> rnn = keras.layers.SimpleRNN(2, stateful=True, return_sequences=True)
        >>> out = seqbatch.keras.StreamReset(rnn)([x_in, reset_in])
        >>> model = keras.Model([x_in, reset_in], out)
        >>> x = np.ones((2, 3, 1))
        >>> first = model.predict([x, np.array([True, True])], verbose=0)
        >>> second = model.predict([x, np.array([True, False])], verbose=0)
        >>> bool(np.allclose(second[0], first[0])), bool(np.allclose(second[1], first[1]))
        (True, False)
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if not getattr(layer, "stateful", False) or not hasattr(layer, "states"):
            raise ValueError(
                "`layer` must be a stateful RNN layer (stateful=True), or a Bidirectional "
                f"of one. Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)

    def build(self, input_shape: Any) -> None:
        x_shape, _ = input_shape
        if not self.layer.built:
            self.layer.build(x_shape)
        carry_states(self.layer)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x, reset = inputs
        states = list(self.layer.states)
        keep = 1 - ops.cast(ops.reshape(reset, (-1,)), states[0].dtype)

        def masked(state: Any) -> Any:
            return state * ops.reshape(keep, (-1,) + (1,) * (len(state.shape) - 1))

        return self.layer(
            x, initial_state=keras.tree.map_structure(masked, states), training=training
        )

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape[0])
