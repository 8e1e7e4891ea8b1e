"""Test data whose values encode their own position, and a checker of the alignment invariant.

Step ``t`` of series ``s`` holds ``code = 1000 * (s + 1) + t`` in feature 0 (never 0, so
padding, which is 0, cannot pass for data); feature ``f`` (in C
order over the feature shape) holds ``code + 100_000 * f``. Target arrays hold ``-code``. A
wrong slice, a wrong series or a wrong shift shows up as a wrong number.

The checker reads only what a user sees in the batches (``x``, ``y``, ``sample_weight``,
``reset``, ``series``, ``position``), decodes every real step and asserts every clause of the
invariant (docs/concepts.md, "The invariant") against the decoded positions, not against the plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

import seqbatch

SERIES_STRIDE = 1000
FEATURE_STRIDE = 100_000


def encoded_series(s: int, length: int, features: tuple[int, ...], dtype: str) -> np.ndarray:
    """Series ``s`` of ``length`` steps whose values encode (series, step, feature)."""
    code = SERIES_STRIDE * (s + 1) + np.arange(length)
    n_features = int(np.prod(features)) if features else 1
    values = code[:, None] + FEATURE_STRIDE * np.arange(n_features)[None, :]
    return values.reshape((length, *features)).astype(dtype)


def decode(values: np.ndarray, features: tuple[int, ...]) -> np.ndarray:
    """The codes ``1000 * (s + 1) + t`` of steps ``values`` of shape ``(..., *features)``.

    Asserts that every feature agrees, so a step cannot be half right; a step of zeros
    (padding) decodes to 0.
    """
    flat = np.asarray(values, dtype=np.int64).reshape(
        *values.shape[: values.ndim - len(features)], -1
    )
    codes = flat[..., 0]
    expected = codes[..., None] + FEATURE_STRIDE * np.arange(flat.shape[-1])
    expected[codes == 0] = 0
    assert np.array_equal(flat, expected), "features of one step disagree"
    return codes


def check_epoch(
    batches: seqbatch.StreamBatcher,
    lengths: Sequence[int],
    *,
    features: tuple[int, ...],
    shift: int,
    target_arrays: bool,
    concat: bool,
    window: Callable[[int], int] | None = None,
) -> dict[str, int]:
    """Assert every clause of the invariant over one epoch of ``batches``; return counts.

    Args:
        batches: the batcher under test (its current epoch is checked).
        lengths: steps of each series of the data (before any shift).
        features: feature shape of the data.
        shift: steps ahead of the target (0 for target arrays or no targets).
        target_arrays: targets are arrays holding ``-code``.
        concat: the series were joined end to end (``series_boundary="concat"``).
        window: the steps that batch ``k`` must have, when they vary (the test's own
            schedule); else every batch has ``sequence_length``.
    """
    B = batches.batch_size
    width = window or (lambda k: batches.sequence_length)
    widths: list[int] = []
    lengths = list(lengths)
    joined_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    has_targets = shift > 0 or target_arrays

    def joined(code: np.ndarray) -> np.ndarray:
        s, t = np.divmod(code, SERIES_STRIDE)
        return joined_start[np.maximum(s - 1, 0)] + t

    def successor(code: int) -> int:
        s, t = split(code)
        if t + 1 < lengths[s]:
            return code + 1
        return SERIES_STRIDE * (s + 2) if concat and s + 1 < len(lengths) else -1

    seen: list[np.ndarray] = []
    prev_last = np.full(B, -1)  # code of the last real step of the previous window, -1 if none
    prev_full = np.zeros(B, dtype=bool)
    n = len(batches)
    assert n >= 1
    for k in range(n):
        b = batches[k]
        W = width(k)
        widths.append(W)
        # 4. Shape: every batch has B rows and W steps.
        assert b.x.shape == (B, W, *features)
        assert b.reset.shape == b.series.shape == b.position.shape == (B,)
        assert b.reset.dtype == bool
        weight = b.sample_weight
        if batches.return_sequences or not has_targets:
            assert weight.shape == (B, W) and weight.dtype == np.float32
            step_weight = weight
        else:
            assert weight.shape == (B,) and weight.dtype == np.float32
            step_weight = None
        real = decode_real(b.x, features)
        held = real >= 0
        n_real = held.sum(axis=1)
        # 4. Padding only follows real steps; real steps have weight 1, padding 0 and zeros.
        assert np.array_equal(held, np.arange(W) < n_real[:, None]), "padding before data"
        assert not b.x[~held].any(), "padding is not zero"
        if step_weight is not None:
            assert np.array_equal(step_weight, held.astype(np.float32))
        else:
            assert np.array_equal(weight, (n_real == W).astype(np.float32))
        # Provenance names the first real step; idle streams are -1.
        first = real[:, 0]
        if concat:
            assert np.array_equal(b.series, np.where(n_real > 0, 0, -1))
            assert np.array_equal(b.position, np.where(n_real > 0, joined(first), -1))
        else:
            assert np.array_equal(b.series, np.where(n_real > 0, first // SERIES_STRIDE - 1, -1))
            assert np.array_equal(b.position, np.where(n_real > 0, first % SERIES_STRIDE, -1))
        # 2. Truth: steps inside a window are consecutive steps of the data.
        for i in np.flatnonzero(n_real).tolist():
            codes = real[i, : n_real[i]].tolist()
            for a, c in itertools.pairwise(codes):
                assert successor(a) == c, f"batch {k} stream {i}: {a} then {c}"
        check_targets(batches, b, real, held, features, shift, target_arrays, concat, lengths)
        # 1 and 5. Continuity and resets, no more and no fewer.
        continues = (
            held[:, 0]
            & prev_full
            & np.array(
                [
                    prev_last[i] >= 0 and successor(int(prev_last[i])) == int(first[i])
                    for i in range(B)
                ]
            )
        )
        if k == 0:
            assert np.array_equal(b.reset, held[:, 0]), "batch 0 must reset every stream with data"
        else:
            assert np.array_equal(b.reset, held[:, 0] & ~continues), f"resets of batch {k}"
        assert not (b.reset & ~held[:, 0]).any()
        seen.append(real[held])
        last_idx = np.maximum(n_real - 1, 0)
        prev_last = np.where(n_real > 0, real[np.arange(B), last_idx], -1)
        prev_full = n_real == W

    # 3. Exactly once: no step is an input twice, and the accounting adds up.
    used = np.concatenate(seen)
    assert len(np.unique(used)) == len(used), "a step is an input twice"
    a = batches.plan.accounting
    total = sum(lengths)
    assert a.total == total
    assert a.used + a.no_target + a.before_offset + a.dropped == total
    if batches.streams == range(batches.plan.batch_size):
        assert a.used == len(used)
        assert a.padded == sum(widths) * B - len(used)
    series_count = 1 if concat else len(lengths)
    assert a.no_target == shift * series_count
    if window is not None:
        check_varying_waste(batches, lengths, shift, used, n, window, seen[-1])
        return {"used": len(used), "batches": n}
    W = batches.sequence_length
    # 6. Little waste. A shuffled cut of one series leaves out W - 1 steps, before and after
    # it, so that every epoch has as many batches. Aligned to the end, the steps left over
    # come first, and the newest are used.
    newest = batches.align == "end"
    assert 0 <= (a.dropped if newest else a.before_offset) < W
    cut_slack = W - 1 if batches.shuffle and batches.plan.layout == "split" else 0
    one_series = concat or (len(lengths) == 1 and batches.n_series == 1)
    usable = np.array(lengths) - shift
    if batches.remainder == "pad":
        assert a.before_offset + a.dropped == cut_slack
    elif one_series:
        assert a.before_offset + a.dropped < batches.plan.batch_size * W + cut_slack
    else:
        assert (a.before_offset if newest else a.dropped) == int((usable % W).sum())
        assert (a.dropped if newest else a.before_offset) == 0
    if newest and batches.streams == range(batches.plan.batch_size):
        if one_series:
            # The cut ends `dropped` steps before the last step that has a target.
            assert joined(used).max() == sum(lengths) - shift - 1 - a.dropped
        else:
            last = SERIES_STRIDE * (np.arange(len(lengths)) + 1) + usable - 1
            assert np.isin(last, used).all(), "align='end' left out the newest step of a series"
    return {"used": len(used), "batches": n}


def decode_real(x: np.ndarray, features: tuple[int, ...]) -> np.ndarray:
    """Codes of ``x``'s steps, ``-1`` where a step is padding (all zeros)."""
    codes = decode(x, features)
    return np.where(codes == 0, -1, codes)


