"""The dataset of :func:`seqbatch.tf.to_dataset` that a Keras call reads, found through the
transformations a user adds (``prefetch``, ``map``, ...) and the ``tf.distribute`` wrappers.

The adapter marks the dataset it returns; a transformation returns a new dataset without the
marks. Each tf.data dataset holds the datasets it reads (``_inputs()``), so the marked one
is found by walking down from what ``fit()`` was given. Only transformations that pass the
batches on one for one and in order keep the streams aligned: any other one between the
user's dataset and a marked one is refused, as is a ``cache`` that would replay one epoch's
layout in the next. Each tf.data internal this relies on has a test in
``tests/tf/test_tf_transformed.py``. Importing this module imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import tensorflow as tf

from seqbatch._tf_readers import PassEpochs
from seqbatch.batcher import StreamBatcher

_KEPT = "prefetch, map, with_options, apply of these, and cache of unshuffled batches"


@dataclasses.dataclass(frozen=True)
class Fed:
    """What a Keras call reads from seqbatch datasets, as the checks and callbacks see it.

    Attributes:
        batches: the batcher of the first (or only) input pipeline.
        epochs: the pass counter of every input pipeline.
        input_shapes: the shapes of the model inputs of a batch, all replicas together.
        y_shape: the shape of the targets of a batch, or None.
        pipelines: the data comes from ``strategy.distribute_datasets_from_function``.
        cached: a ``cache()`` holds its elements.
    """

    batches: StreamBatcher
    epochs: tuple[PassEpochs, ...]
    input_shapes: list[tuple[int, ...]]
    y_shape: tuple[int, ...] | None
    pipelines: bool
    cached: bool

    def start_epoch(self, epoch: int, first_batch: int | None = None) -> None:
        """Make the next pass of every pipeline lay out ``epoch`` (from ``first_batch``)."""
        for counter in self.epochs:
            counter.next = epoch
            if first_batch is not None:
                counter.first_batch = first_batch


@functools.cache
def _kinds() -> dict[type, str]:
    """The dataset classes that pass elements on one for one, in order, by the method that
    makes each: found by making one, since their classes are private to TensorFlow."""
    probe = tf.data.Dataset.range(1)
    return {
        type(probe.prefetch(1)): "prefetch",
        type(probe.map(lambda v: v)): "map",
        type(probe.map(lambda v: v, num_parallel_calls=2)): "map",
        type(probe.with_options(tf.data.Options())): "with_options",
        type(probe.apply(tf.data.experimental.assert_cardinality(1))): "assert_cardinality",
        type(probe.cache()): "cache",
    }


def _method(dataset: Any) -> str:
    """The name of the tf.data method that made ``dataset``, as a user wrote it."""
    known = _kinds().get(type(dataset))
    if known is not None:
        return known
    name = type(dataset).__name__.strip("_").removesuffix("Dataset")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def fed_by(x: Any, name: str) -> Fed | None:
    """The seqbatch datasets that ``x``, an argument of a Keras call, reads; None if none.

    Raises:
        ValueError: ``x`` reads a dataset of ``to_dataset`` through a transformation that
            does not pass its batches on one for one and in order, or through a ``cache``
            that would replay one layout in every epoch.
    """
    tops, pipelines, replicas = [x], False, 1
    # Both kinds of distributed dataset share one public class: what they hold tells them
    # apart (strategy.experimental_distribute_dataset, distribute_datasets_from_function).
    if isinstance(x, tf.distribute.DistributedDataset):
        if hasattr(x, "_original_dataset"):
            tops = [x._original_dataset]
        else:
            tops, pipelines = list(getattr(x, "_datasets", [])), True
            replicas = int(getattr(x, "_num_replicas_in_sync", 1))
    found: list[tuple[Any, bool]] = []
    for top in tops:
        if isinstance(top, tf.data.Dataset):
            found += _marked(top, top, name)
    if not found:
        return None
    if pipelines:
        _check_pipelines([m for m, _ in found], replicas // len(tops), name)
    batches: StreamBatcher = found[0][0].seqbatch_batches
    inputs, y_shape = _shapes(tops[0].element_spec, batches.batch_size * len(tops), replicas)
    return Fed(
        batches=batches,
        epochs=tuple(marked.seqbatch_epochs for marked, _ in found),
        input_shapes=inputs,
        y_shape=y_shape,
        pipelines=pipelines,
        cached=any(cached for _, cached in found),
    )


def _marked(dataset: Any, top: tf.data.Dataset, name: str) -> list[tuple[Any, bool]]:
    """The marked datasets under ``dataset``, each with whether a cache lies above it."""
    if _is_marked(dataset):
        return [(dataset, False)]
    inputs = _inputs(dataset)
    if not any(_reaches(d) for d in inputs):
        return []
    # Checked from the user's end down, so that a refusal names the method the user called
    # (`batch`, not the nodes tf.data builds under it).
    method = _method(dataset)
    if method not in _kinds().values():
        raise ValueError(
            f"`{name}` must be a dataset of seqbatch.tf.to_dataset, or one made from it by "
            f"tf.data transformations that pass its batches on one for one and in order "
            f"({_KEPT}), so that row i of every batch continues row i of the batch before. "
            f"Received: {name} made with `{method}` from a seqbatch dataset (for another "
            "order, use StreamBatcher(shuffle=True); for fewer batches, a batcher of less "
            "data)"
        )
    if method == "map" and not _ordered_map(dataset, top):
        raise ValueError(
            f"`{name}` must keep the order of the seqbatch batches: a parallel `map` with "
            "deterministic=False (or tf.data.Options().deterministic=False) passes them on "
            "in the order they finish, so that a batch may come before the one it continues. "
            f"Received: {name} made with map(..., num_parallel_calls=...) that is not "
            "deterministic: pass deterministic=True"
        )
    below = [m for d in inputs for m in _marked(d, top, name)]
    if method == "cache":
        _check_cache(dataset, [m for m, _ in below], name)
        return [(m, True) for m, _ in below]
    return below


def _is_marked(dataset: Any) -> bool:
    return isinstance(getattr(dataset, "seqbatch_batches", None), StreamBatcher)


def _inputs(dataset: Any) -> list[Any]:
    inputs = getattr(dataset, "_inputs", None)
    return list(inputs()) if callable(inputs) else []


def _reaches(dataset: Any) -> bool:
    """Whether a marked dataset lies at or under ``dataset``."""
    return _is_marked(dataset) or any(_reaches(d) for d in _inputs(dataset))


def _check_pipelines(marked: list[Any], replicas: int, name: str) -> None:
    """Refuse a pipeline of whole batches where the strategy deals its elements to replicas."""
    for m in marked:
        if m.seqbatch_replicas != replicas:
            raise ValueError(
                f"`{name}` made by strategy.distribute_datasets_from_function must make each "
                "pipeline's dataset with to_dataset(batches, input_context=input_context): "
                f"the strategy deals a pipeline's consecutive elements to its {replicas} "
                "replicas in turn, so that whole batches would go to one replica each, and "
                "every replica would skip batches of its streams. Received: a dataset of "
                f"to_dataset that yields {m.seqbatch_replicas} element(s) per batch"
            )


def _ordered_map(dataset: Any, top: tf.data.Dataset) -> bool:
    # A sequential map has no such attribute; a parallel one follows the pipeline's options
    # unless it was given `deterministic`.
    deterministic = getattr(dataset, "_deterministic", "true")
    if deterministic == "default":
        return top.options().deterministic is not False
    return bool(deterministic == "true")


def _check_cache(dataset: Any, marked: list[Any], name: str) -> None:
    """Refuse a cache whose replay would differ from the pass it stands for."""
    filename = getattr(dataset, "_filename", None)
    path = bytes(filename.numpy()).decode() if filename is not None else ""
    if path:
        raise ValueError(
            f"`{name}` must not read a seqbatch dataset through a cache in a file: the file "
            "outlives the batcher, and a later run would replay the batches an earlier one "
            f"wrote. Received: {name} made with cache({path!r}) (use "
            "cache() in memory, on unshuffled batches)"
        )
    for m in marked:
        if m.seqbatch_batches.shuffle:
            raise ValueError(
                f"`{name}` must not read a shuffled StreamBatcher through `cache`: the cache "
                "replays the first pass's batches in every epoch, where each epoch of a "
                f"shuffled batcher has a layout of its own. Received: {name} made with "
                "cache() from a seqbatch dataset of a batcher with shuffle=True (remove the "
                "cache: in-memory data is already held in TensorFlow tensors)"
            )


def _shapes(
    spec: Any, rows: int, replicas: int
) -> tuple[list[tuple[int, ...]], tuple[int, ...] | None]:
    """The shapes of a batch's model inputs and targets in ``spec``, all replicas together.

    A pipeline of ``distribute_datasets_from_function`` yields one replica's rows; a batch
    dimension that a user's ``map`` left unknown is the batchers' ``rows``.
    """
    parts = spec if isinstance(spec, tuple) else (spec,)
    y = parts[1] if len(parts) > 1 and isinstance(parts[1], tf.TensorSpec) else None

    def whole(s: tf.TensorSpec) -> tuple[int, ...]:
        shape = tuple(s.shape)
        return (rows if not shape or shape[0] is None else shape[0] * replicas, *shape[1:])

    return [whole(s) for s in tf.nest.flatten(parts[0])], (whole(y) if y is not None else None)
