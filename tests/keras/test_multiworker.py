"""MultiWorkerMirroredStrategy: two worker processes, each replica on its own streams.

Two processes (``tests/workers/mwms.py``) form a cluster on 127.0.0.1 and train a stateful
LSTM, with resets, on series of unequal lengths over two shuffled epochs, both ways of
handing seqbatch's dataset to the strategy: ``distribute_datasets_from_function`` with the
input context, and ``experimental_distribute_dataset`` of the global dataset. The loop is
``strategy.run`` (``Model.fit`` fails under this strategy in Keras 3: the last test shows it).

Each worker's state after every step must equal the numpy replay (``tests/replay.py``) of
its own rows of the global batch with that step's weights, and the rows of the same model
trained on one device over the global batch. The test data encodes its position, so the
first step of every row each worker was dealt is checked too.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.carried import assert_trained_states_replay, at_epoch, many_series
from tests.replay import LSTMWeights, from_keras
from tests.workers import free_ports, run_workers
from tests.workers.mwms import EPOCHS, SCALE

pytestmark = pytest.mark.processes

WORKERS = 2
WAYS = ["from_function", "plain"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each worker recorded, in the order of their task indices."""
    out = tmp_path_factory.mktemp("mwms")
    for attempt in range(3):
        cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]}
        envs = [
            {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}
                ),
                "SEQBATCH_OUT": str(out / f"worker{i}.json"),
            }
            for i in range(WORKERS)
        ]
        try:
            run_workers("tests.workers.mwms", envs, timeout=90)
            break
        except AssertionError as err:
            # Another process may take a free port before TensorFlow's server binds it.
            if "Could not start gRPC server" not in str(err) or attempt == 2:
                raise
    return [json.loads((out / f"worker{i}.json").read_text()) for i in range(WORKERS)]


def global_batches() -> list[seqbatch.Batch]:
    """The global batches of every epoch trained, in order."""
    batches = many_series()
    return [b for epoch in range(EPOCHS) for b in at_epoch(batches, epoch)]


def rows(worker: int) -> slice:
    per_worker = many_series().batch_size // WORKERS
    return slice(worker * per_worker, (worker + 1) * per_worker)


def weights_of(record: dict[str, Any]) -> list[LSTMWeights]:
    return [from_keras(*(np.asarray(w) for w in step)) for step in record["weights"]]


@pytest.mark.parametrize("way", WAYS)
def test_each_worker_is_dealt_its_own_streams_at_every_step(
    run: list[dict[str, Any]], way: str
) -> None:
    expected = global_batches()
    for worker, result in enumerate(run):
        assert result["worker"] == worker
        firsts = result[way]["firsts"]
        # Both workers run every batch of both epochs: as many steps, none dropped.
        assert len(firsts) == len(expected) == EPOCHS * len(many_series())
        for k, (got, b) in enumerate(zip(firsts, expected, strict=True)):
            assert got == b.x[rows(worker), 0, 0].tolist(), f"worker {worker}, step {k}"


@pytest.mark.parametrize("way", WAYS)
def test_each_replica_state_equals_the_replay_of_its_rows(
    run: list[dict[str, Any]], way: str
) -> None:
    weights = weights_of(run[0][way])
    for worker, result in enumerate(run):
        # The gradients were summed across the workers: both hold the same weights.
        assert result[way]["weights"] == run[0][way]["weights"], f"worker {worker}"
        mine = [
            dataclasses.replace(b, x=b.x[rows(worker)] * SCALE, reset=b.reset[rows(worker)])
            for b in global_batches()
        ]
        states = [np.asarray(s) for s in result[way]["states"]]
        assert_trained_states_replay(states, weights, mine)


@pytest.mark.parametrize("way", WAYS)
def test_each_replica_state_equals_its_rows_trained_on_one_device(
    run: list[dict[str, Any]], way: str
) -> None:
    single = [np.asarray(s) for s in run[0]["single"]["states"]]
    assert run[0]["single"]["firsts"] == [b.x[:, 0, 0].tolist() for b in global_batches()]
    for worker, result in enumerate(run):
        for k, (state, full) in enumerate(zip(result[way]["states"], single, strict=True)):
            np.testing.assert_allclose(
                state, full[rows(worker)], atol=1e-6, err_msg=f"worker {worker}, step {k}"
            )
    # The workers hold different streams: had they swapped, this could not pass.
    assert not np.allclose(single[-1][rows(0)], single[-1][rows(1)], atol=1e-3)


def test_auto_shard_off_gives_every_worker_every_row_block(run: list[dict[str, Any]]) -> None:
    # A user who sets the policy OFF on seqbatch's dataset: each worker trains on both
    # replicas' blocks of every batch, one after the other, so that its one stateful replica
    # alternates between two sets of streams, for twice the steps, and nothing fails.
    blocks = [b.x[rows(worker), 0, 0].tolist() for b in many_series() for worker in (0, 1)]
    for result in run:
        assert result["OFF"] == blocks


def test_auto_shard_file_is_refused_by_tensorflow(run: list[dict[str, Any]]) -> None:
    for result in run:
        assert result["FILE"].startswith("NotFoundError: ")
        assert "Found an unshardable source dataset" in result["FILE"]


def test_fit_fails_under_this_strategy_in_keras_3(run: list[dict[str, Any]]) -> None:
    # keras-team/keras#20585 (Keras 3.15.1, TF 2.21): before training, fit reduces its probe
    # batch across workers and fails, for any model and either way. If this test fails,
    # Keras fixed it: then train with fit in tests/workers/mwms.py and prove its states.
    for result in run:
        for way in WAYS:
            assert result["fit"][way] == "ValueError: Attempt to convert a value (PerReplica:{"