def split(code: int) -> tuple[int, int]:
    """(series, step) of a code."""
    s, t = divmod(int(code), SERIES_STRIDE)
    return s - 1, t


def check_targets(
    batches: seqbatch.StreamBatcher,
    b: seqbatch.Batch,
    real: np.ndarray,
    held: np.ndarray,
    features: tuple[int, ...],
    shift: int,
    target_arrays: bool,
    concat: bool,
    lengths: list[int],
) -> None:
    """2. Truth of y: the target of each real step, at that step's position."""
    if not (shift or target_arrays):
        assert b.y is None
        return
    assert b.y is not None
    if target_arrays:
        expected = -real
    else:
        expected = real.copy()
        for _ in range(shift):
            expected = np.vectorize(lambda c: next_code(c, lengths, concat))(expected)
    if batches.return_sequences:
        y = decode_targets(b.y, features, target_arrays)
        assert np.array_equal(np.where(held, y, -1), np.where(held, expected, -1))
        assert not b.y[~held].any()
    else:
        full = held.all(axis=1)
        W = held.shape[1]
        y = decode_targets(b.y[:, None], features, target_arrays)[:, 0]
        assert np.array_equal(y[full], expected[full, W - 1])
        assert not b.y[~full].any()


def decode_targets(y: np.ndarray, features: tuple[int, ...], negated: bool) -> np.ndarray:
    return -decode(-y, features) if negated else decode(y, features)


