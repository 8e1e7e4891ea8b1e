"""One rank of one run of elastic DDP training: resume on another number of ranks.

Run by ``tests/torch/test_elastic.py`` as ``python -m tests.workers.elastic_ddp``, once per rank,
with the environment of its process group (:mod:`tests.workers.gloo`), ``SEQBATCH_OUT`` (the
``.npz`` file this rank writes what it trained), and ``SEQBATCH_RESUME``, the checkpoint directory of the run
before (empty: start from scratch), ``SEQBATCH_STOP``, ``"epoch,k"``: save a checkpoint to
``SEQBATCH_CHECKPOINT`` after training on batch ``k`` of that epoch, and stop (empty: train
to the end).

The global batch is fixed (``tests.carried.many_series``, 4 streams); each rank holds its
``4 / WORLD_SIZE`` streams (``StreamDataset`` takes them from ``torch.distributed``) and their
carried LSTM state in a ``seqbatch.torch.StreamState``. A checkpoint is the weights and the
optimizer (rank 0), the batcher's state (rank 0: the same on every rank) and every rank's
``StreamState.state_dict()``, which holds its streams under their global index; a resumed
rank loads all of those and keeps its own streams.

Bit for bit on any number of ranks: each rank runs its streams in groups of ``GROUP``
streams, a forward and a backward per group, so that every group's arithmetic is the same
whatever rank holds it. The loss of a group is its share of the mean over the global batch,
times the world size, which DDP's average of the ranks' gradients divides back (exactly: a
power of two). One rank of 4 streams adds up the gradients of its two groups, in order; two
ranks add up theirs in gloo's sum of two: ``g0 + g1`` both ways.

This process never imports TensorFlow (see :mod:`tests.workers.gloo`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from tests.workers.gloo import LEARNING_RATE, SCALE, UNITS, in_process_group, lstm_net

__all__ = ["EPOCHS", "GROUP", "SCALE", "UNITS"]  # what tests/torch/test_elastic.py reads

EPOCHS = 2
GROUP = 2  # streams per forward and backward: the batch size over the largest world


def main() -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

    from seqbatch.torch import StreamDataset, StreamState
    from tests.carried import many_series

    torch.set_num_threads(1)  # the same kernels, whatever the machine's load

    world = int(os.environ["WORLD_SIZE"])
    resume = os.environ.get("SEQBATCH_RESUME", "")
    stop_text = os.environ.get("SEQBATCH_STOP", "")
    stop = tuple(int(v) for v in stop_text.split(",")) if stop_text else None

    batches = many_series()  # the global batch: every rank builds the same
    torch.manual_seed(0)
    model = lstm_net(batches.feature_shape[0])
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    if resume:
        saved = torch.load(Path(resume) / "model.pt", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        batches.load_state_dict(saved["batches"])
    ddp = DistributedDataParallel(model)
    dataset = StreamDataset(batches)  # this rank's streams, from the saved batch on
    carried = StreamState(dataset, dim=1)  # nn.LSTM's (h, c): (layers, streams, units)
    if resume:
        # Every rank's file, whatever the number of ranks that saved them: keep our streams.
        files = sorted(Path(resume).glob("streams-*.pt"))
        carried.load_state_dict([torch.load(f, weights_only=True) for f in files])
    loader = DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
    per_rank = len(carried.streams)
    groups = [slice(g, g + GROUP) for g in range(0, per_rank, GROUP)]
    scale = world / (batches.batch_size * batches.sequence_length)

    out: dict[str, list[Any]] = {"keys": [], "weights": [], "states": [], "firsts": []}
    for epoch in range(dataset.epoch, EPOCHS):
        dataset.set_epoch(epoch)
        for b in loader:
            out["keys"].append([b.epoch, b.index])
            out["weights"].append(
                np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
            )
            out["firsts"].append(b.x[:, 0, 0].numpy())
            state = carried.state_for(b)
            optimizer.zero_grad()
            new_parts = []
            for i, rows in enumerate(groups):
                part = None if state is None else tuple(s[:, rows].contiguous() for s in state)
                weight = b.sample_weight[rows]
                # DDP reduces the gradients once, after the last group's backward.
                with ddp.no_sync() if i + 1 < len(groups) else contextlib.nullcontext():
                    prediction, new = ddp(b.x[rows] * SCALE, part, weight)
                    error = ((prediction - b.y[rows] * SCALE) ** 2).mean(-1)
                    ((error * weight).sum() * scale).backward()
                new_parts.append(new)
            optimizer.step()
            carried.update(b, tuple(torch.cat(s, dim=1) for s in zip(*new_parts, strict=True)))
            out["states"].append(carried.state[0][0].numpy().copy())
            if (b.epoch, b.index) == stop:
                save(carried, model, optimizer, batches, b)
                return out
    out["final"] = [np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])]
    return out


def save(carried: Any, model: Any, optimizer: Any, batches: Any, b: Any) -> None:
    """The checkpoint after batch ``b``: every rank its streams, rank 0 the rest."""
    import torch

    directory = Path(os.environ["SEQBATCH_CHECKPOINT"])
    rank = int(os.environ["RANK"])
    torch.save(carried.state_dict(), directory / f"streams-{rank}.pt")
    if rank == 0:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "batches": batches.state_dict(epoch=b.epoch, next_batch=b.index + 1),
            },
            directory / "model.pt",
        )


if __name__ == "__main__":
    import numpy as np

    result = in_process_group(main)  # every rank's checkpoint is written before any exits
    np.savez(os.environ["SEQBATCH_OUT"], **{k: np.asarray(v) for k, v in result.items()})
