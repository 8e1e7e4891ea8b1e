"""PyTorch DDP: two ranks, each with its own streams, each state equal to the replay of its rows.

Two processes (``tests/workers/ddp.py``) join a gloo process group on 127.0.0.1 and train a
``torch.nn.LSTM`` wrapped in ``DistributedDataParallel`` through ``seqbatch.torch``, with
truncated BPTT carrying the state, over three shuffled epochs of series of unequal lengths
(resets mid-epoch, padding). ``StreamDataset`` takes each rank's streams from
``torch.distributed``. Each rank's state after every step must equal the numpy replay
(``tests/replay.py``) of its rows of the global batch, with that step's weights, which DDP
keeps equal on both ranks. The test data encodes its position, so the first step of every
row each rank was served is checked too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.carried import assert_trained_states_replay, at_epoch, many_series, replay_states
from tests.replay import LSTMWeights, from_torch
from tests.workers import run_workers
from tests.workers.ddp import EPOCHS, SCALE

pytestmark = pytest.mark.processes

WORLD = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each rank recorded, in the order of their ranks."""
    out = tmp_path_factory.mktemp("ddp")
    envs = [
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "GLOO_SOCKET_IFNAME": "lo",
            "SEQBATCH_RENDEZVOUS": str(out / "rendezvous"),
            "SEQBATCH_OUT": str(out / f"rank{rank}.json"),
        }
        for rank in range(WORLD)
    ]
    run_workers("tests.workers.ddp", envs, timeout=60)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def global_batches(scale: float = 1.0) -> list[seqbatch.Batch]:
    """The global batches of every epoch trained, in order, ``x`` times ``scale``."""
    batches = many_series()
    return [
        dataclasses.replace(b, x=b.x * scale)
        for epoch in range(EPOCHS)
        for b in at_epoch(batches, epoch)
    ]


def rows(rank: int) -> slice:
    per_rank = many_series().batch_size // WORLD
    return slice(rank * per_rank, (rank + 1) * per_rank)


def weights_of(record: dict[str, Any]) -> list[LSTMWeights]:
    return [from_torch(*(np.asarray(w) for w in step)) for step in record["weights"]]


def test_each_rank_is_served_its_own_streams_at_every_step(run: list[dict[str, Any]]) -> None:
    expected = global_batches()
    for rank, result in enumerate(run):
        assert (result["rank"], result["world_size"]) == (rank, WORLD)
        # Both ranks step through every batch of every epoch: as many steps, none dropped.
        assert len(result["firsts"]) == len(expected) == EPOCHS * len(many_series())
        for k, (got, b) in enumerate(zip(result["firsts"], expected, strict=True)):
            assert got == b.x[rows(rank), 0, 0].tolist(), f"rank {rank}, step {k}"


def test_each_rank_state_equals_the_replay_of_its_rows(run: list[dict[str, Any]]) -> None:
    weights = weights_of(run[0])
    for rank, result in enumerate(run):
        # DDP averaged the gradients: both ranks hold the same weights at every step.
        assert result["weights"] == run[0]["weights"], f"rank {rank}"
        mine = [
            dataclasses.replace(b, x=b.x[rows(rank)], reset=b.reset[rows(rank)])
            for b in global_batches(SCALE)
        ]
        states = [np.asarray(s) for s in result["states"]]
        assert_trained_states_replay(states, weights, mine)


def test_the_ranks_together_hold_the_single_process_state(run: list[dict[str, Any]]) -> None:
    # One process carrying every stream of the global batch, with the same weights.
    single = replay_states(weights_of(run[0]), global_batches(SCALE))
    together = np.concatenate([np.asarray(result["states"]) for result in run], axis=1)
    np.testing.assert_allclose(together, np.stack(single), atol=1e-6)
    assert not np.allclose(single[-1][rows(0)], single[-1][rows(1)], atol=1e-3)


def test_a_distributed_sampler_is_refused_at_the_first_batch(run: list[dict[str, Any]]) -> None:
    n = len(many_series())
    for rank, result in enumerate(run):
        # It deals batch indices round-robin: rank r would read batches r, r + 2, ...
        assert result["dealt_by_distributed_sampler"] == list(range(rank, n, WORLD))
        assert result["distributed_sampler"].startswith(
            "`key` must be a pair (epoch, k), as StreamDataset.sampler yields them"
        )
        assert "DistributedSampler" in result["distributed_sampler"]
        assert result["distributed_sampler"].endswith(f"Received: key={rank}")
