"""Worker processes of the multi-process tests, and the launcher that runs them.

Each module here is one process of a distributed job (``python -m tests.workers.<name>``):
a worker of ``MultiWorkerMirroredStrategy`` (:mod:`tests.workers.mwms`), a rank of PyTorch
DDP (:mod:`tests.workers.ddp`). It writes what it saw and trained to a JSON file, and the
test that launched it checks that file against ``tests/replay.py``.

:func:`run_workers` starts the processes together on loopback addresses, bounds them in
time, and kills every one of them (and anything they started) as soon as one fails or the
time is up, so that a worker blocked on a peer that died never outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (bound together, then freed)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(module: str, envs: list[dict[str, str]], *, timeout: float) -> None:
    """Run ``python -m module`` once per entry of ``envs``, all at once, within ``timeout`` s.

    Each process gets the environment of this one, updated with its entry, and the checkout
    first on ``PYTHONPATH``. Raises AssertionError, with the end of every process's output,
    if one exits with an error or the time runs out; every process still running is then
    killed with its process group.
    """
    base = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with tempfile.TemporaryDirectory() as logs:
        processes, outputs = [], []
        try:
            for i, env in enumerate(envs):
                output = open(Path(logs) / f"{i}.log", "w+b")  # noqa: SIM115 - closed below
                outputs.append(output)
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", module],
                        cwd=ROOT,
                        env={**base, **env},
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own group: killed with its children
                    )
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                codes = [p.poll() for p in processes]  # every one, each time
                if None not in codes or any(code not in (None, 0) for code in codes):
                    break
                time.sleep(0.1)
        finally:
            for p in processes:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            reports = []
            for i, (p, output) in enumerate(zip(processes, outputs, strict=False)):
                output.seek(0)
                text = output.read().decode(errors="replace")
                output.close()
                reports.append(f"--- process {i} ({module}) exited {p.returncode}:\n{text[-4000:]}")
    if any(p.returncode != 0 for p in processes):
        raise AssertionError(
            f"{module}: a process failed, or the time ({timeout} s) ran out:\n" + "\n".join(reports)
        )


def run_script(path: str, *, timeout: float) -> dict[str, Any]:
    """Run the test file ``path`` as a script in a fresh process (its ``__main__`` part sets up
    devices that one process cannot change once TensorFlow starts) and return the JSON of its
    last line of output."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, path], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
