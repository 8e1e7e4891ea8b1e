"""The check of burn-in batches, decoded from what a user sees (``tests/encoded.py`` data).

Burn-in (``StreamBatcher(..., burn_in=b)``, docs/guides/lengths.md, "Burn-in") puts in front
of each window the ``min(b, t)`` steps right before it in its series, where ``t`` is the
step at which the window starts, after padding of weight 0 that fills the ``b`` columns.
The window's first step is decoded from the data itself, so the expected prefix is known
without the plan, and the window columns must be those of the same batcher without burn-in.
"""

from __future__ import annotations

import numpy as np

import seqbatch
from tests.encoded import SERIES_STRIDE, decode, decode_targets


def check_burn_in_batch(
    burned: seqbatch.Batch,
    plain: seqbatch.Batch,
    b: int,
    *,
    features: tuple[int, ...],
    shift: int,
    target_arrays: bool,
) -> int:
    """Assert the burn-in clause on one batch; return its number of burn-in steps.

    Args:
        burned: the batch with burn-in.
        plain: the same batch of the same batcher without burn-in.
        b: the burn-in.
        features: the feature shape of the data.
        shift: steps ahead of the target (0 for target arrays or without targets).
        target_arrays: the targets are arrays holding ``-code``.
    """
    B, W = plain.x.shape[:2]
    assert burned.x.shape == (B, b + W, *plain.x.shape[2:])
    assert burned.x.dtype == plain.x.dtype
    assert burned.length == plain.length == W
    # The window is exactly the batch without burn-in.
    np.testing.assert_array_equal(burned.x[:, b:], plain.x)
    np.testing.assert_array_equal(burned.series, plain.series)
    np.testing.assert_array_equal(burned.position, plain.position)
    assert burned.lr_scale == plain.lr_scale
    if plain.sample_weight.ndim == 2:
        np.testing.assert_array_equal(burned.sample_weight[:, b:], plain.sample_weight)
        assert not burned.sample_weight[:, :b].any(), "a burn-in step carries loss"
    else:
        np.testing.assert_array_equal(burned.sample_weight, plain.sample_weight)
    assert burned.burn_in is not None and burned.burn_in.shape == (B, b)
    assert burned.burn_in.dtype == bool

    first = decode(plain.x[:, :1], features)[:, 0]  # the window's first step: 0 if idle
    codes = decode(burned.x[:, :b], features)
    steps = 0
    for i in range(B):
        if first[i] == 0:
            assert not codes[i].any() and not burned.burn_in[i].any() and not burned.reset[i]
            continue
        t = int(first[i]) % SERIES_STRIDE  # the window's first step in its series
        p = min(b, t)
        want = np.zeros(b, dtype=np.int64)
        want[b - p :] = first[i] - np.arange(p, 0, -1)  # the p steps before, same series
        np.testing.assert_array_equal(codes[i], want)
        flags = np.zeros(b, dtype=bool)
        flags[b - p :] = True
        np.testing.assert_array_equal(burned.burn_in[i], flags)
        # Reset exactly where the row's first real step is its series' first step.
        assert bool(burned.reset[i]) == (t - p == 0)
        steps += p
    if plain.y is None:
        assert burned.y is None
    elif plain.sample_weight.ndim == 2:  # a target per step
        np.testing.assert_array_equal(burned.y[:, b:], plain.y)
        target = decode_targets(burned.y[:, :b], features, target_arrays)
        want_y = np.where(codes > 0, -codes if target_arrays else codes + shift, 0)
        np.testing.assert_array_equal(target, want_y)
    else:
        np.testing.assert_array_equal(burned.y, plain.y)
    return steps
