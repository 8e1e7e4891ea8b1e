"""tf.data adapter: a ``tf.data.Dataset`` of exactly the batches of a :class:`StreamBatcher`.

In-memory data lives in TensorFlow tensors: the dataset walks a table of the epoch's windows,
one row per element, and each batch is one vectorised gather inside the graph. Other sources
(memory-mapped files, ``.npy`` paths, h5py, series joined with ``series_boundary="concat"``)
are read by one ``tf.numpy_function`` call per element, which asks the plan for that batch's
windows and reads only them: nothing the size of an epoch is held. Importing this module
imports TensorFlow; ``import seqbatch`` does not.
"""

from __future__ import annotations

import copy
import functools
import sys
from types import FrameType
from typing import Any

import numpy as np
import tensorflow as tf

from seqbatch import _checks, _weights
from seqbatch.batch import reset_flags
from seqbatch.batcher import StreamBatcher
from seqbatch.plan import Window

__all__ = ["to_dataset"]


def to_dataset(
    batches: StreamBatcher,
    *,
    reset_input: bool = False,
    sample_weight: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of the batches of ``batches``, in the same order, ready for ``fit``.

    Every element has fully static shapes, batch dimension included, and keeps the dtype of
    the data. The dataset is never shuffled and its order is deterministic.

    Elements are tuples whose first item is the model input, as ``fit``, ``evaluate`` and
    ``predict`` unpack them: ``(inputs, y, sample_weight)``, or ``(inputs, y)`` with
    ``sample_weight=False``; ``(inputs,)`` when ``batches`` has no targets (nothing to weight,
    and a 1-tuple, so that Keras never reads ``(x, reset)`` as ``(x, y)``).

    ``inputs`` is ``x`` of shape ``(B, W, *features)``, or with ``reset_input=True`` the pair
    ``(x, reset)`` with ``reset`` of shape ``(B,)``, float32, 1.0 where the stream starts a new
    series: the default dtype of ``keras.Input(batch_shape=(B,))``, and a factor that zeroes
    state in the graph as ``state * (1 - reset)``. Packed batches (``series_boundary="pack"``)
    give ``step_reset`` instead, ``(B, W)``, 1.0 at every step that starts a series, for
    :class:`seqbatch.keras.StreamReset` to reset inside the recurrence. ``y`` is that of :class:`seqbatch.Batch`:
    ``(B, W, *targets)``, or ``(B, *targets)`` with ``return_sequences=False``.
    ``sample_weight`` is 0 on padding and, on real steps, the epoch's weighted slots over its
    real ones (over every stream), so that the loss Keras reports is the mean over real
    steps; it repeats over every target axis but the last, which a Keras loss reduces:
    ``(B, W, *targets[:-1])``, or ``(B, *targets[:-1])``.

    Epochs: without ``shuffle`` every pass over the dataset is the same. With
    ``shuffle=True``, pass ``p`` lays out epoch ``batches.epoch + p``, where pass ``p`` is the
    ``p``-th iterator that reads the dataset (each Keras epoch makes one; so does any loop over
    the dataset, and so does the one-batch probe of the data that Keras makes before training
    under a ``tf.distribute`` strategy, which then starts training at ``batches.epoch + 1``).
    The dataset counts its own passes from the epoch ``batches`` was in when this function
    was called; ``batches`` itself is never changed. In ``fit()`` with
    :class:`seqbatch.keras.StatefulTraining`, epoch ``e`` of ``fit()`` lays out epoch ``e``
    instead, probes or not, so that ``fit(initial_epoch=e)`` resumes exactly. One Python call
    per pass counts the passes.

    ``tf.distribute``: ``strategy.experimental_distribute_dataset`` (what Keras does with a
    dataset under ``strategy.scope()``) cuts each global batch into contiguous row blocks,
    one per replica, so every stream stays on its replica. Build the model with the
    per-replica batch size. On several workers (``MultiWorkerMirroredStrategy``) each worker
    then reads every global batch and keeps its own blocks, by the tf.data auto-shard policy
    ``DATA``, which this dataset sets: with ``OFF``, every worker would train on every block,
    one after the other, trading streams at each step. To read only a worker's own streams,
    use ``strategy.distribute_datasets_from_function`` and pass its ``input_context``:
    pipeline ``input_pipeline_id`` then keeps its own streams
    (``batches.shard(input_pipeline_id, num_input_pipelines)``) and, since the strategy deals
    a pipeline's consecutive elements round-robin to its replicas, yields per-replica batches
    in (batch, replica) order: batch 0 for replica 0, batch 0 for replica 1, ..., batch 1 for
    replica 0, ... With one worker, or one replica per worker, replica ``r`` of the strategy
    gets the same rows either way: streams ``[r * b, (r + 1) * b)`` with
    ``b = batch_size // num_replicas_in_sync``.

    Args:
        batches: the batcher (or a shard of one) whose batches to yield.
        reset_input: give the model ``(x, reset)`` as its input instead of ``x``.
        sample_weight: add ``sample_weight`` to elements that have targets (0 on padding).
        input_context: the ``tf.distribute.InputContext`` that
            ``strategy.distribute_datasets_from_function`` passes; ``batches`` then holds the
            global batch and the dataset yields this pipeline's per-replica batches.

    Returns:
        A ``tf.data.Dataset`` of ``len(batches)`` elements, or ``len(batches) * R`` with an
        ``input_context`` whose pipeline feeds ``R`` replicas, each of ``b`` rows.

    Raises:
        TypeError: ``batches`` is not a :class:`StreamBatcher`, an argument has the wrong
            type, or the data has a dtype TensorFlow lacks.
        ValueError: the number of replicas of ``input_context`` does not divide the batch
            size, or is not a multiple of its number of input pipelines; or packed batches
            whose streams hold several series, with ``reset_input=False``: the model would
            carry each series' state into the next.

    Warns:
        UserWarning: with ``reset_input=False``, when some stream starts a new series after
            the first batch: without the flags, that stream's state would carry one series'
            end into the next series' start (as :class:`seqbatch.keras.StreamSequence` warns).

    Notes:
        Memory. In-memory data is copied once into a TensorFlow buffer (all series end to end
        and a row of zeros that padding reads), when this function is called: later changes
        to the arrays do not reach the dataset. Building it briefly takes one more copy, and
        the epoch's windows are a table of 33 bytes per window (``len(batches) *
        batch_size`` of them), or packed, 16 bytes per window and 24 per series. Where
        TensorFlow serialises the dataset graph (the tf.data service), a buffer over 2 GB
        cannot go: save the data with ``np.save`` and pass the path. Lazy sources (files, memory maps, h5py, joined series) are read one element at
        a time by a ``tf.numpy_function`` that asks the plan for that element's windows: the
        dataset holds no table, and memory stays at a few batches whatever the data's length.
        Data in another byte order than the machine's (``">f4"`` on x86) is given to
        TensorFlow in the machine's order, with the same values.

        Keras ``fit`` on ``strategy.distribute_datasets_from_function``: TensorFlow reports
        the number of elements of one pipeline's dataset as the number of steps, ``R`` times
        too many, so Keras shows ``R * len(batches)`` steps and warns that the input ran out
        of data. Training is right: every batch is used once per epoch, in order.

    Examples:
        One series of 12 steps whose value is its step, 2 streams, windows of 3 steps:

        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(12), batch_size=2, sequence_length=3)
        >>> ds = to_dataset(batches)
        >>> ds.element_spec[0]
        TensorSpec(shape=(2, 3), dtype=tf.int64, name=None)
        >>> [(x.numpy().tolist(), y.numpy().tolist()) for x, y, w in ds]
        [([[0, 1, 2], [3, 4, 5]], [[1, 2, 3], [4, 5, 6]])]

        The reset flags as a second model input:

        >>> (x, reset), y = next(iter(to_dataset(batches, reset_input=True, sample_weight=False)))
        >>> reset.numpy().tolist()
        [1.0, 1.0]

        Packed series give a flag per step: series 2 starts at step 2 of stream 1.

        >>> packed = seqbatch.StreamBatcher(
        ...     [np.arange(6), 100 + np.arange(2), 200 + np.arange(4)], None, batch_size=2,
        ...     sequence_length=3, series_boundary="pack",
        ... )
        >>> ((x, reset),) = next(iter(to_dataset(packed, reset_input=True)))
        >>> x.numpy().tolist(), reset.numpy().tolist()
        ([[0, 1, 2], [100, 101, 200]], [[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])

        Two input pipelines of one replica each: each keeps its own stream.

        >>> context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
        ...                                      num_replicas_in_sync=2)
        >>> [x.numpy().tolist() for x, y, w in to_dataset(batches, input_context=context)]
        [[[3, 4, 5]]]
    """
    if not isinstance(batches, StreamBatcher):
        raise TypeError(
            f"`batches` must be a seqbatch.StreamBatcher. Received: batches={batches!r}"
        )
    reset_input = _checks.boolean("reset_input", reset_input)
    sample_weight = _checks.boolean("sample_weight", sample_weight)
    replicas = 1
    if input_context is not None:
        if not isinstance(input_context, tf.distribute.InputContext):
            raise TypeError(
                "`input_context` must be a tf.distribute.InputContext or None. "
                f"Received: input_context={input_context!r}"
            )
        pipelines = input_context.num_input_pipelines
        in_sync = input_context.num_replicas_in_sync
        if in_sync % pipelines:
            raise ValueError(
                "`input_context` must have a number of replicas that is a multiple of its "
                "number of input pipelines, so that each pipeline feeds whole replicas. "
                f"Received: input_context with num_input_pipelines={pipelines} and "
                f"num_replicas_in_sync={in_sync}"
            )
        if batches.batch_size % in_sync:
            raise ValueError(
                "`input_context` must have a number of replicas that divides the batch size, "
                "so that every replica gets as many streams. Received: input_context with "
                f"num_replicas_in_sync={in_sync} for batch_size={batches.batch_size}"
            )
        replicas = in_sync // pipelines
        batches = batches.shard(input_context.input_pipeline_id, pipelines)
    batches._check_reset_input(reset_input, stacklevel=_first_caller_outside_seqbatch())
    with_weight = sample_weight and batches.target_shape is not None
    paths = {_carried(batches.dtype, "x")}
    if batches.target_dtype is not None:
        paths.add(_carried(batches.target_dtype, "y"))
    reader_type: type[_GraphReader | _NumpyReader] = _NumpyReader
    if batches.in_memory and paths == {"gather"}:
        packed = batches.series_boundary == "pack"
        reader_type = _PackedGraphReader if packed else _GraphReader
    reader = reader_type(batches, replicas, with_weight)

    # Real steps weigh the epoch's slots over its real steps, so that Keras reports the mean
    # over real steps (seqbatch._weights); a loss reduces only the target's last axis, so the
    # weights repeat over the others. Both are the same in every epoch of a batcher.
    step_weight = _weights.real_step_weight(batches)
    extra = tuple(batches.target_shape[:-1]) if batches.target_shape is not None else ()

    epochs = _PassEpochs(batches.epoch)

    def element(*columns: tf.Tensor) -> tuple[Any, ...]:
        x, y, reset, weight = reader.read(*columns)
        inputs = (x, reset) if reset_input else x
        if y is None:
            return (inputs,)
        if weight is None:
            return (inputs, y)
        shape = tuple(weight.shape)
        weight = tf.reshape(weight * step_weight, shape + (1,) * len(extra))
        return (inputs, y, tf.broadcast_to(weight, shape + extra))

    options = tf.data.Options()
    options.deterministic = True
    # A strategy shards a dataset after cutting its global batches into per-replica blocks:
    # DATA then gives each worker its own blocks of every batch (OFF gives it every block).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = (
        reader.passes(epochs)
        .map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .apply(tf.data.experimental.assert_cardinality(len(batches) * replicas))
        .with_options(options)
    )
    # For seqbatch.keras.StatefulTraining: it checks fit()'s model and arguments against the
    # batches, and sets the epoch of each pass to fit()'s.
    dataset.seqbatch_batches = batches
    dataset.seqbatch_epochs = epochs
    return dataset


class _PassEpochs:
    """The epoch that the next pass over a dataset lays out: one more at every pass.

    ``seqbatch.keras.StatefulTraining`` sets ``next`` to ``fit()``'s epoch as each epoch
    begins, so that ``fit(initial_epoch=e)`` lays out epochs ``e, e + 1, ...`` whatever
    passes Keras made before (a probe, an iterator it made and dropped).
    ``seqbatch.keras.BackupAndRestore`` sets ``first_batch`` to start the pass of a resumed
    epoch at the batch that comes next: that pass alone is shorter.
    """

    def __init__(self, first: int) -> None:
        self.next = first
        self.first_batch = 0

    def take(self) -> tuple[int, int]:
        """The epoch and first batch of a new pass; the following pass gets the next epoch."""
        taken = (self.next, self.first_batch)
        self.next, self.first_batch = self.next + 1, 0
        return taken


def _first_caller_outside_seqbatch() -> int:
    """The ``stacklevel`` that makes a warning of :func:`to_dataset` name the user's line.

    ``StreamBatcher.to_tf_dataset`` calls in from seqbatch itself: its frame is skipped.
    """
    level = 2
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("seqbatch."):
        level, frame = level + 1, frame.f_back
    return level


def _epochs(epochs: _PassEpochs, replicas: int) -> tf.data.Dataset:
    """One element per pass over the dataset: the epoch it lays out, and its first element.

    Each iterator over the dataset reads what ``epochs`` gives next (``batches.epoch + p``
    for the ``p``-th pass, unless ``StatefulTraining`` sets it; from batch 0, unless
    ``BackupAndRestore`` resumes the pass): one Python call per pass. Without ``shuffle``
    every epoch has the same layout.
    """

    def next_pass(_: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        taken = tf.numpy_function(
            lambda: np.array(epochs.take(), dtype=np.int64), [], tf.int64, stateful=True
        )
        taken = tf.ensure_shape(taken, (2,))
        return taken[0], taken[1] * replicas

    return tf.data.Dataset.from_tensors(0).map(next_pass)


def _at_epoch(batches: StreamBatcher, epoch: int) -> StreamBatcher:
    """``batches`` laid out as ``epoch``, leaving ``batches`` itself unchanged."""
    other = copy.copy(batches)
    other.set_epoch(epoch)
    return other


def _carried(dtype: np.dtype, name: str) -> str:
    """How tf.data carries data of ``dtype``: ``"gather"`` (in the graph) or ``"numpy"``.

    TensorFlow knows some types of ml_dtypes without a kernel to gather them (int4,
    float8_e4m3fnuz, ...): their in-memory batches are read like files, by numpy. A type that
    tf.data cannot carry at all (float8_e5m2 in TensorFlow 2.21) is refused.
    """
    path = _tf_data_path(_tf_dtype(dtype, name))
    if path is None:
        raise TypeError(
            f"`batches` must hold {name} of a dtype that tf.data can carry. Received: {name} "
            f"of dtype {dtype} (TensorFlow has the type, but its tf.data pipelines fail on "
            "it: cast the data to another dtype)"
        )
    return path


@functools.cache
def _tf_data_path(dtype: tf.DType) -> str | None:
    """``"gather"``, ``"numpy"`` or None: tried once per dtype, on a one-element dataset."""
    zeros = np.zeros(1, dtype.as_numpy_dtype)
    index = tf.constant([0], tf.int64)

    def works(ds: tf.data.Dataset) -> bool:
        try:
            next(iter(ds))
        except tf.errors.OpError:
            return False
        return True

    if works(tf.data.Dataset.from_tensors(tf.constant(zeros)).map(lambda t: tf.gather(t, index))):
        return "gather"
    read = tf.data.Dataset.range(1).map(
        lambda i: tf.ensure_shape(tf.numpy_function(lambda _: zeros, [i], dtype), (1,))
    )
    return "numpy" if works(read) else None


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order, as TensorFlow reads the bytes of an array."""
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def _tf_dtype(dtype: np.dtype, name: str) -> tf.DType:
    try:
        return tf.as_dtype(dtype.newbyteorder("="))
    except TypeError as err:
        raise TypeError(
            f"`batches` must hold {name} of a dtype TensorFlow has. Received: {name} of "
            f"dtype {dtype}"
        ) from err