def next_code(code: int, lengths: list[int], concat: bool) -> int:
    if code < 0:
        return code
    s, t = split(code)
    if t + 1 < lengths[s]:
        return code + 1
    assert concat and s + 1 < len(lengths), "a target past the end of the data"
    return SERIES_STRIDE * (s + 2)


def check_packed_epoch(
    batches: seqbatch.StreamBatcher,
    lengths: Sequence[int],
    *,
    features: tuple[int, ...],
    shift: int,
    target_arrays: bool,
    single: bool,
    window: Callable[[int], int] | None = None,
) -> dict[str, int]:
    """Assert the invariant of packed batches (docs/concepts.md, "The invariant") over one epoch.

    Everything is decoded from what a user sees: ``x``, ``y``, ``sample_weight`` and the
    per-window and per-step provenance and resets of each batch. Each stream is walked step by
    step across the batches of the epoch.

    Args:
        batches: a batcher with ``series_boundary="pack"`` (its current epoch is checked).
        lengths: steps of each series of the data (before any shift).
        features: feature shape of the data.
        shift: steps ahead of the target (0 for target arrays or no targets).
        target_arrays: targets are arrays holding ``-code``.
        single: the data was one array, cut into streams.
        window: the steps that batch ``k`` must have, when they vary (the test's own
            schedule); else every batch has ``sequence_length``.
    """
    B = batches.batch_size
    width = window or (lambda k: batches.sequence_length)
    widths: list[int] = []
    usable = [n - shift for n in lengths]
    has_targets = shift > 0 or target_arrays
    prev = np.full(B, -1)  # code of each stream's last real step so far, -1 before its first
    ended = np.zeros(B, dtype=bool)  # the stream has shown padding: it holds no more data
    seen: list[np.ndarray] = []
    n = len(batches)
    assert n >= 1
    for k in range(n):
        b = batches[k]
        W = width(k)
        widths.append(W)
        assert b.x.shape == (B, W, *features)
        assert b.reset.shape == b.series.shape == b.position.shape == (B,)
        for steps in (b.step_reset, b.step_series, b.step_position):
            assert steps is not None and steps.shape == (B, W)
        assert b.step_reset.dtype == bool and b.step_series.dtype == np.int64
        real = decode_real(b.x, features)
        held = real >= 0
        n_real = held.sum(axis=1)
        # Padding only at a stream's end: it ends a window, and no data follows it.
        assert np.array_equal(held, np.arange(W) < n_real[:, None]), "padding before data"
        assert not (ended & (n_real > 0)).any(), f"batch {k}: data after a stream's padding"
        assert not b.x[~held].any(), "padding is not zero"
        ended |= n_real < W
        if batches.remainder == "drop":
            assert set(n_real.tolist()) <= {0, W}, "remainder='drop': a window is partial"
        if batches.return_sequences or not has_targets:
            assert b.sample_weight.shape == (B, W) and b.sample_weight.dtype == np.float32
            assert np.array_equal(b.sample_weight, held.astype(np.float32))
        else:
            assert np.array_equal(b.sample_weight, held[:, -1].astype(np.float32))
        # Provenance of every step, and of each window's first step.
        s, t = np.divmod(real, SERIES_STRIDE)
        assert np.array_equal(b.step_series, np.where(held, s - 1, -1))
        assert np.array_equal(b.step_position, np.where(held, t, -1))
        assert np.array_equal(b.series, b.step_series[:, 0])
        assert np.array_equal(b.position, b.step_position[:, 0])
        assert np.array_equal(b.reset, b.step_reset[:, 0])
        assert not (b.step_reset & ~held).any(), "a flag on padding"
        # Continuity step by step, across batches too: a step continues the stream's previous
        # step unless it is flagged; a flag follows only the last usable step of a series and
        # starts a series at its step 0 (a stream cut from one array starts anywhere).
        for j in range(W):
            for i in np.flatnonzero(held[:, j]).tolist():
                code, flag = int(real[i, j]), bool(b.step_reset[i, j])
                series, step = split(code)
                assert step < usable[series], f"batch {k} stream {i}: {code} has no target"
                if prev[i] < 0:
                    assert flag, f"batch {k} stream {i}: the stream's first step is not flagged"
                    assert single or step == 0, f"batch {k} stream {i}: a series starts at {step}"
                else:
                    p_series, p_step = split(int(prev[i]))
                    p_ended = p_step + 1 == usable[p_series]
                    if flag:
                        assert p_ended, f"batch {k} stream {i}: reset after {prev[i]}, mid-series"
                        assert step == 0, f"batch {k} stream {i}: a series starts at {step}"
                    else:
                        assert not p_ended and code == prev[i] + 1, (
                            f"batch {k} stream {i}: {prev[i]} then {code}, not flagged"
                        )
                prev[i] = code
        check_targets(batches, b, real, held, features, shift, target_arrays, False, list(lengths))
        seen.append(real[held])

    used = np.concatenate(seen)
    assert len(np.unique(used)) == len(used), "a step is an input twice"
    a = batches.plan.accounting
    assert a.total == sum(lengths)
    assert a.used + a.no_target + a.before_offset + a.dropped == a.total
    assert a.no_target == shift * len(lengths)
    if batches.streams == range(batches.plan.batch_size):
        assert a.used == len(used)
        assert a.padded == sum(widths) * B - len(used)
        if batches.remainder == "pad" and not single:
            every = {SERIES_STRIDE * (s + 1) + t for s, u in enumerate(usable) for t in range(u)}
            assert set(used.tolist()) == every, "remainder='pad' left out a step"
    if window is not None:
        check_varying_waste(batches, lengths, shift, used, n, window, seen[-1])
        return {"used": len(used), "batches": n}
    W = batches.sequence_length
    assert 0 <= a.before_offset < W
    # A shuffled cut of one series leaves out W - 1 steps, before and after it.
    cut_slack = W - 1 if batches.shuffle and batches.plan.layout == "split" else 0
    if batches.remainder == "pad":
        assert a.before_offset + a.dropped == cut_slack
    else:
        assert a.before_offset + a.dropped < batches.plan.batch_size * W + cut_slack
    return {"used": len(used), "batches": n}


