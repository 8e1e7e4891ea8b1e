"""The launcher of the multi-process tests stops every process it started, on failure too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.workers import run_workers


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie left to be reaped) within ``within`` s."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = next(line for line in status.read_text().splitlines() if line[:6] == "State:")
        except FileNotFoundError:
            return True
        if "zombie" in state:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    ("fail", "timeout", "cause"),
    [("1", 60.0, "exited 3"), ("0", 2.0, "exited -9")],
    ids=["a worker fails", "the time runs out"],
)
def test_every_process_and_its_children_are_killed(
    tmp_path: Path, fail: str, timeout: float, cause: str
) -> None:
    stuck = {"SEQBATCH_FAIL": "0", "SEQBATCH_OUT": str(tmp_path / "child.pid")}
    other = {**stuck, "SEQBATCH_FAIL": fail}
    begin = time.monotonic()
    with pytest.raises(AssertionError, match="a process failed, or the time") as err:
        run_workers("tests.workers.stuck", [stuck, other], timeout=timeout)
    # Stopped as soon as its peer failed, or the time ran out: not left to wait.
    assert time.monotonic() - begin < 15
    assert "--- process 0 (tests.workers.stuck) exited -9" in str(err.value)
    assert f"--- process 1 (tests.workers.stuck) {cause}" in str(err.value)
    assert gone(int((tmp_path / "child.pid").read_text()))
