"""One epoch over a Parquet file under a memory limit below its values, in a process of its own.

``python -m tests.parquet_child FILE WARM_FILE LIMIT_MB BATCH_SIZE ROW_GROUPS_KEPT`` prints one
JSON line. The files are :func:`write_encoded` files. The process first runs an epoch over the
small WARM_FILE, so that the imports are done and Arrow's threads started (each thread's
stack counts as data), then limits its data segment (``RLIMIT_DATA``: every private writable
mapping, the heap and Arrow's allocator included) to what it holds plus LIMIT_MB, builds the
batcher of FILE and streams one epoch, checking every batch against the encoding and
sampling ``RssAnon`` at each. At the end, still under the limit, it tries to allocate as many
bytes as FILE has values: that must fail, or the limit did not bind.

It runs itself again with a small ``RLIMIT_STACK`` first (glibc sizes thread stacks by it).
The parent starts it with Arrow's ``system`` allocator (its default, mimalloc, maps a large region as it loads, before the
limit, and allocates inside it unseen) and one malloc arena.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = [f"v{j}" for j in range(8)]
SERIES_ROWS = 1_000
COLUMN_STRIDE = 1_000_000


def write_encoded(path: Path, rows: int, row_group_size: int = 16_384) -> float:
    """A sorted file of series of 1,000 rows; ``v{j}`` of series ``s`` at step ``t`` holds
    ``1000 * s + t + 1_000_000 * j`` (exact in float32 up to 9,000 series). Returns the MB of
    float32 values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert rows // SERIES_ROWS <= 9_000
    schema = pa.schema(
        [("id", pa.int64()), ("t", pa.int64()), *((n, pa.float32()) for n in FEATURES)]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for begin in range(0, rows, 500_000):
            at = np.arange(begin, min(rows, begin + 500_000))
            code = (1000 * (at // SERIES_ROWS) + at % SERIES_ROWS).astype(np.float32)
            columns: dict[str, Any] = {"id": at // SERIES_ROWS, "t": at % SERIES_ROWS}
            columns |= {n: code + np.float32(COLUMN_STRIDE * j) for j, n in enumerate(FEATURES)}
            writer.write_table(pa.table(columns, schema=schema), row_group_size=row_group_size)
    return rows * len(FEATURES) * 4 / 1e6


def status_mb(field: str) -> float:
    """A field of ``/proc/self/status`` in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(field)


def epoch(path: str, batch_size: int, kept: int, on_batch: Any = None) -> int:
    """Stream one epoch of ``path``, checking each batch; return the real steps seen."""
    import seqbatch

    batches = seqbatch.StreamBatcher.from_parquet(
        path,
        series="id",
        time="t",
        features=FEATURES,
        batch_size=batch_size,
        sequence_length=100,
        row_groups_kept=kept,
        remainder="pad",
    )
    steps = 0
    width = np.arange(100)
    for b in batches:
        real = b.sample_weight > 0
        ids = batches.series_ids[np.maximum(b.series, 0)]
        code = 1000 * ids[:, None] + b.position[:, None] + width
        want = code[..., None] + COLUMN_STRIDE * np.arange(len(FEATURES))
        if not (
            np.array_equal(b.x[real], want[real]) and np.array_equal(b.y[real], want[real] + 1)
        ):
            raise AssertionError(f"a batch holds other rows than its windows: {b!r}")
        steps += int(real.sum())
        if on_batch is not None:
            on_batch()
    return steps


def main(path: str, warm: str, limit_mb: float, batch_size: int, kept: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    epoch(warm, batch_size, kept)
    data_before, anon_before = status_mb("VmData"), status_mb("RssAnon")
    limit = int((data_before + limit_mb) * 1e6)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    peak = [anon_before]
    steps = epoch(path, batch_size, kept, lambda: peak.append(status_mb("RssAnon")))
    values = pq.ParquetFile(path).metadata.num_rows * len(FEATURES) * 4
    try:
        held = np.ones(values, np.uint8)  # the values' bytes, touched
        refused = False
        del held
    except MemoryError:
        refused = True
    return {
        "steps": steps,
        "anon_added_mb": max(peak) - anon_before,
        "data_added_mb": status_mb("VmData") - data_before,
        "limit_mb": limit_mb,
        "values_mb": values / 1e6,
        "values_refused": refused,
        "arrow_pool": pa.default_memory_pool().backend_name,
    }


def small_stacks() -> None:
    """Run this module again with 1 MB stacks: glibc sizes every thread's stack by
    ``RLIMIT_STACK`` as the process starts, and a stack is data. (Set here, not in the parent
    before ``exec``: a parent with threads must not run Python between fork and exec.)"""
    if os.environ.get("SEQBATCH_SMALL_STACKS") == "1":
        return
    hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
    small = 2**20 if hard == resource.RLIM_INFINITY else min(2**20, hard)
    resource.setrlimit(resource.RLIMIT_STACK, (small, hard))
    argv = [sys.executable, "-m", "tests.parquet_child", *sys.argv[1:]]
    os.execve(sys.executable, argv, {**os.environ, "SEQBATCH_SMALL_STACKS": "1"})


if __name__ == "__main__":
    small_stacks()
    file, warm_file, limit_mb, batch_size, kept = sys.argv[1:6]
    print(json.dumps(main(file, warm_file, float(limit_mb), int(batch_size), int(kept))))
