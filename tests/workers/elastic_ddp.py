"""Elastic DDP training: a run checkpointed on some number of ranks resumes on another.

Run by ``tests/torch/test_elastic.py`` as ``python -m tests.workers.elastic_ddp`` with
``SEQBATCH_DIR`` (a directory) and ``SEQBATCH_SCHEDULES``: schedules, ``|`` between them,
each made in ``SEQBATCH_DIR/schedule{i}``; a schedule is runs made one after the other, ``;``
between them, each ``"world"`` (train to the end) or ``"world:epoch,k"`` (save a checkpoint
after training on batch ``k`` of that epoch, and stop). This process imports torch once and
forks a new set of ``world`` processes for each run (:func:`launch`), each one rank of a new
gloo group (:mod:`tests.workers.gloo`) that resumes from the checkpoint of the run before;
rank ``r`` of run ``p`` writes what it trained to ``phase{p}-rank{r}.npz`` and its
checkpoint to ``checkpoint-{p}/``.

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


def launch(directory: Path, phases: list[tuple[int, str]]) -> None:
    """Each of ``phases`` (world size, ``"epoch,k"`` or ``""``) in turn, its ranks forked.

    torch (and the torch._dynamo that DDP imports) is imported here once, before any fork
    and before any tensor op, instead of seconds in every rank's own process; every rank is
    still a new process, in a new process group, that knows only the checkpoint before.
    Raises SystemExit if a rank fails.
    """
    import traceback

    import numpy as np
    import torch._dynamo  # imported once, for every rank
    import torch.distributed
    import torch.nn.parallel  # noqa: F401

    import seqbatch.torch  # noqa: F401
    import tests.carried  # noqa: F401

    resume = ""
    for p, (world, stop) in enumerate(phases):
        checkpoint = directory / f"checkpoint-{p}"
        checkpoint.mkdir()
        children = []
        for rank in range(world):
            env = {
                "RANK": str(rank),
                "WORLD_SIZE": str(world),
                "SEQBATCH_RENDEZVOUS": str(directory / f"rendezvous-{p}"),
                "SEQBATCH_RESUME": resume,
                "SEQBATCH_STOP": stop,
                "SEQBATCH_CHECKPOINT": str(checkpoint),
            }
            pid = os.fork()
            if pid == 0:  # a rank: train, write, and leave without returning here
                code = 1
                try:
                    os.environ.update(env)
                    result = in_process_group(main)  # every checkpoint written before exit
                    out = directory / f"phase{p}-rank{rank}.npz"
                    np.savez(out, **{k: np.asarray(v) for k, v in result.items()})
                    code = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise SystemExit(f"phase {p}: rank {children.index(pid)} failed ({status})")
        resume = str(checkpoint)


if __name__ == "__main__":
    for i, schedule in enumerate(os.environ["SEQBATCH_SCHEDULES"].split("|")):
        directory = Path(os.environ["SEQBATCH_DIR"]) / f"schedule{i}"
        directory.mkdir()
        phases = [phase.partition(":") for phase in schedule.split(";")]
        launch(directory, [(int(world), stop) for world, _, stop in phases])
