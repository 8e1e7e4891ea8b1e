"""A trained stateful model for another batch size, sharing its weights."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from seqbatch import _checks
from seqbatch.batcher import StreamBatcher
from seqbatch.ends import SeriesEnd, series_end, stream_end
from seqbatch.keras.states import (
    _state_variables,
    _sync_jax_state,
    carry_states,
    reset_states,
    stateful_rnns,
)


def with_batch_size(
    model: keras.Model,
    batch_size: int,
    streams: Sequence[int] | np.ndarray | None = None,
    *,
    series: Sequence[int] | np.ndarray | None = None,
    batches: StreamBatcher | None = None,
) -> keras.Model:
    """The same model for another batch size, sharing its weights: e.g. one stream at a time.

    A stateful model's batch size is fixed by its ``keras.Input(batch_shape=...)``. This
    builds a second model whose inputs take ``batch_size`` rows, and whose layers share the
    weight variables of ``model``: layers without a stateful RNN are the same layer objects,
    and every stateful RNN is a new layer around the same cell (the cell holds the
    weights), with its own state variables for the new batch size. Training ``model``
    later changes the new model too; the weights are never copied.

    The new states start at zero, or from chosen states, row ``r`` of the new model going on
    from:

    * ``series=[j, ...]`` and ``batches``: the state of series ``series[r]`` at its last
      step in the current epoch of ``batches`` (:meth:`~seqbatch.StreamBatcher.series_end`
      says where that is), as the model would carry it there from zero state. It is
      computed here, by running the steps of the stream from where its state last started
      from zero up to that step, window by window, through a copy of the model of one row
      (the same weights): padding, idle windows and the series that follow never enter it.
      No pass over the batches is needed before.
    * ``streams=[i, ...]`` and ``batches``: the same for the last series of stream
      ``streams[r]``, at that stream's last real step.
    * ``streams=[i, ...]`` alone: a copy of stream ``streams[r]``'s state as ``model``
      holds it now, e.g. where training left it (``streams=[31]``: continue the last stream
      of 32). That state has run through every window the model ran since, padding and idle
      windows included, which the model cannot tell from data: a ``UserWarning`` says so.
      Pass ``batches`` to get the state at the stream's last real step.

    Args:
        model: a Functional or Sequential model built with a batch shape; nested models,
            ``Bidirectional`` and :class:`StreamReset` are handled.
        batch_size: the batch size of the new model.
        streams: ``batch_size`` row indices into ``model``'s batch (repeats allowed; a list
            or an integer numpy array), whose states the new rows start from; None starts
            from zeros.
        series: ``batch_size`` series indices (repeats allowed) whose states at their last
            step the new rows start from; needs ``batches``. Not with ``streams``.
        batches: the batcher whose current epoch the states are read from, at the epoch
            (and shard) the model ran on, with its batch size; for ``series``, or to make
            ``streams`` exact. Its inputs are fed in the order the adapters give them: ``x``,
            then the reset flags of :class:`StreamReset` if the model takes a second input.

    Returns:
        A model with the same architecture and weights, taking ``batch_size`` rows.

    Raises:
        TypeError: ``batch_size``, a stream or a series is not an integer; ``batches`` is
            not a ``StreamBatcher``.
        ValueError: ``batch_size < 1``; ``model`` is not a Functional or Sequential model
            with known inputs; a layer around a stateful RNN holds weights outside the
            RNN's cell, which could not be shared; ``streams`` or ``series`` does not hold
            ``batch_size`` rows of the batch, or series of the data; both are given, or
            ``series`` without ``batches``; ``batches`` has another batch size, or a series
            has no step in its current epoch; the model takes inputs other than ``x`` and
            reset flags, or cannot take windows shorter than ``sequence_length``.

    Warns:
        UserWarning: ``streams`` without ``batches``: the copied states are those after
            every window the model ran, padding and idle windows included.

    Examples:
        Run the second stream of a 2-stream model on its own:

        >>> import numpy as np, keras, seqbatch
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> one = seqbatch.keras.with_batch_size(model, 1)
        >>> one.input_shape
        (1, 3, 1)
        >>> x = np.arange(12.0).reshape(2, 6, 1) / 12
        >>> both = [model.predict(x[:, :3], verbose=0), model.predict(x[:, 3:], verbose=0)]
        >>> alone = [one.predict(x[1:, :3], verbose=0), one.predict(x[1:, 3:], verbose=0)]
        >>> all(np.allclose(b[1:], a, atol=1e-6) for b, a in zip(both, alone))
        True
        >>> one.weights[0] is model.weights[0]
        True

        Continue stream 1 from the state the first windows left it in:

        >>> seqbatch.keras.reset_states(model)
        >>> _ = model.predict(x[:, :3], verbose=0)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     go_on = seqbatch.keras.with_batch_size(model, 1, streams=[1])
        >>> np.allclose(go_on.predict(x[1:, 3:], verbose=0), both[1][1:], atol=1e-6)
        True
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        `streams` without `batches` copies the states that the streams hold now...

        Series 1 of three ends with padding after it; its state is the state at its last
        step, the same as the state of series 1 run alone:

        >>> data = [np.linspace(0, 1, n, dtype="float32")[:, None] for n in (8, 4, 3)]
        >>> batches = seqbatch.StreamBatcher(data, None, batch_size=2, sequence_length=3,
        ...                                  remainder="pad")
        >>> batches.series_end(1).step  # two steps of padding follow in its window
        0
        >>> one = seqbatch.keras.with_batch_size(model, 1, series=[1], batches=batches)
        >>> seqbatch.keras.reset_states(go_on)
        >>> _ = go_on.predict(data[1][None, :3], verbose=0)
        >>> _ = go_on.predict(data[1][None, 3:], verbose=0)
        >>> state = lambda m: keras.ops.convert_to_numpy(seqbatch.keras.stateful_rnns(m)[0].states[0])
        >>> bool(np.allclose(state(one), state(go_on), atol=1e-6))
        True
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    if batches is not None and not isinstance(batches, StreamBatcher):
        raise TypeError(
            "`batches` must be a seqbatch.StreamBatcher, the batcher whose epoch the states "
            f"are read from. Received: batches of type {type(batches).__name__}"
        )
    ends: list[SeriesEnd] | None = None
    rows = None
    if series is not None:
        ends = _series_ends(series, streams, batches, batch_size)
    elif streams is not None and batches is not None:
        ends = _stream_ends(streams, batches, batch_size)
    elif streams is not None:
        rows = _rows(streams, batch_size, model)
        warnings.warn(
            "`streams` without `batches` copies the states that the streams hold now, after "
            "every window the model ran: where a stream's last series ended before its last "
            "window (padding, idle windows after it), its state ran through those zeros too. "
            "Pass batches=<the StreamBatcher of that pass> to start from each stream's state "
            "at its last real step, or series=[j] and batches= for the state of series j.",
            UserWarning,
            stacklevel=2,
        )
    new_model = _clone(model, batch_size)
    if rows is not None:
        _copy_states(model, new_model, rows)
    if ends is not None:
        assert batches is not None
        replayed = _replay(model, batches, ends)
        for variable, values in zip(_state_variables(new_model), replayed, strict=True):
            variable.assign(values)
    return new_model


