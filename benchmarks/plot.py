"""The figure of the results page: the grid's ratios, and the cost per batch against length."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.grid import Cell
from benchmarks.numpy_path import COPY_TARGET_RATIO
from benchmarks.scaling import FLAT_TOLERANCE
from benchmarks.tf_path import RANGE_MAP, TARGETS, TIMESERIES


def save(cells: Sequence[Cell], scaling: dict[str, dict[int, float]], path: Path) -> Path:
    """Draw both panels and save them to ``path`` (the format follows its suffix).

    Left: for every grid cell, seqbatch's ratio to each peer against the size of the ``x``
    batch, with the targets as dashed lines. Right: µs per batch against series length,
    with the band of the flatness target around the shortest series.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    # Fixed ids and no date: the same results give the same file.
    plt.rcParams["svg.hashsalt"] = "seqbatch"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    done = [c for c in cells if c.tf_ratios is not None]
    series = {
        "numpy copies / np.copyto (same windows)": (
            [c.copy_ratio for c in done],
            COPY_TARGET_RATIO,
        ),
        f"tf.data / {TIMESERIES}": ([c.tf_ratios[TIMESERIES] for c in done], TARGETS[TIMESERIES]),
        f"tf.data / {RANGE_MAP}": ([c.tf_ratios[RANGE_MAP] for c in done], TARGETS[RANGE_MAP]),
    }
    sizes = [c.x_bytes / 1024 for c in done]
    for (label, (ratios, target)), color in zip(series.items(), ("C0", "C1", "C2"), strict=True):
        left.scatter(sizes, ratios, label=label, color=color, s=18)
        left.axhline(target, color=color, linestyle="--", linewidth=1)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="x batch (KB)",
        ylabel="seqbatch speed / peer speed",
        title="Grid: ratios (dashed: targets)",
    )
    left.legend(fontsize=7)
    for label, by_length in scaling.items():
        lengths, us = list(by_length), list(by_length.values())
        line = right.plot(lengths, us, marker="o", label=label)[0]
        right.fill_between(
            lengths,
            us[0] * (1 - FLAT_TOLERANCE),
            us[0] * (1 + FLAT_TOLERANCE),
            color=line.get_color(),
            alpha=0.15,
        )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="series length (steps, memmapped)",
        ylabel="µs per batch",
        title=f"Cost per batch (band: ±{FLAT_TOLERANCE:.0%})",
    )
    right.legend(fontsize=7)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (left.xaxis, left.yaxis, right.xaxis, right.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    # The cost per batch spans less than a decade: label the minor ticks too.
    right.yaxis.set_minor_formatter(plain)
    right.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    return path
