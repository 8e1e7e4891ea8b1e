"""Long tables: ``from_frame`` against pandas' own sort and groupby, and epochs over Parquet.

``python -m benchmarks.tables [--quick]`` runs this section alone.

The table has ``table_rows`` rows of ``table_series`` series of equal length, integer ids and
times, 8 float32 value columns, rows shuffled. ``from_frame`` is timed against what pandas
does to reach the same flat array and lengths: ``sort_values([id, t])``, ``groupby(id).size()``
and ``to_numpy()`` of the value columns; the memory each adds at its peak (``RssAnon``,
sampled every 2 ms in a fresh process, :mod:`benchmarks.memory_probe`) is set against the
size of the table. The Parquet rows stream one epoch of a sorted file (series of 1,000 rows,
row groups of 16,384 rows) in a fresh process and give the ``RssAnon`` it adds (the index
included), for the file and for a quarter of it: it must not grow with the file. Then the same epoch runs with the
data segment limited (``RLIMIT_DATA``, set after a warm-up epoch over a small file, with Arrow
allocating through malloc so that the limit sees every allocation) to half the values:
it must run, and an array of the values' size must fail to allocate under it. The time
per batch is set against pyarrow reading the same number of rows of the same columns into
numpy, row group after row group. Timed comparisons run their candidates in turn, twice, and
keep the fastest run of each.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Row, run_alone, speed_ratio
from benchmarks.sizes import Sizes

FEATURES = [f"v{j}" for j in range(8)]
ROW_GROUP = 16_384
SERIES_ROWS = 1_000
ROOT = Path(__file__).resolve().parent.parent
TARGET_MB = 150.0
LIMIT_MB = 80.0  # half the full size's values


def long_frame(rows: int, series: int, seed: int = 0) -> Any:
    """The shuffled long table: ``id``, ``t`` and 8 float32 columns, as a pandas DataFrame."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    per = rows // series
    order = rng.permutation(per * series)
    columns: dict[str, Any] = {
        "id": np.repeat(np.arange(series, dtype=np.int64), per)[order],
        "t": np.tile(np.arange(per, dtype=np.int64), series)[order],
    }
    for name in FEATURES:
        columns[name] = rng.random(per * series, dtype=np.float32)
    return pd.DataFrame(columns)


