"""The benchmark suite's quick run, started in the background as the test session begins.

``python -m benchmarks --quick`` takes minutes and runs in processes of its own, on one core:
the conftest starts it as soon as the tests are collected, when its smoke test is among them,
so that it runs beside the other tests on a machine's second core. The smoke test
(``tests/test_benchmarks.py``) then waits for it and reads what it printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST = "test_quick_run_prints_every_row_and_draws_the_figure"
TIMEOUT_S = 600


@dataclass
class QuickRun:
    """A running ``python -m benchmarks --quick``: its process and its output folder."""

    process: subprocess.Popen[str]
    out: Path

    def wait(self) -> tuple[int, str, str]:
        """The exit status, stdout and stderr, once it ends (killed after ``TIMEOUT_S``)."""
        try:
            stdout, stderr = self.process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            stderr += f"\n(killed after {TIMEOUT_S} s)"
        return self.process.returncode, stdout, stderr

    def stop(self) -> None:
        """Kill it if it still runs, and remove its output folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        shutil.rmtree(self.out, ignore_errors=True)


STASH = pytest.StashKey[QuickRun]()


def start() -> QuickRun:
    """Start the quick run, writing its JSON and figure to a new folder."""
    out = Path(tempfile.mkdtemp(prefix="seqbatch-quick-benchmarks-"))
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return QuickRun(process, out)
