"""The grid: batch size x window x features, numpy and tf.data against their peers.

Every cell times, on one in-memory float32 series: zero-copy view batches; gathered batches
(``remainder="pad"``, streams of unequal length) against ``np.copyto`` of the same windows;
and the tf.data adapter against both tf.data peers of :mod:`benchmarks.tf_path`. Cells whose
``x`` batch exceeds the size's byte cap are skipped, and the table says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.data import series
from benchmarks.numpy_path import COPY_TARGET_MIN_BYTES, copyto_epoch, epoch
from benchmarks.report import Row, figure, markdown_table
from benchmarks.sizes import Sizes
from benchmarks.tf_path import (
    FLOOR,
    RANGE_MAP,
    SEQBATCH,
    TARGETS,
    TIMESERIES,
    floor,
    per_batch,
    pipelines,
)
from benchmarks.timing import medians
from seqbatch import StreamBatcher

_DATA_CAP_BYTES = 256 * 2**20
_MIN_BATCHES = 4


@dataclass(frozen=True)
class Cell:
    """The figures of one grid cell; all None when the cell was skipped.

    Attributes:
        batch_size, width, features: the cell.
        x_bytes: bytes of one ``x`` batch.
        view_us: µs per zero-copy view batch.
        copy_gbps: bandwidth of gathered batches (``x`` and ``y``), GB/s.
        copy_ratio: gathered batches' bandwidth over ``np.copyto`` of the same windows.
        tf_us: µs per batch of the tf.data adapter (steady, see :mod:`benchmarks.tf_path`).
        tf_ratios: peer time over seqbatch time, by tf.data peer.
        floor_us: µs per batch of the tf.data floor (:func:`benchmarks.tf_path.floor`).
        floor_ratio: ``timeseries_dataset_from_array``'s time over the floor's: the highest
            ratio to it that any tf.data pipeline could show in this cell.
    """

    batch_size: int
    width: int
    features: int
    x_bytes: int
    view_us: float | None = None
    copy_gbps: float | None = None
    copy_ratio: float | None = None
    tf_us: float | None = None
    tf_ratios: dict[str, float] | None = None
    floor_us: float | None = None
    floor_ratio: float | None = None


def measure(batch_size: int, width: int, features: int, sizes: Sizes) -> Cell:
    """Time one cell, or return it empty when its ``x`` batch is above the byte cap.

    A cell has ``sizes.grid_batches`` batches, fewer (but at least 4) where their data
    would pass 256 MB.
    """
    B, W, F = batch_size, width, features
    x_bytes = B * W * F * 4
    if x_bytes > sizes.grid_cap_bytes:
        return Cell(B, W, F, x_bytes)
    n = max(_MIN_BATCHES, min(sizes.grid_batches, _DATA_CAP_BYTES // x_bytes))
    steps = n * B * W
    data = series(steps + 1, F)
    shape = dict(batch_size=B, sequence_length=W)
    view = StreamBatcher(data, **shape)
    gathered = StreamBatcher(data[: steps - B // 2 + 1], remainder="pad", **shape)
    runs = {
        "view": epoch(view),
        "gathered": epoch(gathered),
        "np.copyto": copyto_epoch(data, (B, W), n, contiguous=False),
    }
    t = medians(runs, sizes.repeats)
    datasets = {**pipelines(data, B, W, n), FLOOR: floor(data, B, W, n)}
    tf_times = {
        name: steady
        for name, (steady, _) in per_batch(datasets, sizes.grid_batches, sizes.repeats).items()
    }
    return Cell(
        B,
        W,
        F,
        x_bytes,
        view_us=t["view"] / n * 1e6,
        copy_gbps=2 * x_bytes * n / t["gathered"] / 1e9,
        copy_ratio=t["np.copyto"] / t["gathered"],
        tf_us=tf_times[SEQBATCH] * 1e6,
        tf_ratios={peer: tf_times[peer] / tf_times[SEQBATCH] for peer in TARGETS},
        floor_us=tf_times[FLOOR] * 1e6,
        floor_ratio=tf_times[TIMESERIES] / tf_times[FLOOR],
    )


def run(sizes: Sizes) -> list[Cell]:
    """Every cell of the grid, in order of batch size, window, features."""
    axes = (sizes.grid_batch_sizes, sizes.grid_windows, sizes.grid_features)
    return [measure(B, W, F, sizes) for B, W, F in itertools.product(*axes)]


def table(cells: Sequence[Cell]) -> str:
    """The grid as a markdown table; a skipped cell says why."""
    header = [
        "B",
        "W",
        "F",
        "x/batch",
        "view",
        "copied",
        "vs np.copyto",
        "tf.data",
        f"vs {TIMESERIES}",
        f"vs {RANGE_MAP}",
        "tf.data floor",
        f"floor vs {TIMESERIES}",
    ]
    body = []
    for c in cells:
        size = figure(c.x_bytes / 1024, "KB")
        if c.view_us is None:
            body.append(
                [
                    str(c.batch_size),
                    str(c.width),
                    str(c.features),
                    size,
                    "skipped: above the byte cap",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        assert c.copy_gbps is not None and c.tf_us is not None and c.tf_ratios is not None
        body.append(
            [
                str(c.batch_size),
                str(c.width),
                str(c.features),
                size,
                figure(c.view_us, "us"),
                figure(c.copy_gbps, "GB/s"),
                f"{c.copy_ratio:.2f}x",
                figure(c.tf_us, "us"),
                f"{c.tf_ratios[TIMESERIES]:.1f}x",
                f"{c.tf_ratios[RANGE_MAP]:.2f}x",
                figure(c.floor_us or 0.0, "us"),
                f"{c.floor_ratio or 0.0:.1f}x",
            ]
        )
    return markdown_table(header, body)


def summary(cells: Sequence[Cell]) -> list[Row]:
    """Rows for the targets table: the worst cell of the grid for each ratio target."""
    done = [c for c in cells if c.tf_ratios is not None]
    rows = []
    large = [c for c in done if 2 * c.x_bytes >= COPY_TARGET_MIN_BYTES and c.copy_ratio is not None]
    if large:
        worst = min(large, key=lambda c: c.copy_ratio or 0.0)
        rows.append(
            _worst_row(
                "numpy copies vs np.copyto, same windows (x+y >= 64 KB)",
                worst,
                worst.copy_ratio or 0.0,
                0.8,
                len(large),
            )
        )
    for peer, target in TARGETS.items():
        worst = min(done, key=lambda c: (c.tf_ratios or {})[peer])
        rows.append(
            _worst_row(
                f"tf.data vs {peer}", worst, (worst.tf_ratios or {})[peer], target, len(done)
            )
        )
    return rows


def _worst_row(what: str, cell: Cell, ratio: float, target: float, cells: int) -> Row:
    return Row(
        "grid",
        f"{what}: worst of {cells} cells (B={cell.batch_size}, W={cell.width}, F={cell.features})",
        ratio,
        "x",
        ratio=ratio,
        target=f">= {target:g}x in every cell",
        met=ratio >= target,
    )
