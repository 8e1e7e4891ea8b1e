"""Assertions on tf.data datasets shared by the tf.data tests: static specs and yielded batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

import seqbatch


def assert_static_spec(ds: tf.data.Dataset, element: tuple) -> None:
    """Every component has a fully defined shape, batch dimension included, and its dtype."""
    specs = tf.nest.flatten(ds.element_spec)
    values = tf.nest.flatten(element)
    tf.nest.assert_same_structure(ds.element_spec, element)
    for spec, value in zip(specs, values, strict=True):
        assert spec.shape.is_fully_defined(), spec
        assert tuple(spec.shape) == value.shape, (spec, value.shape)
        assert spec.dtype == tf.as_dtype(value.dtype.newbyteorder("=")), (spec, value.dtype)


def assert_yields(ds: tf.data.Dataset, expected: list[tuple]) -> None:
    """One pass over ``ds`` gives exactly ``expected``: structure, dtypes and values.

    TensorFlow holds every tensor in the machine's byte order: a component equals its numpy
    batch when it has the same values in that order, byte for byte.
    """
    got = list(ds.as_numpy_iterator())
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        tf.nest.assert_same_structure(g, e)
        for i, (a, b) in enumerate(zip(tf.nest.flatten(g), tf.nest.flatten(e), strict=True)):
            native = b.astype(b.dtype.newbyteorder("="))
            assert a.dtype == native.dtype, (k, i, a.dtype, b.dtype)
            assert a.shape == native.shape and a.tobytes() == native.tobytes(), (
                f"element {k}, component {i}:\n{a!r}\n!=\n{native!r}"
            )


def rows_of(b: seqbatch.Batch, rows: slice) -> seqbatch.Batch:
    """The rows ``rows`` of the numpy batch ``b``."""
    fields: dict[str, Any] = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    # Per-row fields are sliced; per-batch ones (lr_scale, 0-d) are kept.
    return dataclasses.replace(
        b, **{k: v if v is None or v.ndim == 0 else v[rows] for k, v in fields.items()}
    )
