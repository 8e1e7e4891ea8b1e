"""How the tf.data adapter reads batches: in the graph for in-memory data, by numpy otherwise.

Used by :mod:`seqbatch.tf`; importing this module imports TensorFlow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from seqbatch._weights import batch_step_weight
from seqbatch.batch import reset_flags
from seqbatch.batcher import StreamBatcher
from seqbatch.plan import Window
from seqbatch.ragged import Ragged, lengths_of
from seqbatch.view import EpochView


class PassEpochs:
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


def _epochs(epochs: PassEpochs, replicas: int) -> tf.data.Dataset:
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


def carried_by(dtype: np.dtype, name: str) -> str:
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


class GraphReader:
    """Reads in-memory batches with TensorFlow ops: one gather per batch, no Python.

    Each of x and y is one buffer of all series end to end followed by zeros, which padding
    steps read: a single gather, with no mask to apply afterwards. The windows of an epoch
    come from a table of ``len(batches) * batch_size`` rows of integers, made once (or once
    per pass with ``shuffle``).

    The gather reads blocks of steps rather than steps, where it can: when every window of
    the epoch starts a whole number of blocks of ``g`` steps after the others and holds a
    whole number of blocks of real steps (``g`` divides the window length), the buffer is
    seen as ``(steps / g, g, *features)`` and a window is ``W / g`` blocks. One long series
    cut into streams at window boundaries reads one block per window: ``B`` copies of ``W``
    steps instead of ``B * W`` copies of one step. A few zero steps in front of the buffer
    put the first window on a block boundary. Shuffled epochs, whose windows are known only
    pass by pass, read steps (``g = 1``).
    """

    def __init__(self, batches: StreamBatcher, replicas: int, with_weight: bool) -> None:
        self.batches = batches
        self.rows = batches.batch_size // replicas
        self.with_weight = with_weight
        self.width = batches.fixed_length("to_tf_dataset")
        self.shift = batches.shift
        self.has_targets = batches.target_shape is not None
        self.return_sequences = batches.return_sequences
        self._build()

    def _build(self) -> None:
        """The buffers, seen in blocks of steps as the epoch's windows allow."""
        batches = self.batches
        x_offsets = self._offsets(batches.sources)
        shared = not self.has_targets or batches.target_sources is batches.sources
        # Unshuffled, every pass has the table of the batcher's epoch: its windows say which
        # blocks fit, and whether any window is short. Packed windows read steps.
        window = None if batches.shuffle or batches.packed else self._windows(batches.epoch)
        self.padded = window is None or bool(np.any(window.length < self.width))
        self.x_block, front = self._block(window, x_offsets)
        self.x = self._flat(batches.sources, batches.dtype, front, self.x_block)
        self.x_offsets = x_offsets + front
        if shared:
            self.y, self.y_offsets = self.x, self.x_offsets
            # y reads x's buffer `shift` steps later: blocks that fit both.
            self.y_block = int(np.gcd(self.x_block, self.shift))
        else:
            assert batches.target_dtype is not None
            y_offsets = self._offsets(batches.target_sources)
            self.y_block, front = self._block(window, y_offsets + self.shift)
            self.y = self._flat(batches.target_sources, batches.target_dtype, front, self.y_block)
            self.y_offsets = y_offsets + front
        if not (self.has_targets and self.return_sequences):
            self.y_block = 1  # one target step per window, or none
        self.x_view = self._view(self.x, self.x_block)
        self.y_view = self._view(self.y, self.y_block)
        self._window = window  # for the table of the unshuffled epoch, made next
        self.count = len(batches) * (batches.batch_size // self.rows)  # elements of a pass
        self.chunk = 1 if batches.packed else self._chunk()

    # Elements read by one gather: at most this many, of about this many bytes in all.
    _CHUNK_ELEMENTS = 16
    _CHUNK_BYTES = 1 << 22

    def _chunk(self) -> int:
        """Elements that one call of the element function reads at once.

        tf.data pays for each call of a ``map`` function (tens of microseconds) and for each
        gather; a call that reads several batches pays once for them, and hands them on one
        by one as slices of its output, which share its memory.
        """
        step = self.x.dtype.size * int(np.prod(self.x.shape[1:], dtype=np.int64))
        if self.has_targets:
            y_step = self.y.dtype.size * int(np.prod(self.y.shape[1:], dtype=np.int64))
            step += y_step if self.return_sequences else y_step // self.width
        size = max(1, self.rows * self.width * step)
        return int(max(1, min(self._CHUNK_ELEMENTS, self._CHUNK_BYTES // size, self.count)))

    @staticmethod
    def _offsets(sources: Sequence[np.ndarray]) -> np.ndarray:
        """Where each series starts in the series end to end (and, last, where they end)."""
        return np.concatenate(([0], np.cumsum(lengths_of(sources)))).astype(np.int64)

    def _windows(self, epoch: int) -> Window:
        """The windows of ``epoch``'s elements: arrays of shape ``(elements, rows)``."""
        t = self.batches.plan_at(epoch).table()
        # Replica r of batch k holds rows [r*b, (r+1)*b) of the pipeline's batch k, so
        # (batch, replica) order is the row-major reshape of the (batch, stream) table.
        streams = slice(self.batches.streams.start, self.batches.streams.stop)
        return Window(*(a[:, streams].reshape(-1, self.rows) for a in t))

    def _block(self, window: Window | None, offsets: np.ndarray) -> tuple[int, int]:
        """Steps per block, and the zero steps to put in front of the buffer.

        The block is the most steps that every window of ``window`` reads whole: a divisor
        of the window length, of every count of real steps and of the distance between any
        two windows' first steps, which lie at ``offsets[series] + start``. The zeros in
        front put the first steps on block boundaries.
        """
        if window is None or not np.any(window.length > 0):
            return 1, 0
        real = window.length > 0
        first = offsets[window.series[real]] + window.start[real]
        g = int(
            np.gcd.reduce(np.concatenate(([self.width], window.length.ravel(), first - first[0])))
        )
        return g, -int(first[0]) % g

    @staticmethod
    def _flat(sources: Sequence[np.ndarray], dtype: np.dtype, front: int, g: int) -> tf.Tensor:
        """The buffer: ``front`` zero steps, the series end to end, then zeros: a whole
        number of blocks of ``g`` steps, the last of them zeros, which padding reads."""
        total = front + int(np.sum(lengths_of(sources)))
        tail = g + -total % g
        shape = sources[0].shape[1:]
        arrays = [sources.values] if isinstance(sources, Ragged) else list(sources)
        parts = [np.zeros((front, *shape), dtype), *arrays, np.zeros((tail, *shape), dtype)]
        return tf.constant(_native(np.concatenate(parts)))

    @staticmethod
    def _view(buffer: tf.Tensor, g: int) -> tf.Tensor:
        """``buffer`` as blocks of ``g`` steps (the same memory)."""
        shape = buffer.shape
        return tf.reshape(buffer, [shape[0] // g, g, *shape[1:]])

    # The columns of an epoch's table: the first `constants` are the same for every element
    # of a pass, each of the others has one row per element.
    dtypes: tuple[tf.DType, ...] = (tf.int64, tf.bool, tf.int64, tf.int64)
    constants = 0

    def table(self, epoch: int) -> tuple[np.ndarray, ...]:
        """Per element: real steps, reset, x's first block and y's (or y's target step)."""
        w = self._window if self._window is not None else self._windows(epoch)
        self._window = None
        series = np.maximum(w.series, 0)  # an idle stream (-1) reads only zeros
        x_first = self.x_offsets[series] + w.start
        y_first = self.y_offsets[series] + w.start + self.shift
        if self.has_targets and not self.return_sequences:
            y_first = y_first + (self.width - 1)  # the window's last step
        columns = (w.length, w.reset, x_first // self.x_block, y_first // self.y_block)
        K = self.chunk
        if K == 1:
            return columns
        # Chunks of K elements; the last is filled with copies of the last element, which
        # are read and dropped. Each chunk also has its index.
        fill = -self.count % K
        chunked = tuple(
            np.pad(c, ((0, fill), (0, 0)), mode="edge").reshape(-1, K, self.rows) for c in columns
        )
        return (*chunked, np.arange(len(chunked[0]), dtype=np.int64))

    def shapes(self) -> list[tuple[int | None, ...]]:
        """The shapes of the columns of :meth:`table`."""
        K = self.chunk
        if K == 1:
            return [(self.count, self.rows)] * 4
        chunks = -(-self.count // K)
        return [(chunks, K, self.rows)] * 4 + [(chunks,)]

    def passes(self, epochs: PassEpochs) -> tf.data.Dataset:
        """The columns of every element of one pass, each pass laying out its own epoch and
        starting at its first element (batch 0, unless ``BackupAndRestore`` resumes it)."""
        replicas = self.batches.batch_size // self.rows
        if self.batches.shuffle:

            def table(epoch: tf.Tensor, first: tf.Tensor) -> tuple[tf.Tensor, ...]:
                dtypes = list(self.dtypes) + ([tf.int64] if self.chunk > 1 else [])
                out = tf.numpy_function(lambda e: self.table(int(e)), [epoch], dtypes)
                shaped = (tf.ensure_shape(t, s) for t, s in zip(out, self.shapes(), strict=True))
                return (*shaped, first)

        else:
            fixed = self.table(self.batches.epoch)

            def table(epoch: tf.Tensor, first: tf.Tensor) -> tuple[tf.Tensor, ...]:
                return (*fixed, first)

        c, K = self.constants, self.chunk

        def elements(*t: tf.Tensor) -> tf.data.Dataset:
            columns, first = t[:-1], t[-1]
            if K > 1:
                # Per chunk: its columns, its index and the pass's first element.
                chunks = tf.data.Dataset.from_tensor_slices(columns).skip(first // K)
                return chunks.map(lambda *chunk: (*chunk, first))
            rows = tf.data.Dataset.from_tensor_slices(columns[c:]).skip(first)
            return rows.map(lambda *row: (*columns[:c], *row)) if c else rows

        return _epochs(epochs, replicas).map(table).flat_map(elements)

    def elements(
        self, epochs: PassEpochs, element: Callable[..., tuple[Any, ...]]
    ) -> tf.data.Dataset:
        """The elements of every pass: ``element`` of the columns of each.

        ``element`` maps columns of shape ``(rows,)`` or, read a chunk at a time, of shape
        ``(chunk, rows)``: it must work on both.
        """
        K = self.chunk
        dataset = self.passes(epochs)
        if K == 1:
            return dataset.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        count = self.count

        def read(*t: tf.Tensor) -> Any:
            *columns, index, first = t
            # The chunk's elements that the pass holds: from its first, to the epoch's end
            # (slices along the first axis share the chunk's memory).
            at = index * K
            begin, end = tf.maximum(first - at, 0), tf.minimum(count - at, K)
            return tf.nest.map_structure(lambda c: c[begin:end], element(*columns))

        dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.flat_map(lambda *chunk: tf.data.Dataset.from_tensor_slices(chunk))

    def read(
        self, *columns: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor, tf.Tensor | None]:
        length, reset, x_first, y_first = columns
        flags = tf.cast(reset, tf.float32)
        x = self._gather(self.x, self.x_view, self.x_block, x_first, length)
        if not self.has_targets:
            return x, None, flags, None
        if self.return_sequences:
            y = self._gather(self.y, self.y_view, self.y_block, y_first, length)
            if not self.with_weight:
                return x, y, flags, None
            real = tf.range(self.width, dtype=tf.int64) < length[..., None]
            return x, y, flags, tf.cast(real, tf.float32)
        # The target of the window's last step, where that step is real.
        real = length >= self.width
        at = tf.where(real, y_first, self.y.shape[0] - 1) if self.padded else y_first
        y = tf.gather(self.y, at)
        return x, y, flags, tf.cast(real, tf.float32) if self.with_weight else None

    def _gather(
        self, buffer: tf.Tensor, view: tf.Tensor, g: int, first: tf.Tensor, length: tf.Tensor
    ) -> tf.Tensor:
        """The windows that start at block ``first`` of ``view`` (blocks of ``g`` steps of
        ``buffer``), with zeros past their ``length`` real steps."""
        blocks = self.width // g
        at = first[..., None]
        if blocks > 1:
            at += tf.range(blocks, dtype=tf.int64)
        if self.padded:
            # Real steps fill whole blocks; padding reads the last block, zeros.
            real = tf.range(0, self.width, g, dtype=tf.int64) < length[..., None]
            at = tf.where(real, at, view.shape[0] - 1)
        if g == 1:
            return tf.gather(buffer, at)
        out = tf.gather(view, at)
        return tf.reshape(out, [*first.shape, self.width, *buffer.shape[1:]])


class PackedGraphReader(GraphReader):
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
        plan = self.batches.plan_at(epoch)
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


class NumpyReader:
    """Reads batches from lazy sources: one ``tf.numpy_function`` call per element.

    Element ``j`` of a pass is replica ``j % R`` of batch ``j // R`` of that pass's epoch:
    the call asks the plan for those windows alone and reads them, so that memory holds a
    few batches at a time, whatever the length of the data or of the epoch.
    """

    def __init__(self, batches: StreamBatcher, replicas: int, with_weight: bool) -> None:
        self.batches = batches
        self.replicas = replicas
        self.with_weight = with_weight
        rows = batches.batch_size // replicas
        # Windows that vary have an open time axis; burn-in columns come in front.
        W = None if batches.varying else batches.fixed_length("to_tf_dataset") + batches.burn_in
        specs: list[tuple[tf.DType, tuple[int | None, ...]]]
        specs = [(_tf_dtype(batches.dtype, "x"), (rows, W, *batches.feature_shape))]
        self.has_targets = batches.target_shape is not None
        if batches.target_shape is not None:
            assert batches.target_dtype is not None
            steps = (W,) if batches.return_sequences else ()
            specs.append(
                (_tf_dtype(batches.target_dtype, "y"), (rows, *steps, *batches.target_shape))
            )
        packed = batches.packed or batches.burn_in > 0  # flags per step
        specs.append((tf.float32, (rows, W) if packed else (rows,)))
        if with_weight:
            specs.append((tf.float32, (rows, W) if batches.return_sequences else (rows,)))
        self.specs = specs

    @functools.lru_cache(maxsize=2)  # noqa: B019 - one reader per dataset, two seeds at most
    def shards(self, seed: int) -> list[EpochView]:
        """The views of each replica's rows, made once per seed.

        The seed is part of the key: ``load_state_dict`` may give the batcher the seed of a
        checkpoint after a pass (Keras's probe) has read an epoch with the old one.
        """
        view = self.batches.view
        return [view.shard(r, self.replicas) for r in range(self.replicas)]

    def passes(self, epochs: PassEpochs) -> tf.data.Dataset:
        """Per element of every pass: its epoch and its index in the pass."""
        if not self.batches.varying:
            n = len(self.batches) * self.replicas
            return _epochs(epochs, self.replicas).flat_map(
                lambda epoch, first: tf.data.Dataset.range(first, n).map(lambda j: (epoch, j))
            )
        view, R = self.batches.view, self.replicas

        def pass_of(epoch: tf.Tensor, first: tf.Tensor) -> tf.data.Dataset:
            # Each epoch has its own number of batches: asked once per pass.
            count = tf.numpy_function(
                lambda e: np.int64(view.n_batches(int(e)) * R), [epoch], tf.int64, stateful=False
            )
            count = tf.ensure_shape(count, ())
            return tf.data.Dataset.range(first, count).map(lambda j: (epoch, j))

        return _epochs(epochs, self.replicas).flat_map(pass_of)

    def elements(
        self, epochs: PassEpochs, element: Callable[..., tuple[Any, ...]]
    ) -> tf.data.Dataset:
        """The elements of every pass: ``element`` of the columns of each."""
        return self.passes(epochs).map(
            element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    def read_numpy(self, epoch: np.int64, j: np.int64) -> list[np.ndarray]:
        """Element ``j`` of ``epoch`` as arrays: x, y (with targets), reset, weight (if asked)."""
        k, r = divmod(int(j), self.replicas)
        b = self.shards(self.batches.seed)[r].batch(int(epoch), k)
        out = [_native(b.x)]
        if b.y is not None:
            out.append(_native(b.y))
        out.append(reset_flags(b))
        if self.with_weight and self.batches.varying:
            # The weight of a real step depends on the batch's length (seqbatch._weights).
            plan = self.shards(self.batches.seed)[r].plan(int(epoch))
            scale = batch_step_weight(plan, self.batches.return_sequences, k, self.batches.burn_in)
            out.append((b.sample_weight * np.float32(scale)).astype(np.float32))
        elif self.with_weight:
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
