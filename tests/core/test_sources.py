"""Lazy sources: memmaps, .npy paths and sliceable objects give the same batches, and only the
windows of the batch asked for are read."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series
from tests.lazy import CountingSource
from tests.same import assert_same_batches


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_memmap_and_npy_path_match_memory(tmp_path: Any, remainder: str) -> None:
    data = encoded_series(0, 997, (3,), "float32")
    path = tmp_path / "series.npy"
    np.save(path, data)
    kwargs: dict[str, Any] = {"batch_size": 4, "sequence_length": 7, "remainder": remainder}
    in_memory = seqbatch.StreamBatcher(data, "next", **kwargs)
    assert in_memory.in_memory
    for source in (np.load(path, mmap_mode="r"), str(path), path):
        lazy = seqbatch.StreamBatcher(source, "next", **kwargs)
        assert not lazy.in_memory
        assert_same_batches(in_memory, lazy)
    target_path = tmp_path / "targets.npy"
    np.save(target_path, -data)
    with_arrays = seqbatch.StreamBatcher(data, -data, **kwargs)
    for source, targets in ((str(path), str(target_path)), (path, target_path)):
        assert_same_batches(with_arrays, seqbatch.StreamBatcher(source, targets, **kwargs))


def test_h5py_dataset_matches_memory(tmp_path: Any) -> None:
    h5py = pytest.importorskip("h5py", reason="h5py is in the test extra; absent only outside it")
    series = [encoded_series(s, 20 + 7 * s, (2,), "int64") for s in range(5)]
    with h5py.File(tmp_path / "data.h5", "w") as f:
        for i, s in enumerate(series):
            f.create_dataset(f"s{i}", data=s)
    with h5py.File(tmp_path / "data.h5", "r") as f:
        lazy = seqbatch.StreamBatcher(
            [f[f"s{i}"] for i in range(5)], 2, batch_size=3, sequence_length=4, remainder="pad"
        )
        eager = seqbatch.StreamBatcher(series, 2, batch_size=3, sequence_length=4, remainder="pad")
        assert_same_batches(eager, lazy)


@pytest.mark.parametrize("boundary", ["reset", "concat"])
def test_only_the_windows_of_the_batch_are_read(boundary: str) -> None:
    series = [CountingSource(encoded_series(s, 50 + 10 * s, (2,), "float64")) for s in range(4)]
    batches = seqbatch.StreamBatcher(
        series, None, batch_size=2, sequence_length=5, series_boundary=boundary
    )
    assert all(s.reads == [] for s in series), "construction read data"
    b = batches[3]
    reads = [(i, r) for i, s in enumerate(series) for r in s.reads]
    assert sum(stop - start for _, (start, stop) in reads) == 2 * 5
    for i in range(2):
        first = int(b.x[i, 0, 0])
        s, t = divmod(first, 1000)
        assert (s - 1, (t, t + 5)) in reads or boundary == "concat"


def test_a_single_lazy_series_reads_one_slice_per_stream() -> None:
    source = CountingSource(encoded_series(0, 10_000, (), "float32"))
    batches = seqbatch.StreamBatcher(source, "next", batch_size=8, sequence_length=10)
    batches[17]
    # x and y: one slice of one window per stream each, never the whole series.
    assert len(source.reads) == 16
    assert all(stop - start == 10 for start, stop in source.reads)


def test_import_seqbatch_loads_numpy_alone() -> None:
    code = (
        "import sys, seqbatch, numpy as np\n"
        "b = seqbatch.StreamBatcher(np.arange(100.0), batch_size=2, sequence_length=5)\n"
        "b[0]; b.describe()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
