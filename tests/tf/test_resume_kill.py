"""A training process killed with SIGKILL at random steps, and started again with the same
command until it finishes, ends with the weights and RNN states of a run never stopped.

The child (``tests/resume_child.py``) reports every training step and the position of the
checkpoint on disk, then waits, so that each kill lands at an exact step. Four kills per test,
in an order and at steps drawn from a seeded generator:

* mid-epoch, at a step that is neither a checkpoint nor an epoch's end;
* right after a checkpoint was written;
* in the middle of a checkpoint write: the new file is written but not yet renamed, so the
  last good checkpoint must be the one restored;
* mid-epoch again, later on.

After each kill the next process must start from the last good checkpoint (its first step is
the checkpoint's step + 1). The final weights and states are compared byte for byte with
those of an uninterrupted run of the same command (TensorFlow with op determinism, JAX, and
torch on CPU are all bit-identical here).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.keras]

ROOT = Path(__file__).resolve().parents[2]
# Run as a module: run as a script, tests/ would come first on sys.path, and its keras/ and
# torch/ folders of tests would hide the packages of those names.
CHILD = "tests.resume_child"
SAVE_FREQ = 4
TIMEOUT = 120  # seconds for one process, start to end


@dataclass
class Kill:
    """When to kill one process: ``kind`` and the least number of steps it trains first."""

    kind: str  # "mid-epoch", "after-checkpoint" or "in-write"
    after: int


@dataclass
class Ended:
    kind: str  # how it was killed, or "finished"
    killed_at: int | None  # the last step reported before the kill; None if it finished
    checkpoint: int  # the step the checkpoint on disk goes on after
    first_step: int | None  # the first step this process reported
    batches: int  # per epoch


def run_child(adapter: str, backup: str, out: str, kill: Kill | None, log: Path) -> Ended:
    """Run the child until it finishes, or kill it as ``kill`` says."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "BLOCK_IN_WRITE": "2" if kill is not None and kill.kind == "in-write" else "0",
    }
    with log.open("a") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", CHILD, backup, out, adapter],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    assert child.stdin is not None and child.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    first = last = None
    checkpoint, batches = 0, 0
    try:
        while True:
            ready, _, _ = select.select(
                [child.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            assert ready, f"the child gave no sign for {TIMEOUT} s:\n{log.read_text()[-3000:]}"
            line = child.stdout.readline().split()
            if not line:
                child.wait(timeout=30)
                assert child.returncode == 0, log.read_text()[-3000:]
                return Ended("finished", None, checkpoint, first, batches)
            if line[0] == "done":
                child.wait(timeout=30)
                return Ended("finished", None, checkpoint, first, int(line[1]))
            if line[0] == "writing":
                assert kill is not None and kill.kind == "in-write"
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                return Ended(kill.kind, last, checkpoint, first, batches)
            step, saved, batches = int(line[1]), int(line[3]), int(line[5])
            first = step if first is None else first
            last, new_checkpoint = step, saved != checkpoint
            checkpoint = saved
            if (
                kill is not None
                and step - first + 1 >= kill.after
                and (
                    (kill.kind == "after-checkpoint" and new_checkpoint)
                    or (kill.kind == "mid-epoch" and step % batches and step % SAVE_FREQ)
                )
            ):
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                return Ended(kill.kind, step, checkpoint, first, batches)
            child.stdin.write("\n")
            child.stdin.flush()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def final_arrays(path: str) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.parametrize("adapter", ["sequence", "tf.data"])
def test_a_run_killed_at_random_steps_ends_as_one_never_stopped(
    adapter: str, tmp_path: Path
) -> None:
    import keras

    if adapter == "tf.data" and keras.backend.backend() != "tensorflow":
        # A child process that imports TensorFlow, then torch's optimizers, can crash
        # (TensorFlow 2.21 beside triton); tests/keras/test_backup.py resumes tf.data in-process on
        # every backend.
        pytest.skip("the tf.data adapter is killed and resumed with the TensorFlow backend")
    rng = np.random.default_rng(11 if adapter == "sequence" else 12)
    log = tmp_path / "children.log"
    plain = run_child(
        adapter, tempfile.mkdtemp(dir=tmp_path), str(tmp_path / "plain.npz"), None, log
    )
    kinds = ["mid-epoch", "after-checkpoint", "in-write"]
    kills = [Kill(str(k), int(rng.integers(2, 13))) for k in rng.permutation(kinds)]
    kills.append(Kill("mid-epoch", int(rng.integers(2, 13))))
    backup = str(tmp_path / "backup")
    out = str(tmp_path / "resumed.npz")
    history = []
    expected_first = 1
    while True:
        ended = run_child(adapter, backup, out, kills.pop(0) if kills else None, log)
        history.append(ended)
        # Each process goes on right after the last good checkpoint.
        assert ended.first_step == expected_first, history
        if ended.killed_at is None:
            break
        expected_first = ended.checkpoint + 1
        assert len(history) < 10, history
    assert len(history) == 5, history
    killed = [h for h in history if h.killed_at is not None]
    assert any(h.kind == "mid-epoch" and h.killed_at % h.batches for h in killed), history
    assert any(h.kind == "in-write" for h in killed), history
    # Right after a checkpoint: at the step it was saved at, or (saved at an epoch's end,
    # after validation) at the first step of the next epoch.
    after = [h for h in killed if h.kind == "after-checkpoint"]
    assert after and 0 <= after[0].killed_at - after[0].checkpoint <= 1, history
    assert not os.path.exists(backup), "the checkpoint outlived the run"
    for a, b in zip(final_arrays(out), final_arrays(str(tmp_path / "plain.npz")), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"differs by {np.abs(a - b).max()}"
    assert plain.batches == history[-1].batches
