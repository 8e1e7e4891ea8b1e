"""Keras 3 ``keras.distribution.DataParallel`` on JAX: two devices, then two processes.

``tests/workers/keras_jax.py`` trains a stateful LSTM (in ``StreamReset``) with ``Model.fit``
on series of unequal lengths over two shuffled epochs (resets mid-epoch, padding), once per
way of feeding seqbatch's batches to the distribution: in one process over two CPU devices
(``XLA_FLAGS`` set for that process alone), and in two processes of one CPU device each,
joined by ``jax.distributed`` on 127.0.0.1.

The model is one program over the global batch. After every step, the state must equal
the numpy replay (``tests/replay.py``) of the global batch with that step's weights, and the
state of the same model trained on one device; each device must hold its own rows of the
data, and every copy of the state the processes hold must equal the one-device state. The
ways that would deal batches to processes by index are refused, each by its message.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.carried import assert_trained_states_replay, at_epoch, many_series
from tests.replay import LSTMWeights, from_keras
from tests.workers import free_ports, run_workers
from tests.workers.keras_jax import EPOCHS, SCALE

pytestmark = [pytest.mark.processes, pytest.mark.needs_tensorflow]

PARTS = 2  # devices of the one process; processes of the other run
JAX = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
WHOLE = [0, many_series().batch_size]  # every row of a batch


def launch(tmp: Path, envs: list[dict[str, str]], timeout: float) -> list[dict[str, Any]]:
    for i, env in enumerate(envs):
        env.update(JAX, SEQBATCH_OUT=str(tmp / f"process{i}.json"))
    run_workers("tests.workers.keras_jax", envs, timeout=timeout)
    return [json.loads((tmp / f"process{i}.json").read_text()) for i in range(len(envs))]


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the process over two CPU devices recorded."""
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={PARTS}"}
    return launch(tmp_path_factory.mktemp("devices"), [env], timeout=60)[0]


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of two processes recorded, in the order of their process indices."""
    tmp = tmp_path_factory.mktemp("processes")
    for attempt in range(3):
        coordinator = f"127.0.0.1:{free_ports(1)[0]}"
        envs = [
            {
                "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                "SEQBATCH_COORDINATOR": coordinator,
                "SEQBATCH_PROCESS": str(p),
                "SEQBATCH_PROCESSES": str(PARTS),
            }
            for p in range(PARTS)
        ]
        try:
            results = launch(tmp, envs, timeout=90)
            break
        except AssertionError as err:
            # Another process may take the free port before the coordinator binds it.
            if "Failed to start RPC server" not in str(err) or attempt == 2:
                raise
    return results


def global_batches(scale: float = 1.0) -> list[seqbatch.Batch]:
    """The global batches of every epoch trained, in order, ``x`` times ``scale``."""
    batches = many_series()
    return [
        dataclasses.replace(b, x=b.x * scale)
        for epoch in range(EPOCHS)
        for b in at_epoch(batches, epoch)
    ]


def rows(part: int) -> list[int]:
    """``[start, stop)`` of the rows of device (or process) ``part``."""
    per_part = many_series().batch_size // PARTS
    return [part * per_part, (part + 1) * per_part]


def weights_of(record: dict[str, Any]) -> list[LSTMWeights]:
    return [from_keras(*(np.asarray(w) for w in step)) for step in record["weights"]]


def assert_run_equals_one_device(record: dict[str, Any], single: dict[str, Any]) -> None:
    """Every step, then every copy of the final state, equals the replay and one device's."""
    expected = global_batches()
    assert single["firsts"] == [b.x[:, 0, 0].tolist() for b in expected]
    # The model saw the global batch of every step of both epochs, its rows in their places.
    assert record["firsts"] == single["firsts"]
    assert_trained_states_replay(
        [np.asarray(s) for s in record["states"]], weights_of(record), global_batches(SCALE)
    )
    for k, (state, full) in enumerate(zip(record["states"], single["states"], strict=True)):
        np.testing.assert_allclose(state, full, atol=1e-6, err_msg=f"step {k}")
    final = np.asarray(single["states"][-1])
    for device, copy in record["final"].items():
        np.testing.assert_allclose(copy, final, atol=1e-6, err_msg=f"device {device}")
    # The devices hold different streams: had they swapped rows, this could not pass.
    assert not np.allclose(final[slice(*rows(0))], final[slice(*rows(1))], atol=1e-3)


