"""Many short series: padding, the numpy epoch and training, packed against ``"reset"``.

``python -m benchmarks.packing [--quick]`` runs this section alone.

Series of random lengths, drawn uniformly and log-uniformly (many more short series), are laid
out with ``series_boundary="reset"`` (each series starts on a window boundary and its last
window is padded) and with ``"pack"`` (end to end in each stream), both with
``remainder="pad"`` so that every step is used. The padding is the share of batch slots that
hold no data; the epoch reads every numpy batch of one epoch, in order; the tf.data row gives
the steady cost of a batch read in the graph, with its reset flags. The training rows
(a Keras step, epoch and validation loss per backend) come from :mod:`benchmarks.packing_fit`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import packing_fit
from benchmarks.data import series, series_lengths
from benchmarks.numpy_path import epoch
from benchmarks.report import Row, run_alone, speed_ratio
from benchmarks.sizes import Sizes
from benchmarks.tf_path import steady
from benchmarks.timing import median_rounds, medians
from seqbatch import StreamBatcher

DISTRIBUTIONS = ("uniform", "log-uniform")
PADDING_TARGET_PERCENT = 1.0


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Padding, numpy epoch and tf.data batch of both layouts, per distribution of the
    lengths; then the training rows."""
    B, W = sizes.packing_batch_size, sizes.packing_window
    lo, hi = sizes.packing_lengths
    rows = []
    for distribution in DISTRIBUTIONS:
        lengths = series_lengths(sizes, distribution)
        data = np.split(series(int(lengths.sum()), sizes.features), np.cumsum(lengths)[:-1])
        batches = {
            boundary: StreamBatcher(
                data,
                batch_size=B,
                sequence_length=W,
                remainder="pad",
                series_boundary=boundary,  # type: ignore[arg-type]
            )
            for boundary in ("reset", "pack")
        }
        padding = {
            boundary: 100 * b.plan.accounting.padded / (len(b) * B * W)
            for boundary, b in batches.items()
        }
        seconds = medians({name: epoch(b) for name, b in batches.items()}, sizes.repeats)
        what = (
            f"{sizes.packing_series} series of {lo} to {hi} steps ({distribution}), "
            f"{B} streams x {W} steps"
        )
        rows.append(
            Row(
                "packing",
                f"padding, pack vs reset, {what}",
                padding["pack"],
                "%",
                peer="reset",
                peer_value=padding["reset"],
                target=f"< {PADDING_TARGET_PERCENT:g} %",
                met=padding["pack"] < PADDING_TARGET_PERCENT,
            )
        )
        rows.append(
            Row(
                "packing",
                f"numpy epoch of {sizes.features} features, pack ({len(batches['pack'])} "
                f"batches) vs reset ({len(batches['reset'])}), {what}",
                seconds["pack"] * 1e3,
                "ms",
                peer="reset",
                peer_value=seconds["reset"] * 1e3,
                ratio=speed_ratio(seconds["pack"], seconds["reset"]),
            )
        )
        # tf.data, consumed inside a tf.function as fit() does, once the pass is under way.
        steps = min(200, len(batches["pack"]))
        in_graph = median_rounds(
            {name: steady(b.to_tf_dataset(reset_input=True), steps) for name, b in batches.items()},
            sizes.repeats,
        )
        rows.append(
            Row(
                "packing",
                f"tf.data batch of {sizes.features} features with its flags, in memory, pack "
                f"vs reset, {what}",
                in_graph["pack"] / steps * 1e3,
                "ms",
                peer="reset",
                peer_value=in_graph["reset"] / steps * 1e3,
                ratio=speed_ratio(in_graph["pack"], in_graph["reset"]),
            )
        )
    return rows + packing_fit.rows(sizes)


if __name__ == "__main__":
    run_alone(run)
