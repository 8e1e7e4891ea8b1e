"""What the PyTorch DDP workers share: their model, and the gloo process group they run in.

:mod:`tests.workers.ddp` and :mod:`tests.workers.elastic_ddp` train the same small LSTM with
the same scale and learning rate, each rank in a process group that it joins from the
environment ``tests/torch/test_ddp.py`` and ``tests/torch/test_elastic.py`` give it:
``RANK``, ``WORLD_SIZE`` (as ``torchrun`` sets them), ``SEQBATCH_RENDEZVOUS`` (a file the
ranks meet through, so that no TCP store listens on any interface) and
``GLOO_SOCKET_IFNAME=lo`` (gloo's own connections stay on 127.0.0.1).

Nothing here imports torch until it is called, and nothing imports TensorFlow: torch.optim
imports triton, which crashes a process that imported TensorFlow first (TF 2.21, torch 2.14).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

UNITS = 3
SCALE = 1e-5  # the codes of tests.encoded reach 110,000: keep the gates unsaturated
LEARNING_RATE = 0.5

T = TypeVar("T")


def lstm_net(features: int) -> Any:
    """A ``torch.nn.LSTM`` of ``UNITS`` units with a linear head, its weights from torch's
    generator as it stands: ``forward(x, state)``, or ``forward(x, state, weight)`` through
    ``seqbatch.torch.run_rnn``, which keeps the padding (weight 0) out of the state."""
    import torch

    from seqbatch.torch import run_rnn

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(features, UNITS, batch_first=True)
            self.head = torch.nn.Linear(UNITS, features)

        def forward(self, x: torch.Tensor, state: Any, weight: Any = None) -> Any:
            if weight is None:
                out, state = self.lstm(x, state)
            else:
                out, state = run_rnn(self.lstm, x, state, weight)
            return self.head(out), state

    return Net()


def in_process_group(main: Callable[[], T]) -> T:
    """``main()`` as one rank of the gloo group the environment names; every rank has
    returned from it (a barrier) before the group is torn down and any rank exits."""
    import torch.distributed

    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{os.environ['SEQBATCH_RENDEZVOUS']}",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        result = main()
        torch.distributed.barrier()  # e.g. every rank's checkpoint is written
    finally:
        torch.distributed.destroy_process_group()
    return result
