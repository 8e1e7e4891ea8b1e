"""numpy batches: zero-copy views per batch, and copied batches against ``np.copyto``.

``python -m benchmarks.numpy_path [--quick]`` runs this section alone.

The peer of a copied batch is ``np.copyto`` of the same bytes, the batch's ``B`` windows of
``x`` and of ``y``, from a strided view of the series into two preallocated arrays: the
bandwidth limit of any batcher that copies these windows. ``np.copyto`` of one contiguous
block of the same size is given for scale: it is faster, since it reads one run of memory
where a batch reads ``B`` runs far apart. The copied cases are the layouts that cannot be
views: streams of unequal length (``remainder="pad"``), a memory-mapped series cut that way,
and many series.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.data import series
from benchmarks.report import Row, run_alone
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher

VIEW_TARGET_US = 10.0
COPY_TARGET_RATIO = 0.8
COPY_TARGET_MIN_BYTES = 64 * 2**10


def epoch(batches: StreamBatcher) -> Callable[[], None]:
    """A run that reads every batch of one epoch, in order."""

    def run() -> None:
        for _ in batches:
            pass

    return run


def copyto_epoch(
    data: np.ndarray,
    batch_shape: tuple[int, int],
    batches: int,
    contiguous: bool,
    fresh: bool = False,
) -> Callable[[], None]:
    """A run that copies the ``x`` and ``y`` bytes of ``batches`` batches with ``np.copyto``.

    With ``contiguous=False``, batch ``k`` copies window ``k`` of each of ``B`` streams (the
    data cut into ``B`` contiguous streams, as seqbatch cuts one series) and the same windows
    one step later (the targets). With ``contiguous=True`` it copies block ``k`` of the data
    and the block one step later. The copies go into two preallocated arrays, or with
    ``fresh=True`` into two new arrays per batch, kept until the next batch as a consumer
    keeps a batch: what returning new arrays costs the allocator.
    """
    B, W = batch_shape
    step, *rest = data.strides
    shape = (batches, B, W, *data.shape[1:])
    if contiguous:
        strides = (B * W * step, W * step, step, *rest)
    else:
        strides = (W * step, batches * W * step, step, *rest)
    x = np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides, writeable=False)
    y = np.lib.stride_tricks.as_strided(data[1:], shape=shape, strides=strides, writeable=False)

    def run() -> None:
        x_out, y_out = np.empty(shape[1:], data.dtype), np.empty(shape[1:], data.dtype)
        for k in range(batches):
            if fresh:
                x_out, y_out = np.empty(shape[1:], data.dtype), np.empty(shape[1:], data.dtype)
            np.copyto(x_out, x[k])
            np.copyto(y_out, y[k])

    return run


def minor_faults(run: Callable[[], object]) -> int:
    """The minor page faults of one call of ``run``: fresh pages the kernel had to map."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def many_series(data: np.ndarray, count: int, steps: int) -> list[np.ndarray]:
    """``count`` separate arrays of ``steps + 1`` steps each (one extra for the target)."""
    return [data[i * steps : (i + 1) * steps + 1].copy() for i in range(count)]


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Time views and copies of the headline case; one row per case."""
    B, W, F, n = sizes.batch_size, sizes.sequence_length, sizes.features, sizes.batches
    steps = n * B * W
    data = series(steps + 1, F)
    path = workdir / "numpy_path.npy"
    np.save(path, data)
    shape = dict(batch_size=B, sequence_length=W)
    views = {
        "one series in memory": StreamBatcher(data, **shape),
        "one memmapped series": StreamBatcher(path, **shape),
    }
    # Streams that differ by one step leave no stride to view: every batch is gathered.
    uneven = steps - B // 2 + 1
    copies = {
        "one series, remainder='pad'": StreamBatcher(data[:uneven], remainder="pad", **shape),
        "one memmapped series, remainder='pad'": StreamBatcher(
            np.load(path, mmap_mode="r")[:uneven], remainder="pad", **shape
        ),
        f"{sizes.series} series in memory": StreamBatcher(
            many_series(data, sizes.series, steps // sizes.series), **shape
        ),
    }
    for name, batches in {**views, **copies}.items():
        if len(batches) != n:
            raise AssertionError(f"{name}: {len(batches)} batches, expected {n}")

    rows = []
    seconds = medians({name: epoch(b) for name, b in views.items()}, sizes.repeats)
    for name, t in seconds.items():
        us = t / n * 1e6
        rows.append(
            Row(
                "numpy",
                f"zero-copy view batch, {name}",
                us,
                "us/batch",
                target=f"< {VIEW_TARGET_US:g} us/batch",
                met=us < VIEW_TARGET_US,
            )
        )
    same, block = "np.copyto, same windows", "np.copyto, one block"
    fresh = "np.copyto, same windows, into new arrays"
    runs = {
        same: copyto_epoch(data, (B, W), n, contiguous=False),
        block: copyto_epoch(data, (B, W), n, contiguous=True),
        fresh: copyto_epoch(data, (B, W), n, contiguous=False, fresh=True),
    }
    runs.update({name: epoch(b) for name, b in copies.items()})
    seconds = medians(runs, sizes.repeats)
    batch_bytes = 2 * B * W * F * data.itemsize
    size = f"x+y {batch_bytes // 1024} KB"
    gbps = {name: n * batch_bytes / t / 1e9 for name, t in seconds.items()}
    peer, scale, new = gbps.pop(same), gbps.pop(block), gbps.pop(fresh)
    rows.append(Row("numpy", f"{block} of {size} (memory bandwidth, for scale)", scale, "GB/s"))
    rows.append(
        Row(
            "numpy",
            f"{fresh} per batch, {size} (what allocating costs)",
            new,
            "GB/s",
            peer=same,
            peer_value=peer,
            ratio=new / peer,
        )
    )
    applies = batch_bytes >= COPY_TARGET_MIN_BYTES
    for name, value in gbps.items():
        rows.append(
            Row(
                "numpy",
                f"copied batch ({size}), {name} ({value / new:.2f}x new arrays)",
                value,
                "GB/s",
                peer=same,
                peer_value=peer,
                ratio=value / peer,
                target=f">= {COPY_TARGET_RATIO}x {same}" if applies else "",
                met=value / peer >= COPY_TARGET_RATIO if applies else None,
            )
        )
    rows.append(
        Row(
            "numpy",
            "minor page faults per copied batch, one series, remainder='pad'",
            minor_faults(epoch(copies["one series, remainder='pad'"])) / n,
            "faults/batch",
            peer=fresh,
            peer_value=minor_faults(runs[fresh]) / n,
        )
    )
    return rows


if __name__ == "__main__":
    run_alone(run)
