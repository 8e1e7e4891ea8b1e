"""Layers for stateful models fed by seqbatch: per-stream and per-step resets inside the graph."""

from __future__ import annotations

import inspect
from typing import Any

import keras
from keras import ops

from seqbatch.keras.states import carry_states


def _scaled(state: Any, keep: Any) -> Any:
    """``state`` ``(B, *units)`` times ``keep`` ``(B,)``, row by row."""
    return state * ops.reshape(keep, (-1,) + (1,) * (len(state.shape) - 1))


def _fits(shape: tuple[Any, ...], expected: tuple[Any, ...]) -> bool:
    """Whether ``shape`` is ``expected``, a dimension unknown on either side matching any."""
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected, strict=True)
    )


class _StepReset(keras.layers.Layer):
    """An RNN cell that zeroes a row's state before each step whose reset flag is set.

    It reads its input as the wrapped cell's input with ``1 - flag`` appended as the last
    feature, so that ``keras.layers.RNN`` carries the flags through its loop with the data
    on every backend. The weights are the wrapped cell's: this cell owns none.
    """

    def __init__(self, cell: keras.layers.Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cell = cell
        self.state_size = cell.state_size
        if hasattr(cell, "output_size"):
            self.output_size = cell.output_size
        self._cell_takes_training = "training" in inspect.signature(cell.call).parameters

    def build(self, input_shape: Any) -> None:
        if not self.cell.built:
            self.cell.build((*input_shape[:-1], input_shape[-1] - 1))

    def call(self, inputs: Any, states: Any, training: bool | None = None) -> Any:
        x = inputs[..., :-1]
        # ``1 - flag`` fills the last feature of every position of the step's input.
        if len(inputs.shape) == 2:  # (B, features + 1): the (B, 1) column scales (B, units)
            keep = inputs[:, -1:]
            states = keras.tree.map_structure(
                lambda s: s * keep if len(s.shape) == 2 else _scaled(s, keep[:, 0]), states
            )
        else:  # take one position's
            keep = ops.reshape(inputs[..., -1:], (ops.shape(inputs)[0], -1))[:, 0]
            states = keras.tree.map_structure(lambda s: _scaled(s, keep), states)
        kwargs = {"training": training} if self._cell_takes_training else {}
        return self.cell(x, states, **kwargs)


def _torch_fused(layer: Any, x: Any, reset: Any, training: bool | None) -> Any:
    """``(output, final states)`` of ``layer`` over the window through torch's fused kernel,
    with the state zeroed at the flagged steps, or None where that would not be exact.

    On the torch backend Keras runs eagerly, so the layer's own weights may run in
    ``torch.lstm`` or ``torch.gru`` over the whole window at once, with a closing step
    before each flagged step that zeroes the state through the gates
    (``seqbatch.torch``'s ``run_window_closing``), or, for a ``SimpleRNN`` (whose tanh no
    gate can zero), the window cut into its runs (the stretches between two flagged steps),
    each run whole in ``torch.rnn_tanh`` (``run_window``). Every step of the window runs,
    padding included, as in the cell loop, so the outputs, the final states and the
    gradients are the loop's. Only for a plain
    ``LSTM``, ``GRU`` (``reset_after=True``) or ``SimpleRNN`` with the activations, bias
    and float32 computation that the kernel reproduces, and no dropout in training; not
    while torch traces or compiles (the cuts depend on the flags' values).
    """
    if keras.backend.backend() != "torch":
        return None
    kind = _fused_kind(layer, training)
    if kind is None:
        return None
    import torch

    if (
        not isinstance(x, torch.Tensor)
        or not isinstance(reset, torch.Tensor)
        or x.device.type == "meta"
        or x.ndim != 3
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
    ):
        return None
    flags = reset.detach().to("cpu")
    starts = flags != 0
    if not bool(torch.all((flags == 0) | (flags == 1))):
        return None  # a flag other than 0 or 1 scales the state: only the loop does that
    from seqbatch.torch.runs import run_window, run_window_closing

    cell = layer.cell
    kernel, recurrent, bias = (
        ops.convert_to_tensor(w) for w in (cell.kernel, cell.recurrent_kernel, cell.bias)
    )
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    if kind == "gru":
        # Keras's gates z, r, h against torch's r, z, n; bias rows: input, recurrent.
        def reorder(w: Any) -> Any:
            z, r, h = torch.chunk(w, 3, dim=-1)
            return torch.cat([r, z, h], dim=-1)

        kernel, recurrent = reorder(kernel), reorder(recurrent)
        bias_ih, bias_hh = reorder(bias[0]), reorder(bias[1])
    else:
        # LSTM: the gates i, f, c, o of both; one bias, added on the input side.
        bias_ih, bias_hh = bias, torch.zeros_like(bias)
    params = [kernel.T.contiguous(), recurrent.T.contiguous(), bias_ih, bias_hh]
    step: Any = {"lstm": torch.lstm, "gru": torch.gru, "rnn": torch.rnn_tanh}[kind]
    train = torch.is_grad_enabled()

    def call(inputs: Any, state: Any) -> Any:
        out, *new = step(inputs, state, params, True, 1, 0.0, train, False, True)
        return out, tuple(new) if kind == "lstm" else new[0]

    # Copies, as in the loop: the assignment of the final states writes into the variables.
    states = [ops.copy(s)[None] for s in layer.states]
    state = tuple(states) if kind == "lstm" else states[0]
    B, W = x.shape[0], x.shape[1]
    units = recurrent.shape[1] // gates
    lengths = torch.full((B,), W, dtype=torch.long)
    if kind == "rnn":  # tanh: no gate zeroes its state, so each run is a call of its own
        outputs, final = run_window(call, x.to(kernel.dtype), starts, lengths, state, units)
    else:
        outputs, final = run_window_closing(
            kind, [params], x.to(kernel.dtype), starts, lengths, state, units, train=train
        )
    final = [t[0] for t in (final if kind == "lstm" else (final,))]
    return (outputs if layer.return_sequences else outputs[:, -1]), final


def _fused_kind(layer: Any, training: bool | None) -> str | None:
    """``"lstm"``, ``"gru"`` or ``"rnn"``: the torch kernel that computes ``layer`` exactly."""
    kinds = {
        keras.layers.LSTM: ("lstm", keras.layers.LSTMCell),
        keras.layers.GRU: ("gru", keras.layers.GRUCell),
        keras.layers.SimpleRNN: ("rnn", keras.layers.SimpleRNNCell),
    }
    if type(layer) not in kinds:
        return None
    kind, cell_type = kinds[type(layer)]
    cell = layer.cell
    exact = (
        type(cell) is cell_type
        and not layer.unroll
        and not layer.go_backwards
        and cell.use_bias
        and cell.activation is keras.activations.tanh
        and (kind == "rnn" or cell.recurrent_activation is keras.activations.sigmoid)
        and (kind != "gru" or cell.reset_after)
        and not (training and (cell.dropout > 0 or cell.recurrent_dropout > 0))
        and layer.compute_dtype == "float32"
        and layer.variable_dtype == "float32"
    )
    return kind if exact else None


@keras.saving.register_keras_serializable(package="seqbatch")
class StreamReset(keras.layers.Wrapper):
    """A stateful RNN that zeroes the state of exactly the streams, or steps, flagged in ``reset``.

    Called on ``[x, reset]``, with ``x`` of shape ``(B, W, *features)``:

    * ``reset`` of shape ``(B,)`` (bool or 0/1): the wrapped layer runs from the initial
      state ``s * (1 - reset)`` for each of its states ``s``: the carried state for the
      streams that continue, zeros for the streams that start a new series. The
      multiplication happens in the graph, so it holds with ``steps_per_execution > 1`` and
      keeps the fused (cuDNN) LSTM path.
    * ``reset`` of shape ``(B, W)``: packed windows, where a series may start at any step.
      The state of row ``i`` is zeroed right before step ``t`` wherever ``reset[i, t]`` is
      set, inside the recurrence, from the layer's state variables, and its last state is
      written back to them, as a stateful layer does. On the torch backend a plain
      ``LSTM``, ``GRU`` (``reset_after=True``) or ``SimpleRNN`` with its default
      activations, a bias, float32 computation and no dropout in training runs through
      torch's fused kernel, with the same outputs, states and gradients: an ``LSTM`` or
      ``GRU`` over the whole window in one call, a closing step (an input that shuts its
      gates, zeroing the state) before each flagged step; a ``SimpleRNN`` cut at its
      flagged steps into runs that each start from zeros (the first from the carried
      state). Every other layer, and every layer on TensorFlow and JAX, runs its cell
      step by step (in a ``keras.layers.RNN`` of it): on a CPU, TensorFlow's and JAX's
      ``LSTM`` run that same loop (see the backends page).

    Feed it with ``StreamSequence(batches, reset_input=True)`` or the tf.data adapter's
    ``reset_input=True``. The weights and the state variables stay the wrapped layer's.

    Padding only follows a series' last step, and a reset comes before the stream holds data
    again, so padding never reaches the state of data. It does reach the state that a
    stream holds after a pass: for the state at a series' last step (to forecast from it),
    use ``with_batch_size(model, 1, series=[j], batches=batches)``.

    Args:
        layer: a stateful RNN layer that runs forwards (``LSTM(..., stateful=True)``,
            ``GRU``, ``SimpleRNN``, ``ConvLSTM1D``, ``keras.layers.RNN`` of a cell or of a
            list of cells).
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ...).

    Raises:
        ValueError: ``layer`` is not a stateful RNN; or, when the model is built, ``reset``
            is neither ``(B,)`` nor ``(B, W)``, or ``layer`` runs backwards
            (``Bidirectional``, ``go_backwards=True``): with ``(B, W)`` flags its state would
            cross from one series into the one before it, and with ``(B,)`` flags it would
            never continue a stream.

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

        Packed windows: a new series starts at step 2 of stream 0 and runs from zero state,
        as if it were alone:

        >>> x_in = keras.Input(batch_shape=(1, 4, 1))
        >>> reset_in = keras.Input(batch_shape=(1, 4))
        >>> rnn = keras.layers.GRU(2, stateful=True, return_sequences=True)
        >>> out = seqbatch.keras.StreamReset(rnn)([x_in, reset_in])
        >>> packed = keras.Model([x_in, reset_in], out)
        >>> x = np.arange(1.0, 5.0).reshape(1, 4, 1) / 4
        >>> out = packed.predict([x, np.array([[1, 0, 1, 0]])], verbose=0)
        >>> alone = keras.layers.GRU(2, return_sequences=True)
        >>> alone.build((None, None, 1))
        >>> alone.set_weights(rnn.get_weights())
        >>> expected = keras.ops.convert_to_numpy(alone(x[:, 2:]))
        >>> bool(np.allclose(out[:, 2:], expected, atol=1e-6))
        True
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if not getattr(layer, "stateful", False) or not hasattr(layer, "states"):
            raise ValueError(
                f"`layer` must be a stateful RNN layer (stateful=True). Received: layer={layer!r}"
            )
        super().__init__(layer, **kwargs)
        self._steps: keras.layers.RNN | None = None

    def build(self, input_shape: Any) -> None:
        x_shape, reset_shape = input_shape
        if not self.layer.built:
            self.layer.build(x_shape)
        reset_shape = tuple(reset_shape)
        if not any(_fits(reset_shape, tuple(x_shape[:n])) for n in (1, 2)):
            raise ValueError(
                "`reset` must have shape (batch_size,), one flag per stream, or "
                "(batch_size, sequence_length), one flag per step, for x of shape "
                f"{tuple(x_shape)}. Received: reset of shape {reset_shape}"
            )
        if len(reset_shape) == 2:
            if not isinstance(self.layer, keras.layers.RNN) or self.layer.go_backwards:
                raise ValueError(
                    "`layer` must run forwards in time to take per-step reset flags (shape "
                    "(batch_size, sequence_length)): a backward pass would carry the state "
                    "of one series into the series before it. Pass (batch_size,) flags, or "
                    f"use a forward RNN. Received: layer={self.layer!r}"
                )
            steps = keras.layers.RNN(
                _StepReset(self.layer.cell, dtype=self.layer.dtype_policy),
                return_sequences=self.layer.return_sequences,
                return_state=True,
                unroll=self.layer.unroll,
                dtype=self.layer.dtype_policy,
            )
            # Kept out of Keras's tracking: it owns no weights (they are the wrapped cell's),
            # and every listing of sublayers (saving, with_batch_size, stateful_rnns) must
            # find the same layers as in a StreamReset rebuilt from its config.
            object.__setattr__(self, "_steps", steps)
        carry_states(self.layer)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x, reset = inputs
        if self._steps is not None:
            return self._call_per_step(x, reset, training)
        states = list(self.layer.states)
        keep = 1 - ops.cast(ops.reshape(reset, (-1,)), keras.tree.flatten(states)[0].dtype)
        return self.layer(
            x,
            initial_state=keras.tree.map_structure(lambda s: _scaled(s, keep), states),
            training=training,
        )

    def _call_per_step(self, x: Any, reset: Any, training: bool | None) -> Any:
        assert self._steps is not None
        layer = self.layer
        fused = _torch_fused(layer, x, reset, training)
        if fused is not None:
            output, final = fused
        else:
            output, final = self._cell_loop(x, reset, training)
        for variable, value in zip(
            keras.tree.flatten(layer.states), keras.tree.flatten(final), strict=True
        ):
            variable.assign(value)
        return (output, *final) if layer.return_state else output

    def _cell_loop(self, x: Any, reset: Any, training: bool | None) -> tuple[Any, list[Any]]:
        """The wrapped cell step by step, in a ``keras.layers.RNN``: every backend, every cell."""
        assert self._steps is not None
        layer = self.layer
        # Every position of a step's input carries ``1 - flag`` as one more feature (the
        # factor of the state before the step, computed once for the window, not per step).
        flags = ops.reshape(
            1 - ops.cast(reset, x.dtype), (*ops.shape(reset), *[1] * (len(x.shape) - 2))
        )
        flags = ops.broadcast_to(flags, (*ops.shape(x)[:-1], 1))
        # A copy, not the variables' own tensors: on torch those are the storage that the
        # assignment below overwrites in place, while autograd still holds them for backward
        # wherever the flags multiplying them depend on a trained input (a stacked layer).
        states = keras.tree.map_structure(ops.copy, list(layer.states))
        # Dropout masks are drawn once per call, before the loop, as keras.layers.RNN does
        # for its own cell (a draw inside the loop would change the mask at every step).
        layer._maybe_config_dropout_masks(layer.cell, x[:, 0], states)
        output, *final = self._steps(
            ops.concatenate([x, flags], axis=-1), initial_state=states, training=training
        )
        layer._maybe_reset_dropout_masks(layer.cell)
        return output, final

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape[0])