def check_varying_waste(
    batches: seqbatch.StreamBatcher,
    lengths: Sequence[int],
    shift: int,
    used: np.ndarray,
    n: int,
    window: Callable[[int], int],
    real_last: np.ndarray,
) -> None:
    """6. Little waste, for window lengths that vary, and the number of batches.

    The epoch ends with the last batch that holds data (``len()`` counts no idle batch);
    with ``remainder="pad"`` every step that has a target is used but for a shuffled cut's
    slack (``length(0) - 1`` steps of one series); with ``"drop"`` what is left out is
    counted, and the steps of one long series left out are fewer than the next window
    (``length(n)``, after the last batch) would need in every stream.
    """
    a = batches.plan.accounting
    if batches.streams == range(batches.plan.batch_size):
        assert real_last.size > 0, "the last batch of the epoch holds no data"
    first = window(0)
    split = batches.plan.layout == "split"
    slack = first - 1 if batches.shuffle and split else 0
    if batches.remainder == "pad":
        assert a.before_offset + a.dropped == slack
        if not split and batches.streams == range(batches.plan.batch_size):
            usable = [m - shift for m in lengths]
            every = {SERIES_STRIDE * (s + 1) + t for s, u in enumerate(usable) for t in range(u)}
            assert set(used.tolist()) == every, "remainder='pad' left out a step"
    elif split:
        assert a.before_offset + a.dropped < batches.plan.batch_size * window(n) + slack
    if batches.align == "end" and batches.streams == range(batches.plan.batch_size):
        if split:
            joined = np.cumsum([0, *lengths])[used // SERIES_STRIDE - 1] + used % SERIES_STRIDE
            assert joined.max() == sum(lengths) - shift - 1 - a.dropped
        else:
            # A series keeps its newest step, unless it fills no window and is left out.
            for s, m in enumerate(lengths):
                mine = used[used // SERIES_STRIDE == s + 1]
                assert mine.size == 0 or mine.max() % SERIES_STRIDE == m - shift - 1
    assert len(batches) == n