def _clone(model: keras.Model, batch_size: int, *, open_time: bool = False) -> keras.Model:
    """``model`` for ``batch_size`` rows, sharing its weights; any number of steps if
    ``open_time`` (the second axis of every input that has one becomes ``None``)."""
    if isinstance(model, keras.Sequential):
        model_inputs = model.inputs[0] if model.inputs else None
    else:
        model_inputs = getattr(model, "input", None) if isinstance(model, keras.Model) else None
    if model_inputs is None:
        raise ValueError(
            "`model` must be a Functional or Sequential keras.Model built from "
            "keras.Input(batch_shape=...). Received: model of type "
            f"{type(model).__name__} without known inputs"
        )

    def shape(t: Any) -> tuple[Any, ...]:
        rest = tuple(t.shape[1:])
        return (batch_size, None, *rest[1:]) if open_time and rest else (batch_size, *rest)

    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=shape(t), dtype=t.dtype, name=getattr(t, "name", None)),
        model_inputs,
    )

    def copy(layer: keras.layers.Layer) -> keras.layers.Layer:
        if not stateful_rnns(layer):
            return layer
        if isinstance(layer, keras.Model):
            return _clone(layer, batch_size, open_time=open_time)
        # Rebuilt from a config without build state, the new layer and the RNNs inside it
        # build for the new batch size; each RNN first gets the trained cell.
        new = layer.__class__.from_config(_without_build_state(layer.get_config()))
        for old_rnn, new_rnn in zip(_flatten(layer), _flatten(new), strict=True):
            if isinstance(old_rnn, keras.layers.RNN):
                new_rnn._tracker.untrack(new_rnn.cell)
                new_rnn.cell = old_rnn.cell
        return new

    new_model = keras.models.clone_model(model, input_tensors=inputs, clone_function=copy)
    own = {id(v) for v in model.weights}
    unshared = [v.path for v in new_model.weights if id(v) not in own]
    if unshared:
        raise ValueError(
            "Every weight of `model` outside an RNN cell must sit in a layer without a "
            "stateful RNN, so that it can be shared. Received: a model whose copy for "
            f"batch_size={batch_size} would have new weights {unshared}"
        )
    for carried in (model, new_model):
        carry_states(carried)
    return new_model


