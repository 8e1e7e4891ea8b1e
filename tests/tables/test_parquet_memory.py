"""``from_parquet`` over a file larger than the memory it may use: an epoch in a child process
whose data segment (``RLIMIT_DATA``) is limited to half the file's values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parquet_child import SERIES_ROWS, write_encoded

ROOT = Path(__file__).resolve().parents[2]
ROWS = 4_000_000  # 128 MB of float32 values, 4,000 series
LIMIT_MB = 64.0
BATCH_SIZE, KEPT = 16, 8


@pytest.mark.memory
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_DATA binds mappings on Linux only"
)
def test_an_epoch_runs_under_a_limit_below_the_values(tmp_path: Path) -> None:
    big, warm = tmp_path / "big.parquet", tmp_path / "warm.parquet"
    values_mb = write_encoded(big, ROWS)
    write_encoded(warm, 20_000)
    assert values_mb / 2 >= LIMIT_MB
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.parquet_child",
            big,
            warm,
            *map(str, (LIMIT_MB, BATCH_SIZE, KEPT)),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            # Arrow's default allocator maps a large region when it loads, which a limit set
            # afterwards would not see: through malloc, every allocation counts.
            "ARROW_DEFAULT_MEMORY_POOL": "system",
            "MALLOC_ARENA_MAX": "1",  # no arena per thread, each mapped for itself
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Every step that has a target was read, each batch checked against the encoding.
    series = ROWS // SERIES_ROWS
    assert result["steps"] == ROWS - series
    assert result["arrow_pool"] == "system", result  # Arrow's allocations count too
    assert result["values_refused"], result  # the limit binds: the values could not be held
    assert result["anon_added_mb"] < LIMIT_MB, result
