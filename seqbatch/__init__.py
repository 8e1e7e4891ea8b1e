"""seqbatch: exact batches for stateful recurrent models.

Row ``i`` of batch ``k + 1`` always continues row ``i`` of batch ``k``, or is flagged as a
reset. ``import seqbatch`` imports numpy alone; the Keras, tf.data, torch and JAX adapters
import their framework when they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

from seqbatch import lengths
from seqbatch.batcher import Batch, StreamBatcher
from seqbatch.plan import Accounting, StreamPlan, Window

__all__ = [
    "Accounting",
    "Batch",
    "StreamBatcher",
    "StreamPlan",
    "Window",
    "jax",
    "keras",
    "lengths",
    "tables",
    "tf",
    "torch",
]
__version__ = "0.2.0.dev0"  # the one source of the version: pyproject.toml reads it


def __getattr__(name: str) -> Any:
    # The adapters load their frameworks, so they load on first use (and seqbatch.tables
    # with them: its table libraries load only when its functions run).
    if name in ("jax", "keras", "tables", "tf", "torch"):
        return importlib.import_module(f"seqbatch.{name}")
    raise AttributeError(f"module 'seqbatch' has no attribute {name!r}")
