"""Many short series: a batch against a numpy gather of the same windows, and the build.

``python -m benchmarks.many_series [--quick]`` runs this section alone.

The case of recurrent language models: documents of 10 to 1,000 tokens (``uint32``, lengths
drawn log-uniformly), ``targets="next"``, laid out as ``"reset"``, ``"concat"`` and ``"pack"``.
The peer is what any loader of those windows must do at least: one fancy-index gather of
``x`` and ``y`` from the documents held end to end in one flat array, given the windows'
provenance (series and step of every row, or of every step when packed), read off the batches
beforehand and not timed. Both read 64 consecutive batches, in the order of training;
seqbatch starts each timing with none of them looked up. The packed peer also makes the ``(B, W)`` reset flags. A second case
has 16 float32 features per step, at the headline ``32 x 100`` size. The build rows time
``StreamBatcher.from_offsets`` on a flat token array against the list of views of the same
documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.report import Row, run_alone, speed_ratio
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher

BOUNDARIES = ("reset", "concat", "pack")
TARGET_RATIO = {"reset": 1.5, "concat": 1.5, "pack": 2.0}
TIMED_BATCHES = 64


def lengths(count: int, lo: int, hi: int, seed: int = 0) -> np.ndarray:
    """``count`` log-uniform lengths in ``[lo, hi]``."""
    drawn = np.exp(np.random.default_rng(seed).uniform(np.log(lo), np.log(hi + 1), count))
    return np.clip(drawn.astype(np.int64), lo, hi)


def corpus(n: np.ndarray, features: int) -> np.ndarray:
    """The documents end to end: ``uint32`` tokens, or float32 ``(N, features)`` steps."""
    rng = np.random.default_rng(1)
    total = int(n.sum())
    if features == 0:
        return rng.integers(0, 50_000, total, dtype=np.uint32)
    return rng.random((total, features), dtype=np.float32)


def _gather(flat: np.ndarray, index: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, ...]:
    """``x`` and ``y`` (one step ahead) at ``index`` in one gather, zero where not ``real``."""
    both = flat[np.stack((index, index + 1))]
    both[:, ~real] = 0
    return both[0], both[1]


def peer(
    batches: StreamBatcher, flat: np.ndarray, starts: np.ndarray, ks: list[int]
) -> Callable[[], None]:
    """A run that gathers the windows of batches ``ks`` from ``flat`` with numpy alone."""
    W = batches.sequence_length
    cols = np.arange(W)
    packed = batches.series_boundary == "pack"
    provenance = []
    for k in ks:
        b = batches[k]
        if packed:
            provenance.append((b.step_series, b.step_position))
        else:
            real = b.sample_weight > 0
            provenance.append((b.series, b.position, real))
    last = len(flat) - 2

    def run() -> None:
        for p in provenance:
            if packed:
                series, position = p
                real = series >= 0
                index = np.minimum(starts[series] + position, last)
                _gather(flat, index, real)
                _ = real & (position == 0)  # the reset flags
            else:
                series, position, real = p
                index = np.minimum((starts[series] + position)[:, None] + cols, last)
                _gather(flat, index, real)

    return run


def seqbatch_run(batches: StreamBatcher, ks: list[int]) -> Callable[[], None]:
    """A run that reads batches ``ks`` in order, as a training loop does, each time from the
    plan's lookups of none of them (it looks runs of batches up ahead as they are read)."""
    plan = batches.plan

    def run() -> None:
        plan.__dict__.pop("_run_cache", None)
        for k in ks:
            batches[k]

    return run


def _batch_rows(sizes: Sizes, count: int, features: int, B: int, W: int) -> list[Row]:
    n = lengths(count, *sizes.packing_lengths)
    flat = corpus(n, features)
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    docs = np.split(flat, np.cumsum(n)[:-1])
    what = "uint32 tokens" if features == 0 else f"{features} float32 features"
    lo, hi = sizes.packing_lengths
    rows = []
    for boundary in BOUNDARIES:
        batches = StreamBatcher(
            docs,
            batch_size=B,
            sequence_length=W,
            remainder="pad",
            series_boundary=boundary,  # type: ignore[arg-type]
        )
        # Consecutive batches from a third of the way into the epoch: the order of training.
        first = len(batches) // 3
        ks = list(range(first, min(first + TIMED_BATCHES, len(batches))))
        seconds = medians(
            {
                "seqbatch": seqbatch_run(batches, ks),
                "gather": peer(batches, flat, np.asarray(starts), ks),
            },
            sizes.repeats,
        )
        rows.append(
            Row(
                "many series",
                f"{boundary!r} batch, {count} documents of {lo} to {hi} steps, {what}, {B} x {W}",
                seconds["seqbatch"] / len(ks) * 1e6,
                "us/batch",
                peer="numpy gather",
                peer_value=seconds["gather"] / len(ks) * 1e6,
                ratio=speed_ratio(seconds["seqbatch"], seconds["gather"]),
                target=f"<= {TARGET_RATIO[boundary]:g}x the gather",
                met=seconds["seqbatch"] <= TARGET_RATIO[boundary] * seconds["gather"],
            )
        )
    return rows


def _build_rows(count: int) -> list[Row]:
    """Build time of ``count`` documents held in one flat array: ``from_offsets`` against
    the list of views that a batcher needed before it."""
    n = lengths(count, 10, 1000)
    flat = corpus(n, 0)
    rows = []
    for boundary in ("reset", "pack"):
        kw = {"batch_size": 64, "sequence_length": 256, "remainder": "pad"}
        begin = time.perf_counter()
        StreamBatcher.from_offsets(flat, lengths=n, series_boundary=boundary, **kw)  # type: ignore[arg-type]
        offsets = time.perf_counter() - begin
        begin = time.perf_counter()
        StreamBatcher(np.split(flat, np.cumsum(n)[:-1]), series_boundary=boundary, **kw)  # type: ignore[arg-type]
        views = time.perf_counter() - begin
        big = count >= 10**6
        rows.append(
            Row(
                "many series",
                f"build {count} documents, {boundary!r}: from_offsets",
                offsets,
                "s",
                peer="a list of views",
                peer_value=views,
                ratio=speed_ratio(offsets, views),
                target="< 1 s for 1M documents" if big else "",
                met=offsets < 1.0 if big else None,
            )
        )
    return rows


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """The batch rows of both cases, then the build rows."""
    rows = _batch_rows(sizes, sizes.documents, 0, *sizes.documents_batch)
    rows += _batch_rows(
        sizes, sizes.documents // 10, sizes.features, sizes.batch_size, sizes.sequence_length
    )
    return rows + _build_rows(sizes.build_documents)


if __name__ == "__main__":
    run_alone(run)
