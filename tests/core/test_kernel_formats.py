"""seq_idx, cu_seqlens and position_ids: the reset flags in the formats kernels take.

Each format is proven by use: the batches of an epoch are run, one after another with each
row's state carried, through numpy recurrences driven by that format alone (``cu_seqlens``
over the flattened batch, ``seq_idx`` over it, ``position_ids`` row by row), and every real
step's output must equal the recurrence run over its series alone from zeros
(``tests.recurrences``). The data encodes its own position (``tests.encoded``), so the
expected outputs come from the data, never from the batches' own provenance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import seqbatch
from seqbatch.jax import StreamSource
from seqbatch.torch import TensorBatch
from tests.encoded import SERIES_STRIDE, decode_real, encoded_series
from tests.recurrences import diagonal, linear_attention

FEATURES = (2,)
SCALE = 1.0 / SERIES_STRIDE
A = np.array([0.9, -0.6, 0.3])
B = np.array([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]])
UNITS = len(A)
RNG = np.random.default_rng(0)
WQ, WK, WV = (RNG.normal(size=(2, 2)) for _ in range(3))


@dataclass(frozen=True)
class Case:
    lengths: list[int]
    boundary: str  # "reset", "pack", "concat", or "split" (one series cut into streams)
    batch_size: int
    sequence_length: int
    remainder: str
    targets: str | None
    shuffle: bool
    seed: int
    epoch: int

    def batcher(self) -> seqbatch.StreamBatcher:
        data: Any = [encoded_series(s, n, FEATURES, "float64") for s, n in enumerate(self.lengths)]
        boundary = self.boundary
        if boundary == "split":
            data, boundary = data[0], "reset"
        return seqbatch.StreamBatcher(
            data,
            self.targets,
            batch_size=self.batch_size,
            sequence_length=self.sequence_length,
            remainder=self.remainder,
            series_boundary=boundary,
            shuffle=self.shuffle,
            seed=self.seed,
        )

    def one_series(self) -> bool:
        return self.boundary in ("split", "concat")


@st.composite
def cases(
    draw: st.DrawFn, boundaries: tuple[str, ...] = ("reset", "pack", "concat", "split")
) -> Case:
    boundary = draw(st.sampled_from(boundaries))
    n_series = 1 if boundary == "split" else draw(st.integers(1, 7))
    return Case(
        lengths=draw(st.lists(st.integers(2, 30), min_size=n_series, max_size=n_series)),
        boundary=boundary,
        batch_size=draw(st.integers(1, 4)),
        sequence_length=draw(st.integers(1, 6)),
        remainder=draw(st.sampled_from(["drop", "pad"])),
        targets=draw(st.sampled_from([None, "next"])),
        shuffle=draw(st.booleans()),
        seed=draw(st.integers(0, 100)),
        epoch=draw(st.integers(0, 2)),
    )


def made(case: Case) -> seqbatch.StreamBatcher:
    try:
        batches = case.batcher()
    except ValueError:  # data that cannot fill the streams: refused, nothing to check
        assume(False)
        raise
    batches.set_epoch(case.epoch)
    return batches


class Alone:
    """Each real step's expected output: its series (a stream's segment, for one series cut
    into streams) run alone from zeros, computed from the data the step decodes to."""

    def __init__(self, case: Case, first: seqbatch.Batch) -> None:
        self.case = case
        data = [encoded_series(s, n, FEATURES, "float64") for s, n in enumerate(case.lengths)]
        self.data = data
        self.joined = np.concatenate(data)
        self.joined_start = np.concatenate(([0], np.cumsum(case.lengths)[:-1]))
        # One series cut into streams: stream i's segment starts at its first step.
        self.start = None
        if case.one_series():
            self.start = self.index(decode_real(first.x, FEATURES)[:, 0])
        self.cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def index(self, code: np.ndarray) -> np.ndarray:
        """The step of the joined series (one series: of that series) a code decodes to."""
        s, t = np.divmod(code, SERIES_STRIDE)
        return self.joined_start[s - 1] + t

    def position(self, code: np.ndarray) -> np.ndarray:
        """The step within its series: of the joined series with concat."""
        if self.case.boundary == "concat":
            return self.index(code)
        return code % SERIES_STRIDE

    def outputs(self, stream: int, code: int) -> tuple[np.ndarray, np.ndarray]:
        """(diagonal, linear attention) outputs at the step that ``code`` decodes to."""
        if self.start is not None:
            lo, at = int(self.start[stream]), int(self.index(np.array(code)))
            key, steps = (lo, 0), self.joined[lo:]
            i = at - lo
        else:
            s, t = divmod(code, SERIES_STRIDE)
            key, steps, i = (s - 1, 1), self.data[s - 1], t
        if key not in self.cache:
            x = steps * SCALE
            self.cache[key] = (diagonal(x, A, B)[0], linear_attention(x @ WQ, x @ WK, x @ WV)[0])
        d, la = self.cache[key]
        return d[i], la[i]


def step_diagonal(h: np.ndarray, x: np.ndarray) -> np.ndarray:
    return A * h + x * SCALE @ B


def step_attention(s: np.ndarray, x: np.ndarray) -> np.ndarray:
    x = x * SCALE
    return s + np.outer(x @ WK, x @ WV)


def read_attention(s: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x * SCALE @ WQ) @ s


RECURRENCES = {
    "diagonal": (step_diagonal, lambda h, x: h, np.zeros(UNITS)),
    "attention": (step_attention, read_attention, np.zeros((2, 2))),
}


def by_cu_seqlens(b: seqbatch.Batch, carried: np.ndarray, kind: str) -> tuple[Any, Any]:
    """Run the flattened batch run by run: a row's first run from the row's carried state
    unless reset, every other run from zeros; the row keeps the state of its last real run."""
    step, read, zero = RECURRENCES[kind]
    rows, width = b.sample_weight.shape
    x = b.x.reshape(rows * width, -1)
    real = (b.sample_weight > 0).ravel()
    out = np.zeros((rows * width, *read(zero, x[0]).shape))
    new = carried.copy()
    cu = b.cu_seqlens.tolist()
    for lo, hi in itertools.pairwise(cu):
        row = lo // width
        h = carried[row] if lo % width == 0 and not b.reset[row] else zero
        for i in range(lo, hi):
            h = step(h, x[i])
            out[i] = read(h, x[i])
        if real[lo]:
            new[row] = h
    return out.reshape(rows, width, -1), new


def by_seq_idx(b: seqbatch.Batch, carried: np.ndarray, kind: str) -> tuple[Any, Any]:
    """Run the flattened batch step by step, starting anew wherever ``seq_idx`` changes."""
    step, read, zero = RECURRENCES[kind]
    rows, width = b.sample_weight.shape
    x = b.x.reshape(rows * width, -1)
    idx = b.seq_idx.ravel()
    real = (b.sample_weight > 0).ravel()
    out = np.zeros((rows * width, *read(zero, x[0]).shape))
    new = carried.copy()
    h = zero
    for i in range(rows * width):
        row, t = divmod(i, width)
        if i == 0 or idx[i] != idx[i - 1]:
            h = carried[row] if t == 0 and not b.reset[row] else zero
        h = step(h, x[i])
        out[i] = read(h, x[i])
        if real[i]:
            new[row] = h
    return out.reshape(rows, width, -1), new


def by_position_ids(b: seqbatch.Batch, carried: np.ndarray, kind: str) -> tuple[Any, Any]:
    """Row by row, starting anew at every real step at position 0 (and where ``reset``)."""
    step, read, zero = RECURRENCES[kind]
    rows, width = b.sample_weight.shape
    real = b.sample_weight > 0
    out = np.zeros((rows, width, *read(zero, b.x[0, 0]).shape))
    new = carried.copy()
    for row in range(rows):
        h = zero if b.reset[row] else carried[row]
        for t in range(width):
            if not real[row, t]:
                continue
            if b.position_ids[row, t] == 0:
                h = zero
            h = step(h, b.x[row, t])
            out[row, t] = read(h, b.x[row, t])
        new[row] = h
    return out.reshape(rows, width, -1), new


RUNNERS = {"cu_seqlens": by_cu_seqlens, "seq_idx": by_seq_idx, "position_ids": by_position_ids}


def check_epoch(batches: seqbatch.StreamBatcher, case: Case) -> int:
    """Run every format over the epoch, state carried; assert each real step; count them."""
    epoch = list(batches)
    alone = Alone(case, epoch[0])
    rows = case.batch_size
    noise = np.random.default_rng(1)  # a carried state that batch 0's resets must clear
    carried = {
        (fmt, kind): noise.normal(size=(rows, *zero.shape))
        for fmt in RUNNERS
        for kind, (_, _, zero) in RECURRENCES.items()
    }
    checked = 0
    for k, b in enumerate(epoch):
        check_shapes(b, alone, k)
        codes = decode_real(b.x, FEATURES)
        expected = {
            kind: np.zeros((rows, b.x.shape[1], *(z.shape if kind == "diagonal" else (2,))))
            for kind, (_, _, z) in RECURRENCES.items()
        }
        for i, t in zip(*np.nonzero(codes >= 0), strict=True):
            expected["diagonal"][i, t], expected["attention"][i, t] = alone.outputs(
                int(i), int(codes[i, t])
            )
        real = codes >= 0
        checked += int(real.sum())
        for (fmt, kind), state in carried.items():
            out, carried[fmt, kind] = RUNNERS[fmt](b, state, kind)
            np.testing.assert_allclose(
                out[real],
                expected[kind].reshape(out.shape)[real],
                rtol=1e-9,
                atol=1e-9,
                err_msg=f"{fmt} ({kind}), batch {k}",
            )
    return checked


def check_shapes(b: seqbatch.Batch, alone: Alone, k: int) -> None:
    """The formats' own rules, read against the decoded data."""
    rows, width = b.sample_weight.shape
    assert b.seq_idx.shape == (rows, width) and b.seq_idx.dtype == np.int32
    assert b.position_ids.shape == (rows, width) and b.position_ids.dtype == np.int64
    cu = b.cu_seqlens
    assert cu.dtype == np.int32 and cu[0] == 0 and cu[-1] == rows * width
    assert (np.diff(cu) > 0).all()
    assert set(range(0, rows * width + 1, width)) <= set(cu.tolist()), "a run crosses rows"
    codes = decode_real(b.x, FEATURES)
    real = codes >= 0
    # position_ids: the step within its series on real steps; 0, 1, ... over the padding.
    np.testing.assert_array_equal(
        b.position_ids[real], alone.position(codes[real]), err_msg=f"batch {k}"
    )
    pad_start = real.sum(1, keepdims=True)
    np.testing.assert_array_equal(
        b.position_ids[~real], (np.arange(width) - pad_start)[~real], err_msg=f"batch {k}"
    )
    # seq_idx changes along a row exactly where a series starts or the padding begins.
    key = alone.index(np.where(real, codes, SERIES_STRIDE))
    goes_on = real[:, 1:] & real[:, :-1] & (np.diff(key, axis=1) == 1)
    if not alone.case.one_series():
        series = codes // SERIES_STRIDE
        goes_on &= series[:, 1:] == series[:, :-1]
    goes_on |= ~real[:, 1:] & ~real[:, :-1]
    np.testing.assert_array_equal(
        b.seq_idx[:, 1:] == b.seq_idx[:, :-1], goes_on, err_msg=f"batch {k}"
    )
    # Numbered over the whole batch: rows never share a value.
    assert (b.seq_idx[1:, 0] > b.seq_idx[:-1, -1]).all()


