"""Without Keras, seqbatch.keras names the extra to install, for the Keras backend asked for.

Each case runs in a fresh process in which a ``sys.meta_path`` finder refuses to import Keras,
as on a machine where it is not installed.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

BLOCK_KERAS = """
import sys

class NoKeras:
    def find_spec(self, name, path=None, target=None):
        if name == "keras" or name.startswith("keras."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoKeras())
"""

CALLS = {
    "import seqbatch.keras": "import seqbatch.keras",
    "to_keras_sequence()": (
        "import numpy as np, seqbatch\n"
        "seqbatch.StreamBatcher(np.zeros((9, 1)), batch_size=1, sequence_length=3)"
        ".to_keras_sequence()"
    ),
}

INSTALLS = {
    "tensorflow": 'python -m pip install "seqbatch[tf]"',
    "jax": 'python -m pip install keras "seqbatch[jax]"',
    "torch": 'python -m pip install keras "seqbatch[torch]"',
}


@pytest.mark.parametrize("backend", sorted(INSTALLS))
@pytest.mark.parametrize("call", sorted(CALLS))
def test_without_keras_the_error_names_the_extra(call: str, backend: str) -> None:
    code = BLOCK_KERAS + "\ntry:\n" + "".join(f"    {line}\n" for line in CALLS[call].split("\n"))
    code += (
        "except ModuleNotFoundError as err:\n"
        "    print(type(err).__name__, err.name)\n"
        "    print(err)\n"
    )
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kind, message = done.stdout.strip().split("\n", 1)
    assert kind == "ModuleNotFoundError keras"
    assert message == (
        "seqbatch.keras needs Keras 3 and the framework of its backend, "
        f"KERAS_BACKEND={backend} (No module named 'keras'): {INSTALLS[backend]}"
    )
