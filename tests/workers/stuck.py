"""A worker for testing the launcher: it fails, or it blocks with a child process of its own.

Without ``SEQBATCH_FAIL=1`` it starts a child that sleeps, writes the child's pid to
``SEQBATCH_OUT`` and sleeps itself, as a worker waiting forever on a peer that died would.
With it, it waits for that file, then exits with status 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

if __name__ == "__main__":
    if os.environ.get("SEQBATCH_FAIL") == "1":
        while not os.path.exists(os.environ["SEQBATCH_OUT"]):
            time.sleep(0.05)
        sys.exit(3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["SEQBATCH_OUT"], "w", encoding="utf-8") as f:
        f.write(str(child.pid))
    time.sleep(600)
