"""The markers that select tests per Keras backend, for tests/ and the docstring examples.

CI runs the whole suite on the TensorFlow backend, then ``pytest -m keras`` on JAX and torch
(see README.md): the ``keras`` marker is on every test module whose result depends on the
Keras backend, and here on the docstring examples of ``seqbatch/keras/``.
``needs_tensorflow`` and ``tensorflow_backend`` tests are skipped, with the reason, where
TensorFlow or its Keras backend is missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

KERAS_PACKAGE = Path(__file__).resolve().parent / "seqbatch" / "keras"


def keras_backend() -> str:
    """The Keras backend of this run, read as Keras reads it, without importing Keras."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def pytest_configure(config: pytest.Config) -> None:
    # On the torch backend, Keras imports torch._dynamo and with it triton, and triton crashes
    # the process (a segmentation fault) when TensorFlow was imported first. Test modules
    # that use tf.data import TensorFlow as they are collected, in the order of their folders,
    # so Keras, and torch with it, is imported here, before any of them.
    if keras_backend() == "torch" and importlib.util.find_spec("keras") is not None:
        import keras  # noqa: F401


def pytest_collection_finish(session: pytest.Session) -> None:
    # The tests that run a whole program in a process of its own and check what it printed
    # (the benchmarks' quick run, every documentation page) start it now, in the background,
    # so that it runs beside the other tests (tests/background.py).
    from tests import background

    jobs = background.start(session.items)
    if jobs is not None:
        session.config.stash[background.STASH] = jobs


def pytest_unconfigure(config: pytest.Config) -> None:
    if "tests.background" in sys.modules:
        jobs = config.stash.get(sys.modules["tests.background"].STASH, None)
        if jobs is not None:
            jobs.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_tensorflow = importlib.util.find_spec("tensorflow") is not None
    for item in items:
        if KERAS_PACKAGE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.keras)
        if item.get_closest_marker("needs_tensorflow") and not has_tensorflow:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs TensorFlow (pip install seqbatch[tf]), not installed"
                )
            )
        if item.get_closest_marker("tensorflow_backend") and keras_backend() != "tensorflow":
            item.add_marker(
                pytest.mark.skip(
                    reason=f"tf.distribute needs the TensorFlow Keras backend; this run uses "
                    f"KERAS_BACKEND={keras_backend()}"
                )
            )