def _indices(name: str, values: Any) -> list[int]:
    """``values``, a sequence of integers or a 1-D integer numpy array, as a list of ints."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "iu":
        return [int(v) for v in values]
    if isinstance(values, Sequence) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values
    ):
        return [int(v) for v in values]
    what = "rows of the model's batch" if name == "streams" else "series of the data"
    raise TypeError(
        f"`{name}` must be a sequence of integers, the {what} whose states the new rows "
        f"start from. Received: {name}={values!r} (give a list, a tuple or a 1-D integer "
        "numpy array)"
    )


def _check_count(name: str, given: list[Any], batch_size: int, of: str) -> None:
    if len(given) != batch_size:
        raise ValueError(
            f"`{name}` must hold batch_size={batch_size} entries of the {of}, one per row of "
            f"the new model. Received: {len(given)} {name}"
        )


def _rows(streams: Any, batch_size: int, model: keras.Model) -> np.ndarray:
    """``streams`` as row indices, checked against both batch sizes."""
    given = _indices("streams", streams)
    rnns = stateful_rnns(model)
    old = keras.tree.flatten(rnns[0].states)[0].shape[0] if rnns else None
    if len(given) != batch_size or (old is not None and not all(0 <= i < old for i in given)):
        raise ValueError(
            f"`streams` must hold batch_size={batch_size} rows of the model's batch of {old} "
            f"streams, one per row of the new model. Received: streams={given}"
        )
    return np.asarray(given, dtype=np.int64)


def _series_ends(
    series: Any, streams: Any, batches: StreamBatcher | None, batch_size: int
) -> list[SeriesEnd]:
    if streams is not None or batches is None:
        raise ValueError(
            "`series` needs `batches` (the batcher whose epoch says where each series ends) "
            "and no `streams`: each row starts from one series' state. Received: "
            f"series={series!r} with streams={streams!r}, batches={batches!r}"
        )
    given = _indices("series", series)
    _check_count("series", given, batch_size, f"{batches.n_series} series")
    return [series_end(batches, j) for j in given]


def _stream_ends(streams: Any, batches: StreamBatcher, batch_size: int) -> list[SeriesEnd]:
    given = _indices("streams", streams)
    B = batches.batch_size
    if len(given) != batch_size or not all(0 <= i < B for i in given):
        raise ValueError(
            f"`streams` must hold batch_size={batch_size} rows of the batches' {B} streams, "
            f"one per row of the new model. Received: streams={given}"
        )
    return [stream_end(batches, i) for i in given]


def _run_of(batches: StreamBatcher, end: SeriesEnd) -> Iterator[np.ndarray]:
    """The steps of ``end``'s stream from where its state started from zero to ``end``, by window."""
    W, g = batches.sequence_length, batches.streams.start + end.stream
    for k in range(end.first_batch, end.batch + 1):
        if batches.packed:
            x = batches[k].x[end.stream]
        else:
            # One row read, not the whole batch.
            x = batches.batch(batches.plan.window(k, slice(g, g + 1))).x[0]
        lo = end.first_step if k == end.first_batch else 0
        yield x[lo : end.step + 1 if k == end.batch else W]


def _replay(model: keras.Model, batches: StreamBatcher, ends: list[SeriesEnd]) -> list[Any]:
    """The state of every RNN state variable after each run of ``ends``: a row per end."""
    try:
        one = _clone(model, 1, open_time=True)
    except Exception as error:
        raise ValueError(
            "`model` must take windows of any number of steps (a second input axis that "
            "can be None) for its states to be replayed up to a series' last step. Received: "
            f"a model whose copy with an open time axis fails: {error}"
        ) from error
    if len(one.inputs) > 2:
        raise ValueError(
            "`model` must take x, or x and the reset flags of StreamReset (the inputs that "
            "the seqbatch adapters give), for its states to be replayed. Received: a model "
            f"of {len(one.inputs)} inputs"
        )
    rows = []
    for end in ends:
        reset_states(one)
        for x in _run_of(batches, end):
            # The run starts from zero state: no flag is needed after reset_states.
            inputs: list[Any] = [x[None]]
            if len(one.inputs) == 2:
                flags = one.inputs[1]
                inputs.append(np.zeros((1, *x.shape[:1])[: len(flags.shape)], flags.dtype))
            one(inputs if len(inputs) == 2 else inputs[0], training=False)
        rows.append([keras.ops.convert_to_numpy(v) for v in _state_variables(one)])
    return [np.concatenate(parts) for parts in zip(*rows, strict=True)]


def _copy_states(model: keras.Model, new_model: keras.Model, rows: np.ndarray) -> None:
    """Start each stateful RNN of ``new_model`` from ``rows`` of its twin in ``model``."""
    _sync_jax_state(model)
    twin = {id(rnn.cell): rnn for rnn in stateful_rnns(model)}
    for rnn in stateful_rnns(new_model):
        old_states = keras.tree.flatten(twin[id(rnn.cell)].states)
        for new, old in zip(keras.tree.flatten(rnn.states), old_states, strict=True):
            new.assign(keras.ops.convert_to_numpy(old)[rows])


def _flatten(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _without_build_state(config: Any) -> Any:
    """``config`` without the ``build_config`` entries that serialized sublayers carry."""
    if isinstance(config, dict):
        return {k: _without_build_state(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_without_build_state(v) for v in config]
    return config
