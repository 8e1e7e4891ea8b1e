"""One rank of PyTorch ``DistributedDataParallel`` (gloo): truncated BPTT through seqbatch.torch.

Run by ``tests/torch/test_ddp.py`` as ``python -m tests.workers.ddp``, once per rank, with
the environment of its process group (:mod:`tests.workers.gloo`) and ``SEQBATCH_OUT``, the
JSON file to write.

The LSTM with a linear head of :func:`tests.workers.gloo.lstm_net`, wrapped in DDP, is trained on
``tests.carried.many_series`` (series of unequal lengths, resets mid-epoch, padding, a new
layout each epoch) through ``StreamDataset``, which takes its rank and world size from
``torch.distributed``, and a ``DataLoader`` with two worker processes. The state is carried
from window to window, its flagged rows reset, and detached after each step. After every
step the rank records the weights, its state and the first step of each row it was served.
Then it records what a ``DistributedSampler`` over the same dataset does.

This process never imports TensorFlow (see :mod:`tests.workers.gloo`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from tests.workers.gloo import LEARNING_RATE, SCALE, in_process_group, lstm_net

EPOCHS = 3


def main() -> dict[str, Any]:
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from seqbatch.torch import StreamDataset, detach, reset_rows, weighted_mean
    from tests.carried import many_series

    batches = many_series()
    torch.manual_seed(0)
    model = lstm_net(batches.feature_shape[0])
    ddp = DistributedDataParallel(model)  # rank 0's initial weights, sent to every rank
    optimizer = torch.optim.SGD(ddp.parameters(), lr=LEARNING_RATE)
    dataset = StreamDataset(batches)  # rank and world size from torch.distributed
    loader = DataLoader(
        dataset,
        batch_size=None,
        sampler=dataset.sampler,
        num_workers=2,
        persistent_workers=True,
        timeout=60,
    )
    out: dict[str, Any] = {
        "rank": dataset.rank,
        "world_size": dataset.world_size,
        "weights": [],
        "states": [],
        "firsts": [],
    }
    state = None
    for epoch in range(EPOCHS):
        dataset.set_epoch(epoch)
        for b in loader:
            out["weights"].append([p.detach().numpy().tolist() for p in model.lstm.parameters()])
            out["firsts"].append(b.x[:, 0, 0].tolist())
            state = reset_rows(state, b.reset, dim=1)
            prediction, state = ddp(b.x * SCALE, state)
            error = ((prediction - b.y * SCALE) ** 2).mean(-1)
            optimizer.zero_grad()
            weighted_mean(error, b.sample_weight).backward()  # DDP averages the ranks' grads
            optimizer.step()
            state = detach(state)
            out["states"].append(state[0][0].numpy().tolist())

    # torch's sampler for DDP deals batch indices to the ranks; the dataset refuses it.
    sampler = DistributedSampler(dataset, shuffle=False)
    out["dealt_by_distributed_sampler"] = list(sampler)
    try:
        next(iter(DataLoader(dataset, batch_size=None, sampler=sampler)))
        out["distributed_sampler"] = "served a batch"
    except TypeError as err:
        out["distributed_sampler"] = str(err)
    return out


if __name__ == "__main__":
    result = in_process_group(main)
    with open(os.environ["SEQBATCH_OUT"], "w", encoding="utf-8") as f:
        json.dump(result, f)