def pandas_peer(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """The flat values and the lengths of the series, as pandas makes them."""
    ordered = frame.sort_values(["id", "t"], kind="stable")
    lengths = ordered.groupby("id", sort=False).size().to_numpy()
    return ordered[FEATURES].to_numpy(), lengths


def parquet_file(path: Path, rows: int) -> Path:
    """A sorted Parquet file of ``rows`` rows, series of 1,000 rows, written in pieces."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    schema = pa.schema(
        [("id", pa.int64()), ("t", pa.int64()), *((n, pa.float32()) for n in FEATURES)]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for begin in range(0, rows, 1_000_000):
            n = min(rows, begin + 1_000_000) - begin
            at = np.arange(begin, begin + n)
            columns = {"id": at // SERIES_ROWS, "t": at % SERIES_ROWS}
            columns |= {name: rng.random(n, dtype=np.float32) for name in FEATURES}
            writer.write_table(pa.table(columns, schema=schema), row_group_size=ROW_GROUP)
    return path


def probe(mode: str, *args: Any) -> dict[str, Any]:
    """Run :func:`measure` in a fresh process and return its figures."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if mode == "limited":
        # Arrow's default allocator maps a large region as it loads, before the limit, and
        # allocates inside it unseen: through malloc (one arena), every allocation counts.
        env |= {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.tables", "--probe", mode, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tables probe {mode!r} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(mode: str, args: list[str]) -> dict[str, Any]:
    """In this process: one build of a table or one epoch of a file, with its ``RssAnon``."""
    import pyarrow.compute
    import pyarrow.dataset
    import pyarrow.parquet as pq

    import seqbatch
    import seqbatch.tables
    from benchmarks.memory_probe import PeakSampler, status_mb

    del pyarrow.compute, pyarrow.dataset  # loaded before the baseline, as seqbatch.tables is

    if mode in ("from_frame", "pandas"):
        frame = long_frame(int(args[0]), int(args[1]))
        table_mb = frame.memory_usage(index=False).sum() / 1e6

        def run() -> int:
            if mode == "pandas":
                return len(pandas_peer(frame)[1])
            batches = seqbatch.StreamBatcher.from_frame(
                frame, series="id", time="t", features=FEATURES, batch_size=64, sequence_length=10
            )
            return batches.n_series

    else:
        path, B, W = args[0], int(args[1]), int(args[2])
        table_mb = os.path.getsize(path) / 1e6
        kw = {"series": "id", "time": "t", "features": FEATURES}
        kw |= {"batch_size": B, "sequence_length": W}
        if mode == "limited":
            # Imports done and Arrow's threads started first (their stacks are data).
            for _ in seqbatch.StreamBatcher.from_parquet(args[4], **kw):
                pass
            limit = int((status_mb("VmData") + float(args[3])) * 1e6)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

        def run() -> int:
            if mode == "pyarrow":
                rows = 0
                for part in pq.ParquetFile(path).iter_batches(B * W, columns=FEATURES):
                    np.column_stack([c.to_numpy() for c in part.columns]).sum()
                    rows += part.num_rows
                return rows // (B * W)
            batches = seqbatch.StreamBatcher.from_parquet(path, **kw)
            for b in batches:
                np.add.reduce(b.x, axis=None)
                np.add.reduce(b.y, axis=None)
            return len(batches)

    baseline = status_mb("RssAnon")
    sampler = PeakSampler()
    sampler.start()
    begin = time.perf_counter()
    count = run()
    seconds = time.perf_counter() - begin
    peak = sampler.stop()
    out = {"count": count, "seconds": seconds, "added_mb": peak - baseline, "table_mb": table_mb}
    if mode == "limited":
        values = pq.ParquetFile(args[0]).metadata.num_rows * len(FEATURES) * 4
        try:
            np.ones(values, np.uint8)  # the values' bytes, under the same limit
            out["values_refused"] = False
        except MemoryError:
            out["values_refused"] = True
    return out


def interleaved(probes: list[tuple[Any, ...]], sizes: Sizes) -> list[dict[str, Any]]:
    """The fastest of two runs of each probe, run in turn round after round, so that a burst
    of load from other processes slows them alike (one run at the quick size)."""
    best: list[dict[str, Any] | None] = [None] * len(probes)
    for _ in range(2 if sizes.repeats > 2 else 1):
        for i, args in enumerate(probes):
            result = probe(*args)
            current = best[i]
            if current is None or result["seconds"] < current["seconds"]:
                best[i] = result
    return [b for b in best if b is not None]


def _frame_rows(sizes: Sizes) -> list[Row]:
    rows, series = sizes.table_rows, sizes.table_series
    ours, peer = interleaved([("from_frame", rows, series), ("pandas", rows, series)], sizes)
    what = f"{rows:,} rows of {series:,} series, 8 float32 columns, rows shuffled"
    table_mb = ours["table_mb"]
    return [
        Row(
            "tables",
            f"from_frame, {what}: build",
            ours["seconds"],
            "s",
            peer="pandas sort_values + groupby",
            peer_value=peer["seconds"],
            ratio=speed_ratio(ours["seconds"], peer["seconds"]),
            target="within 2x of pandas",
            met=ours["seconds"] <= 2 * peer["seconds"],
        ),
        Row(
            "tables",
            f"from_frame, {what}: RssAnon added at the peak (table: {table_mb:.0f} MB)",
            ours["added_mb"],
            "MB",
            peer="pandas sort_values + groupby",
            peer_value=peer["added_mb"],
            target=f"<= 1.5x the table ({1.5 * table_mb:.0f} MB)",
            met=ours["added_mb"] <= 1.5 * table_mb,
        ),
    ]


def _parquet_rows(sizes: Sizes, workdir: Path) -> list[Row]:
    B, W = sizes.batch_size, sizes.sequence_length
    out = []
    epochs = {}
    for rows in (sizes.parquet_rows // 4, sizes.parquet_rows):
        path = parquet_file(workdir / f"table-{rows}.parquet", rows)
        epochs[rows] = ours = probe("from_parquet", path, B, W)
        values_mb = rows * len(FEATURES) * 4 / 1e6
        out.append(
            Row(
                "tables",
                f"from_parquet: RssAnon added over an epoch of {values_mb:.0f} MB of values "
                f"({ours['count']} batches of {B} x {W})",
                ours["added_mb"],
                "MB",
                target=f"< {TARGET_MB:g} MB, flat in the file's size",
                met=ours["added_mb"] < TARGET_MB,
            )
        )
    full = workdir / f"table-{sizes.parquet_rows}.parquet"
    warm = parquet_file(workdir / "warm.parquet", 2 * B * SERIES_ROWS)  # B streams fill
    limited = probe("limited", full, B, W, LIMIT_MB, warm)
    values_mb = sizes.parquet_rows * len(FEATURES) * 4 / 1e6
    out.append(
        Row(
            "tables",
            f"from_parquet: RssAnon added over an epoch of {values_mb:.0f} MB of values, the "
            f"data segment limited to +{LIMIT_MB:g} MB (RLIMIT_DATA, Arrow on malloc)",
            limited["added_mb"],
            "MB",
            target="the epoch runs; the values' bytes cannot be allocated under the limit",
            met=bool(limited["values_refused"]) and limited["added_mb"] < LIMIT_MB,
        )
    )
    # The time per batch: an epoch again, in turn with pyarrow (the memory rows above each
    # ran alone).
    ours, peer = interleaved([("from_parquet", full, B, W), ("pyarrow", full, B, W)], sizes)
    per_batch, peer_per_batch = ours["seconds"] / ours["count"], peer["seconds"] / peer["count"]
    out.append(
        Row(
            "tables",
            f"from_parquet: a batch of {B} x {W} x 8 float32 (x and y), the index built",
            per_batch * 1e6,
            "us/batch",
            peer="pyarrow reading as many rows",
            peer_value=peer_per_batch * 1e6,
            ratio=speed_ratio(per_batch, peer_per_batch),
        )
    )
    return out


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """The two ``from_frame`` rows, then the four Parquet rows."""
    return _frame_rows(sizes) + _parquet_rows(sizes, workdir)


def _small_stacks() -> None:
    """Run this probe again with 1 MB stacks: glibc sizes every thread's stack by
    ``RLIMIT_STACK`` as the process starts, and a stack is data (set here, not between fork
    and exec in a parent that has threads)."""
    if os.environ.get("SEQBATCH_SMALL_STACKS") == "1":
        return
    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    small = 2**20 if hard == resource.RLIM_INFINITY else min(2**20, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (small, hard))
    argv = [sys.executable, "-m", "benchmarks.tables", *sys.argv[1:]]
    os.execve(sys.executable, argv, {**os.environ, "SEQBATCH_SMALL_STACKS": "1"})


if __name__ == "__main__":
    if sys.argv[1:3] == ["--probe", "limited"]:
        _small_stacks()
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(measure(sys.argv[2], sys.argv[3:])))
    else:
        run_alone(run)