class _GraphReader:
    """Reads in-memory batches with TensorFlow ops: one gather per batch, no Python.

    Each of x and y is one buffer of all series end to end followed by a row of zeros, which
    padding steps read: a single gather, with no mask to apply afterwards. The windows of an
    epoch come from a table of ``len(batches) * batch_size`` rows of integers, made once
    (or once per pass with ``shuffle``).
    """

    def __init__(self, batches: StreamBatcher, replicas: int, with_weight: bool) -> None:
        self.batches = batches
        self.rows = batches.batch_size // replicas
        self.with_weight = with_weight
        self.width = batches.sequence_length
        self.shift = batches.shift
        self.has_targets = batches.target_shape is not None
        self.return_sequences = batches.return_sequences
        self.x, self.x_offsets = self._flat(batches.sources, batches.dtype)
        self.y, self.y_offsets = self.x, self.x_offsets
        if self.has_targets and batches.target_sources is not batches.sources:
            assert batches.target_dtype is not None
            self.y, self.y_offsets = self._flat(batches.target_sources, batches.target_dtype)

    @staticmethod
    def _flat(sources: list[np.ndarray], dtype: np.dtype) -> tuple[tf.Tensor, np.ndarray]:
        """The buffer, and where each series starts in it (and, last, the row of zeros)."""
        zeros = np.zeros((1, *sources[0].shape[1:]), dtype)
        offsets = np.cumsum([0] + [len(s) for s in sources])
        return tf.constant(_native(np.concatenate([*sources, zeros]))), offsets

    # The columns of an epoch's table: the first `constants` are the same for every element
    # of a pass, each of the others has one row per element.
    dtypes: tuple[tf.DType, ...] = (tf.int64, tf.bool, tf.int64, tf.int64)
    constants = 0

    def table(self, epoch: int) -> tuple[np.ndarray, ...]:
        """Per element: real steps, reset, and the buffer index of its first x and y step."""
        batches = self.batches
        t = _at_epoch(batches, epoch).plan.table()
        # Replica r of batch k holds rows [r*b, (r+1)*b) of the pipeline's batch k, so
        # (batch, replica) order is the row-major reshape of the (batch, stream) table.
        streams = slice(batches.streams.start, batches.streams.stop)
        w = Window(*(a[:, streams].reshape(-1, self.rows) for a in t))
        series = np.maximum(w.series, 0)  # an idle stream (-1) reads only zeros
        x_first = self.x_offsets[series] + w.start
        y_first = self.y_offsets[series] + w.start + self.shift
        return w.length, w.reset, x_first, y_first

    def shapes(self) -> list[tuple[int | None, ...]]:
        """The shapes of the columns of :meth:`table`."""
        return [(len(self.batches) * self.batches.batch_size // self.rows, self.rows)] * 4

    def passes(self, epochs: _PassEpochs) -> tf.data.Dataset:
        """The columns of every element of one pass, each pass laying out its own epoch and
        starting at its first element (batch 0, unless ``BackupAndRestore`` resumes it)."""
        replicas = self.batches.batch_size // self.rows
        if self.batches.shuffle:

            def table(epoch: tf.Tensor, first: tf.Tensor) -> tuple[tf.Tensor, ...]:
                out = tf.numpy_function(lambda e: self.table(int(e)), [epoch], list(self.dtypes))
                shaped = (tf.ensure_shape(t, s) for t, s in zip(out, self.shapes(), strict=True))
                return (*shaped, first)

        else:
            fixed = self.table(self.batches.epoch)

            def table(epoch: tf.Tensor, first: tf.Tensor) -> tuple[tf.Tensor, ...]:
                return (*fixed, first)

        c = self.constants

        def elements(*t: tf.Tensor) -> tf.data.Dataset:
            columns, first = t[:-1], t[-1]
            rows = tf.data.Dataset.from_tensor_slices(columns[c:]).skip(first)
            return rows.map(lambda *row: (*columns[:c], *row)) if c else rows

        return _epochs(epochs, replicas).map(table).flat_map(elements)

    def steps(self, *columns: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Of one element: which steps are real, the reset flags, and where every step of x
        and of y lies in its buffer (anywhere on padding)."""
        length, reset, x_first, y_first = columns
        steps = tf.range(self.width, dtype=tf.int64)
        real = steps < length[:, None]
        return real, tf.cast(reset, tf.float32), x_first[:, None] + steps, y_first[:, None] + steps

    def read(
        self, *columns: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, tf.Tensor | None]:
        real, flags, x_at, y_at = self.steps(*columns)
        x = tf.gather(self.x, tf.where(real, x_at, self.x_offsets[-1]))
        if not self.has_targets:
            return x, None, flags, None
        if not self.return_sequences:
            # The target of the window's last step, where that step is real.
            real, y_at = real[:, -1], y_at[:, -1]
        y = tf.gather(self.y, tf.where(real, y_at, self.y_offsets[-1]))
        return x, y, flags, tf.cast(real, tf.float32) if self.with_weight else None


class _PackedGraphReader(_GraphReader):
    """Reads in-memory packed batches with TensorFlow ops: one search, one gather per batch.

    The segments of the epoch (:meth:`seqbatch.StreamPlan.segments`) lie end to end on a line,
    stream after stream, so that the window of a stream is a run of consecutive positions on
    it. A pass holds the line: where each segment starts on it, and how far each segment's
    steps lie from their place in the x and y buffers (24 bytes per segment); an element
    holds the first position and the real steps of each of its windows (16 bytes per
    window). A batch finds the segment of each of its steps with one sorted search, and
    flags the steps that start a segment.
    """

    dtypes = (tf.int64,) * 5
    constants = 3

    def table(self, epoch: int) -> tuple[np.ndarray, ...]:
        """The line's segment starts and offsets to the buffers; per element, first position
        and real steps of each window."""
        plan = _at_epoch(self.batches, epoch).plan
        seg = plan.segments()
        line = np.concatenate(([0], np.cumsum(seg.length)))
        base = line[np.searchsorted(seg.stream, np.arange(plan.batch_size))]
        held = np.bincount(seg.stream, seg.length, plan.batch_size).astype(np.int64)
        to_x = self.x_offsets[seg.series] + seg.start - line[:-1]
        to_y = self.y_offsets[seg.series] + seg.start + self.shift - line[:-1]
        streams = slice(self.batches.streams.start, self.batches.streams.stop)
        k = np.arange(len(plan))[:, None] * self.width
        first = (base[streams] + k).reshape(-1, self.rows)
        length = np.clip(held[streams] - k, 0, self.width).reshape(-1, self.rows)
        return line, to_x, to_y, length, first

    def shapes(self) -> list[tuple[int | None, ...]]:
        return [(None,)] * 3 + super().shapes()[:2]

    def steps(self, *columns: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        line, to_x, to_y, length, first = columns
        steps = tf.range(self.width, dtype=tf.int64)
        at = first[:, None] + steps
        real = steps < length[:, None]
        found = tf.searchsorted(line, tf.reshape(at, [-1]), side="right", out_type=tf.int64)
        # A padding step may lie past the line's end: it reads the last segment, masked.
        last = tf.size(to_x, out_type=tf.int64) - 1
        seg = tf.reshape(tf.minimum(found - 1, last), tf.shape(at))
        flags = tf.cast(real & (at == tf.gather(line, seg)), tf.float32)
        return real, flags, at + tf.gather(to_x, seg), at + tf.gather(to_y, seg)


class _NumpyReader:
    """Reads batches from lazy sources: one ``tf.numpy_function`` call per element.

    Element ``j`` of a pass is replica ``j % R`` of batch ``j // R`` of that pass's epoch:
    the call asks the plan for those windows alone and reads them, so that memory holds a
    few batches at a time, whatever the length of the data or of the epoch.
    """

    def __init__(self, batches: StreamBatcher, replicas: int, with_weight: bool) -> None:
        self.batches = batches
        self.replicas = replicas
        self.with_weight = with_weight
        rows, W = batches.batch_size // replicas, batches.sequence_length
        specs = [(_tf_dtype(batches.dtype, "x"), (rows, W, *batches.feature_shape))]
        self.has_targets = batches.target_shape is not None
        if batches.target_shape is not None:
            assert batches.target_dtype is not None
            steps = (W,) if batches.return_sequences else ()
            specs.append(
                (_tf_dtype(batches.target_dtype, "y"), (rows, *steps, *batches.target_shape))
            )
        packed = batches.series_boundary == "pack"
        specs.append((tf.float32, (rows, W) if packed else (rows,)))
        if with_weight:
            specs.append((tf.float32, (rows, W) if batches.return_sequences else (rows,)))
        self.specs = specs

    @functools.lru_cache(maxsize=2)  # noqa: B019 - one reader per dataset, two epochs at most
    def shards(self, epoch: int, seed: int) -> list[StreamBatcher]:
        """The batchers of each replica's rows in ``epoch``, made once per epoch and seed.

        The seed is part of the key: ``load_state_dict`` may give the batcher the seed of a
        checkpoint after a pass (Keras's probe) has read an epoch with the old one.
        """
        at_epoch = _at_epoch(self.batches, epoch)
        return [at_epoch.shard(r, self.replicas) for r in range(self.replicas)]

    def passes(self, epochs: _PassEpochs) -> tf.data.Dataset:
        """Per element of every pass: its epoch and its index in the pass."""
        n = len(self.batches) * self.replicas
        return _epochs(epochs, self.replicas).flat_map(
            lambda epoch, first: tf.data.Dataset.range(first, n).map(lambda j: (epoch, j))
        )

    def read_numpy(self, epoch: np.int64, j: np.int64) -> list[np.ndarray]:
        """Element ``j`` of ``epoch`` as arrays: x, y (with targets), reset, weight (if asked)."""
        k, r = divmod(int(j), self.replicas)
        b = self.shards(int(epoch), self.batches.seed)[r][k]
        out = [_native(b.x)]
        if b.y is not None:
            out.append(_native(b.y))
        out.append(reset_flags(b))
        if self.with_weight:
            out.append(b.sample_weight)
        return out

    def read(
        self, epoch: tf.Tensor, j: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, tf.Tensor | None]:
        out = tf.numpy_function(
            self.read_numpy, [epoch, j], [d for d, _ in self.specs], stateful=False
        )
        x, *rest = (
            tf.ensure_shape(t, shape) for t, (_, shape) in zip(out, self.specs, strict=True)
        )
        y = rest.pop(0) if self.has_targets else None
        flags = rest.pop(0)
        return x, y, flags, (rest[0] if rest else None)