@settings(max_examples=40)
@given(cases())
def test_every_format_runs_each_series_as_if_alone(case: Case) -> None:
    batches = made(case)
    assume(len(batches) > 0)
    check_epoch(batches, case)


@pytest.mark.parametrize("boundary", ["reset", "pack", "concat", "split"])
def test_each_layout_with_resets_inside_windows_and_padding(boundary: str) -> None:
    """Fixed cases a reader can follow, each with carried state, resets and padding."""
    lengths = [13, 9, 7, 6, 4, 3, 2] if boundary != "split" else [41]
    case = Case(lengths, boundary, 3, 4, "pad", "next", True, 3, 1)
    batches = made(case)
    epoch = list(batches)
    if boundary == "reset":
        assert sum(int(b.reset.sum()) for b in epoch[1:]) > 0, "no reset after batch 0"
    if boundary == "pack":
        assert any(b.step_reset[:, 1:].any() for b in epoch), "no reset inside a window"
    assert any((b.sample_weight == 0).any() for b in epoch), "no padding"
    a = batches.plan.accounting
    assert check_epoch(batches, case) == a.total - a.no_target - a.before_offset - a.dropped


def test_a_table_to_read_by_eye() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(6), np.arange(3), np.arange(2)], targets=None, batch_size=2,
        sequence_length=4, remainder="pad", series_boundary="pack",
    )  # fmt: skip
    b = batches[1]
    assert b.step_series.tolist() == [[0, 0, -1, -1], [2, -1, -1, -1]]
    assert b.seq_idx.tolist() == [[0, 0, 1, 1], [2, 3, 3, 3]]
    assert b.cu_seqlens.tolist() == [0, 2, 4, 5, 8]
    assert b.position_ids.tolist() == [[4, 5, 0, 1], [1, 0, 1, 2]]
    b = batches[0]
    assert b.step_series.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2]]
    assert b.seq_idx.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2]]
    assert b.cu_seqlens.tolist() == [0, 4, 7, 8]


