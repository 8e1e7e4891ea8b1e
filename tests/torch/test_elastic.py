"""Elastic resume: a run checkpointed on N ranks (or devices) goes on on M.

PyTorch DDP (gloo on 127.0.0.1, ``tests/workers/elastic_ddp.py``) trains an LSTM with
truncated BPTT on a fixed global batch of 4 streams, the state of each rank's streams in a
``seqbatch.torch.StreamState``. A run is stopped after some batch, checkpointed (the
weights, the optimizer, the batcher's state and every rank's ``StreamState``, saved by
global stream), and resumed on another number of ranks, each rank loading its own streams'
state from the files of all the ranks before. Every run is a new set of rank processes,
forked by one launcher process that imports torch once for them all. The schedule goes 2 ->
1 -> 2 -> 1 ranks within one epoch: each way, and resumed twice and three times.

References: an uninterrupted run on one rank that carries all four streams is checked
against the numpy replay of its global batches with explicit state (``tests/replay.py``).
The resumed schedule must then give, at every step, the weights, the state of every global
stream and the data of every row of the uninterrupted run, byte for byte, and end with its
final weights.

Keras 3 on JAX (``tests/workers/elastic_keras.py``): ``fit`` under
``keras.distribution.DataParallel`` on CPU devices, with a train step that computes the
gradient of each fixed group of streams apart and adds the groups up in a fixed order. The
run never stopped on 2 devices equals the numpy replay; never stopped on 1 device, and
stopped and resumed by ``seqbatch.keras.BackupAndRestore`` on 2, 1, 2 and then 1 device
(three resumes within one epoch), it is bit-identical to it at every step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import seqbatch
from tests.carried import assert_trained_states_replay, at_epoch, many_series
from tests.replay import LSTMWeights, from_keras, from_torch
from tests.workers import elastic_keras, run_workers
from tests.workers.elastic_ddp import EPOCHS, SCALE, UNITS

pytestmark = pytest.mark.processes

Stop = tuple[int, int]
Phase = tuple[int, "Stop | None"]  # (world size, stop after this batch, or None: the end)


def run_schedules(tmp: Path, schedules: list[list[Phase]]) -> list[dict[str, np.ndarray]]:
    """Run each of ``schedules``: its phases one after the other, each resuming the last.

    Returns the global record of each schedule, per step: ``keys`` (epoch, k), ``weights``
    (the flat parameters before the step, rank 0's; every rank's must be equal), ``states``
    (``h`` of every global stream after the step, the ranks' rows side by side) and
    ``firsts`` (the first value of every global row of the batch); and ``final``, the
    weights at the end.
    """

    def spec(phases: list[Phase]) -> str:
        return ";".join(f"{w}" + ("" if s is None else f":{s[0]},{s[1]}") for w, s in phases)

    env = {
        "GLOO_SOCKET_IFNAME": "lo",
        "SEQBATCH_DIR": str(tmp),
        "SEQBATCH_SCHEDULES": "|".join(spec(phases) for phases in schedules),
    }
    run_workers("tests.workers.elastic_ddp", [env], timeout=40 + 15 * sum(map(len, schedules)))
    return [record(tmp / f"schedule{i}", phases) for i, phases in enumerate(schedules)]


def record(directory: Path, phases: list[Phase]) -> dict[str, np.ndarray]:
    """The global record of one schedule from its ranks' files (see :func:`run_schedules`)."""
    out: dict[str, list[np.ndarray]] = {"keys": [], "weights": [], "states": [], "firsts": []}
    for p, (world, stop) in enumerate(phases):
        ranks = [dict(np.load(directory / f"phase{p}-rank{r}.npz")) for r in range(world)]
        for r in ranks[1:]:
            np.testing.assert_array_equal(r["keys"], ranks[0]["keys"])
            np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])  # DDP kept them
        out["keys"].append(ranks[0]["keys"])
        out["weights"].append(ranks[0]["weights"])
        out["states"].append(np.concatenate([r["states"] for r in ranks], axis=1))
        out["firsts"].append(np.concatenate([r["firsts"] for r in ranks], axis=1))
        if stop is not None:
            assert ranks[0]["keys"][-1].tolist() == list(stop)
    out["final"] = [ranks[0]["final"]]
    return {k: np.concatenate(v) for k, v in out.items()}


def global_batches(scale: float = 1.0) -> list[seqbatch.Batch]:
    """The global batches of every epoch trained, in order, ``x`` times ``scale``."""
    batches = many_series()
    return [
        dataclasses.replace(b, x=b.x * scale)
        for epoch in range(EPOCHS)
        for b in at_epoch(batches, epoch)
    ]


def lstm_weights(flat: np.ndarray, features: int) -> LSTMWeights:
    """Layer 0 of the LSTM from the flat parameters (``nn.Module.parameters()`` order)."""
    shapes = [(4 * UNITS, features), (4 * UNITS, UNITS), (4 * UNITS,), (4 * UNITS,)]
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    return from_torch(*parts)


