"""Keras 3 for stateful RNNs: a ``PyDataset`` of seqbatch batches and the helpers Keras 3 dropped.

Keras 3 trains a stateful RNN (``stateful=True``) correctly only when every batch continues
the one before, row by row, and nothing else touches the states. This module closes the gaps:

* :class:`StreamSequence` feeds :class:`~seqbatch.StreamBatcher` batches to ``fit()`` and
  refuses ``fit()``'s default batch shuffle, which would misalign every stream.
* :func:`reset_states` zeroes every stateful RNN state of a model (Keras 3 removed
  ``Model.reset_states()``).
* :class:`StreamReset` zeroes, inside the graph, the state of exactly the streams whose
  batch flags a reset: the many-series case, where streams start new series at different times;
  or, given a flag per step, the state of a stream right before each flagged step (packed
  windows, where a series may start at any step).
* :class:`StatefulTraining` resets the states at every epoch and keeps validation away from
  the training states.
* :class:`BackupAndRestore` backs ``fit()`` up and resumes it exactly, mid-epoch and with
  the RNN states, after the process was killed.
* :func:`with_batch_size` gives a trained model another batch size (one stream at a time,
  say) that shares its weights, its states starting from chosen streams.
* :func:`carry_states` makes stateful RNNs keep their state on Keras's JAX and torch
  backends, where Keras 3 alone does not; every name above calls it.

Only ``keras`` and ``keras.ops`` are used, never TensorFlow directly: everything here works
on the TensorFlow, JAX and torch backends, with the same results.
"""

from __future__ import annotations

import os

try:
    import keras  # noqa: F401
except ImportError as err:
    _backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    _extra = {"tensorflow": "tf"}.get(_backend, _backend)
    _keras = "" if _extra == "tf" else "keras "
    raise ModuleNotFoundError(
        f"seqbatch.keras needs Keras 3 and the framework of its backend, "
        f"KERAS_BACKEND={_backend} ({err}): python -m pip install {_keras}"
        f'"seqbatch[{_extra}]"',
        name=err.name,
    ) from err

from seqbatch.keras.backup import BackupAndRestore
from seqbatch.keras.batch_size import with_batch_size
from seqbatch.keras.callbacks import StatefulTraining
from seqbatch.keras.layers import StreamReset
from seqbatch.keras.sequence import StreamSequence
from seqbatch.keras.states import carry_states, reset_states, stateful_rnns

__all__ = [
    "BackupAndRestore",
    "StatefulTraining",
    "StreamReset",
    "StreamSequence",
    "carry_states",
    "reset_states",
    "stateful_rnns",
    "with_batch_size",
]