def test_return_sequences_false_is_refused_where_padding_cannot_be_told() -> None:
    batches = seqbatch.StreamBatcher(
        [np.arange(9.0), np.arange(5.0)], batch_size=2, sequence_length=3, remainder="pad",
        return_sequences=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"`sample_weight` must hold one weight per step"):
        _ = batches[0].seq_idx
    packed = seqbatch.StreamBatcher(
        [np.arange(9.0), np.arange(5.0)], batch_size=2, sequence_length=3, remainder="pad",
        return_sequences=False, series_boundary="pack",
    )  # fmt: skip
    assert packed[1].seq_idx.tolist() == [[0, 0, 0], [1, 2, 2]]


def test_the_tensor_batch_and_the_jax_record_give_the_same_formats() -> None:
    batches = seqbatch.StreamBatcher(
        [encoded_series(s, n, FEATURES, "float32") for s, n in enumerate([11, 7, 5, 3])],
        batch_size=2, sequence_length=4, remainder="pad", series_boundary="pack",
    )  # fmt: skip
    source = StreamSource(batches, kernel_formats=True)
    assert "seq_idx" not in StreamSource(batches)[0]
    for k, b in enumerate(batches):
        tb = TensorBatch.from_batch(b)
        moved = tb.to("cpu")
        record = source[k]
        for name in ("seq_idx", "cu_seqlens", "position_ids"):
            want = getattr(b, name)
            got = getattr(tb, name)
            assert got.dtype == torch.from_numpy(want).dtype, name
            np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
            np.testing.assert_array_equal(getattr(moved, name).numpy(), want, err_msg=name)
            np.testing.assert_array_equal(record[name], want, err_msg=name)
    # Computed once, and carried along when the batch moves.
    assert tb.seq_idx is tb.seq_idx
    assert tb.to("cpu").__dict__["_runs"][0] is not None
