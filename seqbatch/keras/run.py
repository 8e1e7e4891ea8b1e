"""The Keras call that is running (``fit``, ``evaluate``, ``predict``), read from its frame.

Keras 3 hands a ``PyDataset`` and a callback none of ``fit()``'s arguments: a dataset's
``on_epoch_begin`` does not learn the epoch, ``initial_epoch``, ``steps_per_epoch`` or the
callbacks, nor even which model it feeds. Yet each of those decides whether a stateful model
trains on aligned streams, and a refusal must come before the first step. The hooks run
inside the trainer's method, a few frames down, so its arguments are read there: the one
place where they exist before training starts. Each Keras internal this relies on (the
method names, the locals read) has a test in ``tests/test_keras_internals.py``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import keras

_METHODS = ("fit", "evaluate", "predict")
# The trainer builds an unbuilt model on one batch before training: JAX and torch always,
# TensorFlow under a tf.distribute strategy. That batch passes through a whole epoch cycle of
# the data adapter's hooks.
_PROBES = ("_symbolic_build", "_maybe_symbolic_build")
# Hook -> adapter -> epoch iterator -> (probe) -> trainer method, and the evaluate() of
# fit()'s validation two frames further: a dozen frames reach both with room to spare.
_DEPTH = 12


@dataclass(frozen=True)
class KerasCall:
    """A running ``fit()``, ``evaluate()`` or ``predict()`` of a Keras model.

    Attributes:
        method: ``"fit"``, ``"evaluate"`` or ``"predict"``.
        model: the model whose method runs.
        arguments: the method's local variables when it was read: its arguments, and in
            ``fit()`` the running ``epoch``.
        probe: the data is read for the one-batch build before training, not for a step.
        outer: the ``fit()`` whose validation this ``evaluate()`` is, or None.
        adapter: the Keras data adapter whose epoch hook runs, when a dataset was given.
    """

    method: str
    model: keras.Model
    arguments: dict[str, Any]
    probe: bool
    outer: KerasCall | None
    adapter: Any

    @property
    def fit(self) -> KerasCall | None:
        """The ``fit()`` this call is, or belongs to as its validation; None outside ``fit()``."""
        return self if self.method == "fit" else self.outer

    @property
    def training(self) -> bool:
        """Whether the data is ``fit()``'s training data (its probe included)."""
        return self.method == "fit"

    @property
    def epoch(self) -> int | None:
        """The ``fit()`` epoch whose steps this pass serves; None for a probe or outside ``fit()``."""
        fit = self.fit
        if self.probe or fit is None:
            return None
        epoch = fit.arguments.get("epoch")
        return epoch if isinstance(epoch, int) else None

    @property
    def first_epoch(self) -> bool:
        """Whether this pass serves the first epoch that this ``fit()`` runs."""
        fit = self.fit
        return fit is not None and self.epoch == fit.arguments.get("initial_epoch")

    @property
    def callbacks(self) -> list[Any]:
        """The callbacks passed to ``fit()`` (or to this method outside ``fit()``)."""
        call = self.fit or self
        given = call.arguments.get("callbacks")
        # Before its epoch loop, fit() holds the list it was given; then a CallbackList.
        given = getattr(given, "callbacks", given)
        return list(given) if given is not None else []


def running_call(dataset: Any = None, depth: int = _DEPTH) -> KerasCall | None:
    """The Keras call in which the caller of this function runs, or None outside one.

    Args:
        dataset: the ``PyDataset`` whose hook calls this; its data adapter is then found too.
        depth: how many frames up to look.

    Returns:
        The innermost ``fit()``, ``evaluate()`` or ``predict()`` of a ``keras.Model`` among
        the ``depth`` frames above the caller, or None.
    """
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    frame = caller.f_back if caller is not None else None
    adapter = None
    probe = False
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        name = frame.f_code.co_name
        if adapter is None and owner is not dataset and _feeds(owner, dataset):
            adapter = owner
        probe = probe or name in _PROBES
        if name in _METHODS and isinstance(owner, keras.Model):
            outer = None
            if name == "evaluate":
                outer = _outer_fit(frame, owner)
            return KerasCall(name, owner, dict(frame.f_locals), probe, outer, adapter)
        frame = frame.f_back
    return None


def _feeds(owner: Any, dataset: Any) -> bool:
    """Whether ``owner`` is the Keras data adapter of ``dataset``."""
    return dataset is not None and getattr(owner, "py_dataset", None) is dataset


def _outer_fit(frame: Any, model: keras.Model) -> KerasCall | None:
    """The ``fit()`` of ``model`` that called the ``evaluate()`` running in ``frame``."""
    frame = frame.f_back
    for _ in range(4):
        if frame is None:
            return None
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            return KerasCall("fit", model, dict(frame.f_locals), False, None, None)
        frame = frame.f_back
    return None
