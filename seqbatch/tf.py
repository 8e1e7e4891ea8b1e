"""tf.data adapter: a ``tf.data.Dataset`` of exactly the batches of a :class:`StreamBatcher`.

In-memory data lives in TensorFlow tensors: the dataset walks a table of the epoch's windows,
one row per element, and each batch is one vectorised gather inside the graph. Other sources
(memory-mapped files, ``.npy`` paths, h5py, series joined with ``series_boundary="concat"``)
are read by one ``tf.numpy_function`` call per element, which asks the plan for that batch's
windows and reads only them: nothing the size of an epoch is held. Importing this module
imports TensorFlow; ``import seqbatch`` does not.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import tensorflow as tf

from seqbatch import _checks, _weights
from seqbatch._reset_input import check_reset_input
from seqbatch._tf_readers import (
    GraphReader,
    NumpyReader,
    PackedGraphReader,
    PassEpochs,
    carried_by,
)
from seqbatch.batcher import StreamBatcher

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

    Extending the dataset: in ``fit()``, ``StatefulTraining`` finds it under the
    transformations that pass its batches on one for one and in order (``prefetch``,
    ``map``, deterministic when parallel, ``with_options``, ``apply`` of these, ``cache()``
    of unshuffled batches, whose passes are all the same) and under ``tf.distribute``, and
    refuses before the first step any other (``shuffle``, ``batch``, ``take``, ...) and a
    ``cache`` of shuffled batches, which would replay one epoch's layout in every epoch.

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
        Memory. In-memory data is copied once into a TensorFlow buffer (all series end to end,
        with fewer than three windows of zeros around them, which padding reads and which
        align the windows on blocks of steps), when this function is called: later changes
        to the arrays do not reach the dataset. Building it briefly takes one more copy, and
        the epoch's windows are a table of 33 bytes per window (``len(batches) *
        batch_size`` of them), or packed, 16 bytes per window and 24 per series. Unpacked
        batches are read up to 16 at a time, about 4 MB at most (one gather, handed on one
        by one as slices that share its memory); a batch larger than that is read alone. Where
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
    check_reset_input(batches, reset_input, stacklevel=_first_caller_outside_seqbatch())
    with_weight = sample_weight and batches.target_shape is not None
    paths = {carried_by(batches.dtype, "x")}
    if batches.target_dtype is not None:
        paths.add(carried_by(batches.target_dtype, "y"))
    reader_type: type[GraphReader | NumpyReader] = NumpyReader
    if batches.in_memory and paths == {"gather"} and not batches.varying and not batches.burn_in:
        packed = batches.packed
        reader_type = PackedGraphReader if packed else GraphReader
    reader = reader_type(batches, replicas, with_weight)

    # Real steps weigh the epoch's slots over its real steps, so that Keras reports the mean
    # over real steps (seqbatch._weights); a loss reduces only the target's last axis, so the
    # weights repeat over the others. Both are the same in every epoch of a batcher.
    # Window lengths that vary weigh each batch's steps as they are read (batch_step_weight).
    step_weight = 1.0 if batches.varying else _weights.real_step_weight(batches)
    extra = tuple(batches.target_shape[:-1]) if batches.target_shape is not None else ()

    epochs = PassEpochs(batches.epoch)

    def element(*columns: tf.Tensor) -> tuple[Any, ...]:
        x, y, reset, weight = reader.read(*columns)
        inputs = (x, reset) if reset_input else x
        if y is None:
            return (inputs,)
        if weight is None:
            return (inputs, y)
        if not extra:
            return (inputs, y, weight * step_weight)
        shape = tuple(weight.shape)
        if None in shape:  # an open time axis: the window lengths vary
            dynamic = tf.shape(weight)
            weight = tf.reshape(weight, tf.concat([dynamic, [1] * len(extra)], 0))
            return (inputs, y, tf.broadcast_to(weight, tf.concat([dynamic, extra], 0)))
        weight = tf.reshape(weight * step_weight, shape + (1,) * len(extra))
        return (inputs, y, tf.broadcast_to(weight, shape + extra))

    options = tf.data.Options()
    options.deterministic = True
    # A strategy shards a dataset after cutting its global batches into per-replica blocks:
    # DATA then gives each worker its own blocks of every batch (OFF gives it every block).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = reader.elements(epochs, element)
    if not batches.varying:
        # Epochs whose window lengths vary each have their number of batches: unknown here.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches) * replicas))
    dataset = dataset.with_options(options)
    # For seqbatch.keras.StatefulTraining: it checks fit()'s model and arguments against the
    # batches, and sets the epoch of each pass to fit()'s. It finds them through the user's
    # transformations (seqbatch._tf_found).
    dataset.seqbatch_batches = batches
    dataset.seqbatch_epochs = epochs
    dataset.seqbatch_replicas = replicas
    return dataset


def _first_caller_outside_seqbatch() -> int:
    """The ``stacklevel`` that makes a warning of :func:`to_dataset` name the user's line.

    ``StreamBatcher.to_tf_dataset`` calls in from seqbatch itself: its frame is skipped.
    """
    level = 2
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("seqbatch."):
        level, frame = level + 1, frame.f_back
    return level
