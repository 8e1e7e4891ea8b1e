"""Processes that tests wait for, started in the background as the test session begins.

Some tests run a whole program in a fresh process and only check what it printed: the
benchmark suite's quick run (minutes) and every documentation page (``tests/test_docs.py``).
The conftest starts those of the collected tests as soon as collection ends, one at a time in
one thread, so that they run beside the other tests on a machine's second core; each test then
waits for its own (:func:`result`) and checks it as before. A test run alone waits as long as
its process takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


@dataclass
class Job:
    """One process: its arguments after ``python``, its environment additions, and its result."""

    args: list[str]
    env: dict[str, str]
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="seqbatch-bg-")))
    done: threading.Event = field(default_factory=threading.Event)
    result: subprocess.CompletedProcess[str] | None = None


class Jobs:
    """The jobs of one session, by name, run one after another in one daemon thread."""

    def __init__(self, jobs: dict[str, Job]) -> None:
        self.jobs = jobs
        self.stopping = False
        self.running: subprocess.Popen[str] | None = None
        self.thread = threading.Thread(target=self._run_all, daemon=True)
        self.thread.start()

    def _run_all(self) -> None:
        for job in self.jobs.values():
            if self.stopping:
                break
            try:
                with subprocess.Popen(
                    [sys.executable, *job.args],
                    cwd=job.folder,
                    env={**os.environ, **job.env},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ) as process:
                    self.running = process
                    try:
                        out, err = process.communicate(timeout=TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        out, err = process.communicate()
                        err += f"\n(killed after {TIMEOUT_S} s)"
                    job.result = subprocess.CompletedProcess(
                        process.args, process.returncode, out, err
                    )
            finally:
                job.done.set()

    def result(self, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        """The finished process of job ``name`` and its working folder; waits for it."""
        job = self.jobs[name]
        if not job.done.wait(timeout=TIMEOUT_S * (len(self.jobs) + 1)):
            pytest.fail(f"background job {name!r} never finished")
        if job.result is None:
            pytest.fail(f"background job {name!r} did not start (see the errors above)")
        return job.result, job.folder

    def stop(self) -> None:
        """Kill the job that runs, start no other, and remove every working folder."""
        self.stopping = True
        if self.running is not None and self.running.poll() is None:
            self.running.kill()
        self.thread.join(timeout=30)
        for job in self.jobs.values():
            shutil.rmtree(job.folder, ignore_errors=True)


STASH = pytest.StashKey[Jobs]()
# The tests whose process runs in the background: test function name -> how to make its job.
BENCHMARKS_TEST = "test_quick_run_prints_every_row_and_draws_the_figure"
PAGES_TEST = "test_page_examples_run"


def page_job(path: Path, name: str) -> Job:
    """A documentation page, run by ``tests.test_docs`` as a module in an empty folder.

    As a module: run as a script, tests/ would come first on ``sys.path``, and its keras/ and
    torch/ folders of tests would hide the packages of those names.
    """
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return Job(
        ["-m", "tests.test_docs", str(path), name],
        # The checkout's seqbatch, as in the rest of the suite; TensorFlow's C++ logs quiet.
        {"PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def benchmarks_job() -> Job:
    """``python -m benchmarks --quick``, writing its JSON and figure to the job's folder."""
    job = Job([], {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)})
    job.args = ["-m", "benchmarks", "--quick", "--out", str(job.folder)]
    return job


def start(items: list[pytest.Item]) -> Jobs | None:
    """Start the jobs of the collected ``items`` that have one; None if none has."""
    jobs: dict[str, Job] = {}
    for item in items:
        name = getattr(item, "originalname", item.name)
        if name == BENCHMARKS_TEST:
            jobs[BENCHMARKS_TEST] = benchmarks_job()
        elif name == PAGES_TEST and "test_docs" in item.nodeid:
            path = item.callspec.params["path"]  # type: ignore[attr-defined]
            page = str(path.relative_to(ROOT))
            jobs[page] = page_job(path, page)
    # In the order the tests come, so that the first to wait finds its own done first.
    return Jobs(jobs) if jobs else None
