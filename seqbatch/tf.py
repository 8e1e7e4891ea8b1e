"""tf.data adapter: a ``tf.data.Dataset`` of exactly the batches of a :class:`StreamBatcher`.

The dataset walks a table of the epoch's windows, one row per element. In-memory data lives
in TensorFlow tensors and each batch is one vectorised gather inside the graph; other sources
(memory-mapped files, ``.npy`` paths, h5py, series joined with ``series_boundary="concat"``)
are read by one ``tf.numpy_function`` call per batch that reads only that batch's windows.
Importing this module imports TensorFlow; ``import seqbatch`` does not.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import tensorflow as tf

from seqbatch import _checks
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
    the data. The dataset is never shuffled, its order is deterministic and tf.data
    auto-sharding is off: auto-sharding would deal batches, not streams, to the workers.

    Elements are tuples whose first item is the model input, as ``fit``, ``evaluate`` and
    ``predict`` unpack them: ``(inputs, y, sample_weight)``, or ``(inputs, y)`` with
    ``sample_weight=False``; ``(inputs,)`` when ``batches`` has no targets (nothing to weight,
    and a 1-tuple, so that Keras never reads ``(x, reset)`` as ``(x, y)``).

    ``inputs`` is ``x`` of shape ``(B, W, *features)``, or with ``reset_input=True`` the pair
    ``(x, reset)`` with ``reset`` of shape ``(B,)``, float32, 1.0 where the stream starts a new
    series: the default dtype of ``keras.Input(batch_shape=(B,))``, and a factor that zeroes
    state in the graph as ``state * (1 - reset)``. ``y`` and ``sample_weight`` are those of
    :class:`seqbatch.Batch`: ``(B, W, *targets)`` and ``(B, W)``, or ``(B, *targets)`` and
    ``(B,)`` with ``return_sequences=False``.

    Epochs: without ``shuffle`` every pass over the dataset is the same. With
    ``shuffle=True``, pass ``p`` lays out epoch ``batches.epoch + p``, where pass ``p`` is the
    ``p``-th iterator that reads the dataset (each Keras epoch makes one; so does any loop over
    the dataset, and so does the one-batch probe of the data that Keras makes before training
    under a ``tf.distribute`` strategy, which then starts training at ``batches.epoch + 1``).
    The dataset counts its own passes from the epoch ``batches`` was in when this function
    was called; ``batches`` itself is never changed. In ``fit()`` with
    :class:`seqbatch.keras.StatefulTraining`, epoch ``e`` of ``fit()`` lays out epoch ``e``
    instead, probes or not, so that ``fit(initial_epoch=e)`` resumes exactly. One Python call
    per pass fetches that epoch's table; without ``shuffle`` there is none.

    ``tf.distribute``, on one machine: ``strategy.experimental_distribute_dataset`` (what
    Keras does with a dataset under ``strategy.scope()``) cuts each global batch into
    contiguous row blocks, one per replica, so every stream stays on its replica. Build the
    model with the per-replica batch size. On several machines, or to give each input
    pipeline its own data, use ``strategy.distribute_datasets_from_function`` and pass its
    ``input_context``: pipeline ``input_pipeline_id`` then keeps its own streams
    (``batches.shard(input_pipeline_id, num_input_pipelines)``) and, since the strategy deals
    a pipeline's consecutive elements round-robin to its replicas, yields per-replica batches
    in (batch, replica) order: batch 0 for replica 0, batch 0 for replica 1, ..., batch 1 for
    replica 0, ... Replica ``r`` of the strategy gets the same rows either way: streams
    ``[r * b, (r + 1) * b)`` with ``b = batch_size // num_replicas_in_sync``.

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
        ValueError: the number of replicas of ``input_context`` does not divide the batch size.

    Notes:
        In-memory data is copied once into a TensorFlow buffer (all series end to end and a
        row of zeros that padding reads); building it briefly takes one more copy. Where
        TensorFlow serialises the dataset graph (the tf.data service), a buffer over 2 GB
        cannot go: save the data with ``np.save`` and pass the path, read batch by batch.

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
        if batches.batch_size % input_context.num_replicas_in_sync:
            raise ValueError(
                "`input_context` must have a number of replicas that divides the batch size, "
                "so that every replica gets as many streams. Received: input_context with "
                f"num_replicas_in_sync={input_context.num_replicas_in_sync} for "
                f"batch_size={batches.batch_size}"
            )
        replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        batches = batches.shard(input_context.input_pipeline_id, input_context.num_input_pipelines)
    reader = _GraphReader(batches) if batches.in_memory else _NumpyReader(batches)
    rows = batches.batch_size // replicas

    def table(epoch: int) -> tuple[np.ndarray, ...]:
        # Replica r of batch k holds rows [r*b, (r+1)*b) of the pipeline's batch k, so
        # (batch, replica) order is the row-major reshape of the (batch, stream) table.
        at_epoch = copy.copy(batches)
        at_epoch.set_epoch(epoch)
        t = at_epoch.plan.table()
        streams = slice(batches.streams.start, batches.streams.stop)
        window = Window(*(a[:, streams].reshape(-1, rows) for a in t))
        return reader.table(window)

    n_elements = len(batches) * replicas
    epochs = PassEpochs(batches.epoch)
    if batches.shuffle:
        dtypes = [tf.as_dtype(a.dtype) for a in table(batches.epoch)]

        def next_pass(_: tf.Tensor) -> tuple[tf.Tensor, ...]:
            out = tf.numpy_function(lambda: table(epochs.take()), [], dtypes, stateful=True)
            return tuple(tf.ensure_shape(t, (n_elements, rows)) for t in out)

        passes = tf.data.Dataset.from_tensors(0).map(next_pass)
    else:
        passes = tf.data.Dataset.from_tensors(table(batches.epoch))

    W = batches.sequence_length
    has_targets = batches.target_shape is not None

    def element(length: tf.Tensor, reset: tf.Tensor, *columns: tf.Tensor) -> tuple[Any, ...]:
        x, y = reader.read(length, reset, *columns)
        inputs = (x, tf.cast(reset, tf.float32)) if reset_input else x
        if not has_targets:
            return (inputs,)
        if not sample_weight:
            return (inputs, y)
        weight = tf.cast(tf.range(W, dtype=tf.int64) < length[:, None], tf.float32)
        if not batches.return_sequences:
            weight = weight[:, -1]
        return (inputs, y, weight)

    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = (
        passes.flat_map(lambda *t: tf.data.Dataset.from_tensor_slices(t))
        .map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .apply(tf.data.experimental.assert_cardinality(n_elements))
        .with_options(options)
    )
    # For seqbatch.keras.StatefulTraining: it checks fit()'s model and arguments against the
    # batches, and sets the epoch of each pass to fit()'s.
    dataset.seqbatch_batches = batches
    dataset.seqbatch_epochs = epochs
    return dataset


class PassEpochs:
    """The epoch that the next pass over a dataset lays out: one more at every pass.

    ``seqbatch.keras.StatefulTraining`` sets :attr:`next` to ``fit()``'s epoch as each epoch
    begins, so that ``fit(initial_epoch=e)`` lays out epochs ``e, e + 1, ...`` whatever
    passes Keras made before (a probe, an iterator it made and dropped).
    """

    def __init__(self, first: int) -> None:
        self.next = first

    def take(self) -> int:
        """The epoch of a new pass; the following pass gets the one after."""
        epoch, self.next = self.next, self.next + 1
        return epoch


def _tf_dtype(dtype: np.dtype, name: str) -> tf.DType:
    try:
        return tf.as_dtype(dtype)
    except TypeError as err:
        raise TypeError(
            f"`batches` must hold {name} of a dtype TensorFlow has. Received: {name} of "
            f"dtype {dtype}"
        ) from err


class _GraphReader:
    """Reads in-memory batches with TensorFlow ops: one gather per batch, no Python.

    Each of x and y is one buffer of all series end to end followed by a row of zeros, which
    padding steps read: a single gather, with no mask to apply afterwards.
    """

    def __init__(self, batches: StreamBatcher) -> None:
        self.width = batches.sequence_length
        self.shift = batches.shift
        self.has_targets = batches.target_shape is not None
        self.return_sequences = batches.return_sequences
        self.x, self.x_offsets = self._flat(batches.sources, batches.dtype, "x")
        self.y, self.y_offsets = self.x, self.x_offsets
        if self.has_targets and batches.target_sources is not batches.sources:
            assert batches.target_dtype is not None
            self.y, self.y_offsets = self._flat(batches.target_sources, batches.target_dtype, "y")

    @staticmethod
    def _flat(
        sources: list[np.ndarray], dtype: np.dtype, name: str
    ) -> tuple[tf.Tensor, np.ndarray]:
        """The buffer, and where each series starts in it (and, last, the row of zeros)."""
        _tf_dtype(dtype, name)
        zeros = np.zeros((1, *sources[0].shape[1:]), dtype)
        offsets = np.cumsum([0] + [len(s) for s in sources])
        return tf.constant(np.concatenate([*sources, zeros])), offsets

    def table(self, w: Window) -> tuple[np.ndarray, ...]:
        """Per window: real steps, reset, and the buffer index of its first x and y step."""
        series = np.maximum(w.series, 0)  # an idle stream (-1) reads only zeros
        x_first = self.x_offsets[series] + w.start
        y_first = self.y_offsets[series] + w.start + self.shift
        if not self.return_sequences:
            y_first += self.width - 1
        return w.length, w.reset, x_first, y_first

    def read(
        self, length: tf.Tensor, reset: tf.Tensor, x_first: tf.Tensor, y_first: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        steps = tf.range(self.width, dtype=tf.int64)
        real = steps < length[:, None]
        x = tf.gather(self.x, tf.where(real, x_first[:, None] + steps, self.x_offsets[-1]))
        if not self.has_targets:
            return x, None
        if self.return_sequences:
            index = tf.where(real, y_first[:, None] + steps, self.y_offsets[-1])
        else:
            index = tf.where(length == self.width, y_first, self.y_offsets[-1])
        return x, tf.gather(self.y, index)


class _NumpyReader:
    """Reads batches from lazy sources: one ``tf.numpy_function`` call per batch."""

    def __init__(self, batches: StreamBatcher) -> None:
        self.batches = batches
        W = batches.sequence_length
        self.x_spec = (_tf_dtype(batches.dtype, "x"), (W, *batches.feature_shape))
        self.y_spec = None
        if batches.target_shape is not None:
            assert batches.target_dtype is not None
            steps = (W,) if batches.return_sequences else ()
            self.y_spec = (_tf_dtype(batches.target_dtype, "y"), (*steps, *batches.target_shape))

    def table(self, w: Window) -> tuple[np.ndarray, ...]:
        """Per window: real steps, reset, series and first step."""
        return w.length, w.reset, w.series, w.start

    def read(
        self, length: tf.Tensor, reset: tf.Tensor, series: tf.Tensor, start: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        def read_batch(*window: np.ndarray) -> list[np.ndarray]:
            b = self.batches.batch(Window(*window))
            return [b.x] if b.y is None else [b.x, b.y]

        specs = [self.x_spec] if self.y_spec is None else [self.x_spec, self.y_spec]
        out = tf.numpy_function(
            read_batch, [series, start, length, reset], [d for d, _ in specs], stateful=False
        )
        rows = length.shape[0]
        x, *y = (
            tf.ensure_shape(t, (rows, *shape)) for t, (_, shape) in zip(out, specs, strict=True)
        )
        return x, (y[0] if y else None)
