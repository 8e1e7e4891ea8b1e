"""torch: the per-batch cost of a ``DataLoader`` over :class:`seqbatch.torch.StreamDataset`.

In-process (``num_workers=0``) the peer is the numpy batch ``batches[k]`` of the same batcher:
the difference is what the loader adds (tensors that may be written, so a copy of each
read-only view, and the loader's own bookkeeping). With worker processes every batch also
crosses from a worker to the training process through shared memory; the peer is then the
same loader over a dataset whose items are one new tensor of the bytes of ``x`` and ``y``:
what torch's transfer of such a batch from a worker costs by itself. Workers stay alive between epochs
(``persistent_workers=True``), so their start is not counted, as in training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.data import series
from benchmarks.numpy_path import epoch
from benchmarks.report import Row, figure, speed_ratio
from benchmarks.sizes import Sizes
from benchmarks.timing import medians
from seqbatch import StreamBatcher
from seqbatch.torch import StreamDataset

WORKERS = 2


class NewTensors(Dataset[torch.Tensor]):
    """``count`` items, each a new tensor of ``numel`` float32, as a dataset that reads makes."""

    def __init__(self, count: int, numel: int) -> None:
        self.count = count
        self.numel = numel

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.empty(self.numel)


def loader_epoch(dataset: Dataset[Any], num_workers: int) -> Callable[[], None]:
    """A run that reads one epoch of ``dataset`` through a ``DataLoader``."""
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler if isinstance(dataset, StreamDataset) else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )

    def run() -> None:
        for _ in loader:
            pass

    return run


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Two rows: the loader in-process against ``batches[k]``, and with workers against torch's.

    ``workdir`` is unused: every section is called the same way.
    """
    B, W, F, n = sizes.batch_size, sizes.sequence_length, sizes.features, sizes.batches
    batches = StreamBatcher(series(n * B * W + 1, F), batch_size=B, sequence_length=W)
    dataset = StreamDataset(batches)
    runs = {
        "numpy": epoch(batches),
        "in-process": loader_epoch(dataset, 0),
        "workers": loader_epoch(dataset, WORKERS),
        "new": loader_epoch(NewTensors(n, 2 * B * W * F), WORKERS),
    }
    us = {name: t / n * 1e6 for name, t in medians(runs, sizes.repeats).items()}
    case = f"DataLoader(StreamDataset), {B}x{W}x{F} float32"
    return [
        Row(
            "torch",
            f"{case}, 0 workers (adds {figure(us['in-process'] - us['numpy'], 'us/batch', signed=True)})",
            us["in-process"],
            "us/batch",
            peer="batches[k]",
            peer_value=us["numpy"],
            ratio=speed_ratio(us["in-process"], us["numpy"]),
        ),
        Row(
            "torch",
            f"{case}, {WORKERS} workers (adds {figure(us['workers'] - us['new'], 'us/batch', signed=True)})",
            us["workers"],
            "us/batch",
            peer=f"{WORKERS} workers passing one new tensor",
            peer_value=us["new"],
            ratio=speed_ratio(us["workers"], us["new"]),
        ),
    ]
