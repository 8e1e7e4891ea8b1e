"""One assertion that two sources of batches give the same batches, field by field."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

FIELDS = (
    "x",
    "y",
    "sample_weight",
    "reset",
    "series",
    "position",
    "step_reset",
    "step_series",
    "step_position",
)


def assert_same_batches(a: Any, b: Any, ks: Iterable[int] | None = None) -> None:
    """Batches ``ks`` of ``a`` and ``b`` (every batch if None, and as many) are equal.

    A field that one batch lacks (``y`` without targets, the step fields unless packed) must
    be missing from the other too.
    """
    if ks is None:
        assert len(a) == len(b)
        ks = range(len(a))
    for k in ks:
        left, right = a[k], b[k]
        for name in FIELDS:
            va, vb = getattr(left, name), getattr(right, name)
            assert (va is None) == (vb is None), (k, name)
            if va is not None:
                np.testing.assert_array_equal(va, vb, err_msg=f"batch {k}, {name}")


def assert_shards_join(whole: Any, shards: list[Any]) -> None:
    """Batch ``k`` of ``whole`` is the rows of batch ``k`` of ``shards``, one after another,
    in every field (a field that ``whole`` lacks, every shard lacks too)."""
    for k in range(len(whole)):
        batch = whole[k]
        parts = [s[k] for s in shards]
        for field in FIELDS:
            if getattr(batch, field) is None:
                assert all(getattr(p, field) is None for p in parts), (k, field)
                continue
            joined = np.concatenate([getattr(p, field) for p in parts])
            assert np.array_equal(joined, getattr(batch, field)), (k, field)