# Resumed three times within epoch 0, on 2, then 1, then 2, then 1 rank: each way, and the
# second and third resume of one epoch, where other loaders lost the position.
SCHEDULE: list[Phase] = [(2, (0, 3)), (1, (0, 6)), (2, (0, 9)), (1, None)]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """One rank that carries all four streams, never stopped; and ``SCHEDULE``."""
    whole, resumed = run_schedules(tmp_path_factory.mktemp("ddp"), [[(1, None)], SCHEDULE])
    return {"uninterrupted": whole, "resumed": resumed}


@pytest.fixture(scope="module")
def uninterrupted(ddp_runs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return ddp_runs["uninterrupted"]


def test_the_uninterrupted_run_equals_the_numpy_replay(
    uninterrupted: dict[str, np.ndarray],
) -> None:
    expected = global_batches()
    n = len(many_series())
    assert uninterrupted["keys"].tolist() == [[e, k] for e in range(EPOCHS) for k in range(n)]
    for step, b in enumerate(expected):
        assert uninterrupted["firsts"][step].tolist() == b.x[:, 0, 0].tolist(), f"step {step}"
    features = many_series().feature_shape[0]
    weights = [lstm_weights(w, features) for w in uninterrupted["weights"]]
    # StreamState keeps idle streams as they were and run_rnn stops at the last real step:
    # the replay holds the state through padding.
    assert_trained_states_replay(
        list(uninterrupted["states"]), weights, global_batches(SCALE), hold=True
    )


def test_resumed_on_other_numbers_of_ranks_is_bit_identical(
    ddp_runs: dict[str, dict[str, np.ndarray]],
) -> None:
    uninterrupted, resumed = ddp_runs["uninterrupted"], ddp_runs["resumed"]
    # Every batch once, in order, and at every step the same weights, the same state of
    # every global stream and the same data in every row, byte for byte; the same end.
    for name in ("keys", "firsts", "weights", "states", "final"):
        np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)
    assert not np.array_equal(resumed["final"][0], resumed["weights"][0])  # it trained


# --- Keras 3 on JAX -------------------------------------------------------------------------

# devices:steps phases, ";" between runs: uninterrupted on 2 devices, on 1, and resumed on
# 2, 1, 2 and 1 devices, three times within epoch 0 (0: to the end).
KERAS_RUNS = {"on 2 devices": "2:0", "on 1 device": "1:0", "resumed": "2:3,1:3,2:3,1:0"}


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("keras") / "runs.npz"
    env = {
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "SEQBATCH_OUT": str(out),
        "SEQBATCH_RUNS": ";".join(KERAS_RUNS.values()),
    }
    run_workers("tests.workers.elastic_keras", [env], timeout=100)
    saved = dict(np.load(out))
    assert int(saved["devices"]) == 2
    return {
        name: {k.removeprefix(f"run{r}_"): v for k, v in saved.items() if k.startswith(f"run{r}_")}
        for r, name in enumerate(KERAS_RUNS)
    }


def keras_lstm_weights(flat: np.ndarray, features: int) -> LSTMWeights:
    """The LSTM's kernel, recurrent kernel and bias from the flat ``get_weights()``."""
    units = elastic_keras.UNITS
    shapes = [(features, 4 * units), (units, 4 * units), (4 * units,)]
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    return from_keras(*parts)


def test_keras_uninterrupted_run_equals_the_numpy_replay(
    keras_runs: dict[str, dict[str, np.ndarray]],
) -> None:
    run = keras_runs["on 2 devices"]
    # The global batch of every step of both epochs, every row in its place.
    assert run["firsts"].tolist() == [b.x[:, 0, 0].tolist() for b in global_batches()]
    # The state after every step is the replay's with the weights before it.
    features = many_series().feature_shape[0]
    weights = [keras_lstm_weights(w, features) for w in [run["initial"][0], *run["weights"][:-1]]]
    assert_trained_states_replay(list(run["states"]), weights, global_batches(SCALE))


@pytest.mark.parametrize("name", ["on 1 device", "resumed"])
def test_keras_on_other_devices_is_bit_identical(
    keras_runs: dict[str, dict[str, np.ndarray]], name: str
) -> None:
    # Never stopped on 1 device, or resumed on 2, 1, 2, then 1 device: at every step the
    # same rows, weights and state of every global stream as on 2 devices, byte for byte.
    assert len(many_series()) > 9  # the three stops (after steps 3, 6, 9) are in epoch 0
    whole, run = keras_runs["on 2 devices"], keras_runs[name]
    fields = ("initial", "firsts", "weights", "states", "cells")
    for field in (*fields, "final_weights", "final_state", "final_cells"):
        np.testing.assert_array_equal(run[field], whole[field], err_msg=field)
    assert len(run["weights"]) == len(global_batches())
    assert not np.array_equal(run["final_weights"][0], run["initial"][0])  # it trained