@pytest.mark.parametrize("way", ["sequence", "dataset"])
def test_each_device_is_given_its_rows_of_every_batch(devices: dict[str, Any], way: str) -> None:
    # Keras puts the batch axis over the mesh: device d holds rows [d * B / D, (d + 1) * B / D).
    assert devices["devices"] == devices["local_devices"] == [0, 1]
    assert devices[way]["data_layout"] == {str(d): rows(d) for d in range(PARTS)}
    assert devices["single"]["data_layout"] == {"0": WHOLE}


@pytest.mark.parametrize("way", ["sequence", "dataset"])
def test_the_state_is_replicated_and_equals_one_device(devices: dict[str, Any], way: str) -> None:
    # Not split by rows: every device holds the whole (B, units) state, all of it exact.
    assert devices[way]["state_layout"] == {str(d): WHOLE for d in range(PARTS)}
    assert_run_equals_one_device(devices[way], devices["single"])


WAYS = ["dataset", "dataset_shard", "sequence_shard"]


@pytest.mark.parametrize("way", WAYS)
def test_each_process_feeds_its_rows_of_every_batch(
    processes: list[dict[str, Any]], way: str
) -> None:
    for p, result in enumerate(processes):
        assert result["process"] == p
        (device,) = result["local_devices"]
        # Process p's device holds rows [p * B / P, (p + 1) * B / P) of the global batch.
        assert result[way]["data_layout"][str(device)] == rows(p)
        assert len(result[way]["firsts"]) == EPOCHS * len(many_series())


@pytest.mark.parametrize("way", WAYS)
def test_every_process_state_equals_one_device(processes: list[dict[str, Any]], way: str) -> None:
    single = processes[0]["single"]
    for p, result in enumerate(processes):
        # One program over both processes: both hold the same weights at every step.
        assert result[way]["weights"] == processes[0][way]["weights"], f"process {p}"
        # Replicated over the devices of both processes: each process holds every row.
        assert result[way]["state_layout"] == {str(d): WHOLE for d in result["devices"]}
        assert_run_equals_one_device(result[way], single)


def test_keras_refuses_a_sequence_it_would_shard(processes: list[dict[str, Any]]) -> None:
    # Keras 3.15.1 shards only a tf.data.Dataset itself. If this fails, Keras now takes a
    # PyDataset here (keras-team/keras#23044 deals its batches by index): seqbatch's
    # refusal below must then be what the user sees.
    for result in processes:
        assert result["sequence_auto_shard"]["steps"] == 0
        assert result["sequence_auto_shard"]["message"].startswith(
            "When using a multi-worker distribution with auto-sharding enabled, the data "
            "must be provided as a `tf.data.Dataset` instance."
        )


def test_seqbatch_refuses_a_sequence_dealt_by_batch_index(
    processes: list[dict[str, Any]],
) -> None:
    for result in processes:
        assert result["sequence_adapter_auto_shard"]["steps"] == 0
        assert result["sequence_adapter_auto_shard"]["message"] == (
            "`auto_shard_dataset` of the Keras distribution must be False for a "
            "StreamSequence read by several processes: Keras would deal its batches to the "
            "2 processes by index (process p reading batches p, p + 2, ...), so that row i "
            "of a batch would no longer continue row i of the batch before. Give each "
            "process its own streams instead, StreamSequence(batches.shard("
            "distribution.data_shard_id, 2)) (for DataParallel, batches.shard("
            "jax.process_index(), jax.process_count())), and set "
            "distribution.auto_shard_dataset = False. Received: auto_shard_dataset=True with "
            "2 processes"
        )


def test_a_process_feeding_every_row_is_refused(processes: list[dict[str, Any]]) -> None:
    # auto_shard_dataset=False without shard(): each process's batch would be taken as its
    # part of a global batch twice as large as the model's.
    for result in processes:
        assert result["sequence_unsharded"]["steps"] == 0
        assert result["sequence_unsharded"]["message"] == (
            "`batch_size` of the batches must be the batch size that the model's stateful "
            "RNNs were built for, since each row is one stream with its own state. Received: "
            "batch_size=4 (one process's part, 8 rows in all over 2) for layer 'lstm', built "
            "for batch size 4: build the model with keras.Input(batch_shape=(8, ...)) or the "
            "StreamBatcher with batch_size=2"
        )
