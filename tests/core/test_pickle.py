"""Pickling, as worker processes do it: the data once, files as their name, never the caches.

A batcher holds views of every window of its data (``sequence_length`` times the data, if
they were copied); pickled naively, a worker started with ``spawn`` would receive all of it.
These tests pickle for real, and start a real ``spawn`` child that reads batches from what it
received.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series
from tests.same import assert_same_batches

FILE_LIMIT = 64 * 1024


def pickled(obj: Any) -> tuple[bytes, Any]:
    data = pickle.dumps(obj)
    return data, pickle.loads(data)


@pytest.mark.parametrize("layout", ["one series", "many series", "target arrays"])
def test_in_memory_batcher_pickles_to_its_data(layout: str) -> None:
    if layout == "many series":
        data: Any = [encoded_series(s, 1000 + 37 * s, (2,), "float32") for s in range(64)]
        targets: Any = "next"
        nbytes = sum(a.nbytes for a in data)
    else:
        data = encoded_series(0, 100_000, (), "float64")  # 0.8 MB
        targets = -data if layout == "target arrays" else "next"
        nbytes = data.nbytes * (2 if layout == "target arrays" else 1)
    batches = seqbatch.StreamBatcher(data, targets, batch_size=32, sequence_length=100)
    batches.set_epoch(0)
    for k in (0, len(batches) - 1):
        batches[k]  # the window views are built: they must not be pickled
    for obj in (batches, batches.shard(3, 4)):
        blob, again = pickled(obj)
        assert len(blob) <= 1.1 * nbytes, f"{len(blob) / nbytes:.2f}x the data"
        assert again.in_memory and repr(again) == repr(obj)
        assert_same_batches(obj, again, [0, 7, len(obj) - 1])


def memmaps(path: Path) -> dict[str, Any]:
    """Memory maps of one file as users make them: whole, sliced, strided, reversed."""
    whole = np.load(path, mmap_mode="r")
    raw_path = path.with_suffix(".raw")
    np.asarray(whole).tofile(raw_path)
    # A raw file read from an offset, as np.memmap takes it.
    raw = np.memmap(raw_path, dtype=whole.dtype, mode="r", offset=12 * whole.strides[0])
    return {
        "path": path,
        "memmap": whole,
        "slice": whole[1000:],
        "column": whole[:, 1],
        "every other step": whole[::2],
        "reversed": whole[::-1],
        "raw with offset": raw.reshape(-1, *whole.shape[1:]),
    }


def test_batcher_of_files_pickles_small_and_reopens_them(tmp_path: Path) -> None:
    path = tmp_path / "series.npy"
    np.save(path, encoded_series(0, 1_250_000, (2,), "float64"))  # 20 MB
    for name, source in memmaps(path).items():
        batches = seqbatch.StreamBatcher(source, batch_size=32, sequence_length=100)
        batches[0], batches[len(batches) - 1]
        for obj in (batches, batches.shard(1, 2)):
            blob, again = pickled(obj)
            assert len(blob) < FILE_LIMIT, (name, len(blob))
            loaded = again.sources[0]
            assert type(loaded) is np.memmap and Path(loaded.filename).suffix in (".npy", ".raw")
            assert not loaded.flags.writeable
            assert_same_batches(obj, again, [0, 5, len(obj) - 1])


def test_joined_files_and_target_files_pickle_small(tmp_path: Path) -> None:
    series = [encoded_series(s, 200_000 + 1000 * s, (), "float32") for s in range(3)]
    paths = [tmp_path / f"x{i}.npy" for i in range(3)]
    targets = [tmp_path / f"y{i}.npy" for i in range(3)]
    for s, x_path, y_path in zip(series, paths, targets, strict=True):
        np.save(x_path, s)
        np.save(y_path, -s)
    for boundary in ("concat", "reset"):
        batches = seqbatch.StreamBatcher(
            paths, targets, batch_size=3, sequence_length=50, series_boundary=boundary
        )
        blob, again = pickled(batches)
        assert len(blob) < FILE_LIMIT, (boundary, len(blob))
        assert_same_batches(batches, again, [0, 11, len(batches) - 1])
    # A joined stream pickled twice (in a worker that starts its own workers) stays small.
    blob, _ = pickled(pickle.loads(pickle.dumps(batches)))
    assert len(blob) < FILE_LIMIT


def test_stream_sequence_pickles_like_its_batcher(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras", reason="Keras is in the test extra")
    path = tmp_path / "series.npy"
    np.save(path, encoded_series(0, 400_000, (3,), "float32"))
    in_memory = np.load(path)
    for data, limit in ((path, FILE_LIMIT), (in_memory, 1.1 * in_memory.nbytes)):
        batches = seqbatch.StreamBatcher(data, batch_size=16, sequence_length=100)
        sequence = seqbatch.keras.StreamSequence(batches, reset_input=True)
        sequence[0]
        blob, again = pickled(sequence)
        assert isinstance(again, keras.utils.PyDataset)
        assert len(blob) <= limit, len(blob)
        for k in (0, 9, len(sequence) - 1):
            for a, b in zip(
                keras.tree.flatten(sequence[k]), keras.tree.flatten(again[k]), strict=True
            ):
                np.testing.assert_array_equal(a, b)


def read_in_child(objects: dict[str, Any], out: Any) -> None:
    """Run in a spawned process: report what each object received reads and holds."""
    report = {}
    for name, obj in objects.items():
        batches = obj.batches if hasattr(obj, "batches") else obj
        source = batches.sources[0]
        item = obj[3]
        x = item.x if hasattr(item, "x") else item[0][0]
        report[name] = (type(source).__name__, getattr(source, "filename", None), np.asarray(x))
    out.put(report)


def test_a_spawned_child_reopens_the_file(tmp_path: Path) -> None:
    pytest.importorskip("keras", reason="Keras is in the test extra")
    path = tmp_path / "series.npy"
    np.save(path, encoded_series(0, 1_250_000, (2,), "float64"))  # 20 MB
    batches = seqbatch.StreamBatcher(str(path), batch_size=32, sequence_length=100)
    objects = {
        "batcher": batches,
        "shard": batches.shard(2, 4),
        "sequence": seqbatch.keras.StreamSequence(batches, reset_input=True),
    }
    for obj in objects.values():
        obj[0]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=read_in_child, args=(objects, out), daemon=True)
    child.start()
    try:
        report = out.get(timeout=240)
    except queue.Empty:
        pytest.fail("the spawned child sent nothing within 240 s")
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.terminate()
            child.join(timeout=10)
    assert child.exitcode == 0
    for name, x in (("batcher", batches[3].x), ("shard", objects["shard"][3].x)):
        assert report[name][:2] == ("memmap", str(path))
        np.testing.assert_array_equal(report[name][2], x)
    assert report["sequence"][:2] == ("memmap", str(path))
    np.testing.assert_array_equal(report["sequence"][2], batches[3].x)
