"""Memory while streaming one epoch of a large ``.npy`` file opened as a memmap.

Each pipeline runs in its own process (:mod:`benchmarks.memory_probe`), so that what one
allocates cannot be counted against another. The figure is the anonymous memory
(``RssAnon``) added above the process's imports: the file's own pages are the page cache's,
which the kernel can drop, and are left out; the peak RSS, which counts them, is given too.

Two cases read the same file: the headline one (16 features, the headline batch), and the
same bytes as one feature in windows of 10 steps for 32 streams, the most windows an epoch
of the file can have in this suite, where anything kept per window would show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.data import npy_file
from benchmarks.memory_probe import MODES
from benchmarks.report import Row, number
from benchmarks.sizes import Sizes

TARGET_MB = 100.0
ROOT = Path(__file__).resolve().parent.parent
PEER = "timeseries_dataset_from_array"


NARROW = {"batch_size": 32, "width": 10, "features": 1}


def probe(
    mode: str, path: Path, batch_size: int, width: int, features: int | None = None
) -> dict[str, float]:
    """Run one :mod:`benchmarks.memory_probe` in a fresh process and return its figures."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [mode, str(path), str(batch_size), str(width)]
    if features is not None:
        args.append(str(features))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_probe", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {mode!r} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Added ``RssAnon`` and peak RSS of each pipeline over one file; six rows."""
    features = 16
    steps = sizes.memory_bytes // (4 * features)
    path = npy_file(workdir / "memory.npy", steps, features)
    size = f"{sizes.memory_bytes / 2**20:g} MiB"
    figures = {mode: probe(mode, path, sizes.batch_size, sizes.sequence_length) for mode in MODES}
    peer = figures[PEER]
    rows = []
    for mode in MODES[:2]:
        added = figures[mode]["added_anon_mb"]
        rows.append(
            Row(
                "memory",
                f"{mode}: RssAnon added while streaming a {size} .npy memmap",
                added,
                "MB",
                peer=PEER,
                peer_value=peer["added_anon_mb"],
                target=f"< {TARGET_MB:g} MB",
                met=added < TARGET_MB,
            )
        )
    for mode in MODES[:2]:
        rows.append(
            Row(
                "memory",
                f"{mode}: peak RSS (file pages and libraries included)",
                figures[mode]["peak_rss_mb"],
                "MB",
                peer=PEER,
                peer_value=peer["peak_rss_mb"],
            )
        )
    B, W, F = NARROW["batch_size"], NARROW["width"], NARROW["features"]
    for mode in MODES[:2]:
        narrow = probe(mode, path, B, W, F)
        added = narrow["added_anon_mb"]
        rows.append(
            Row(
                "memory",
                f"{mode}: RssAnon added while streaming the same file as {F} feature, "
                f"{B}x{W} windows ({number(narrow['batches'])} batches)",
                added,
                "MB",
                target=f"< {TARGET_MB:g} MB",
                met=added < TARGET_MB,
            )
        )
    return rows
