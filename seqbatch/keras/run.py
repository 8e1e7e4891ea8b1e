"""The Keras call that is running (``fit``, ``evaluate``, ``predict``), read from its frame.

Keras 3 hands a ``PyDataset`` and a callback none of ``fit()``'s arguments: a dataset's
``on_epoch_begin`` does not learn the epoch, ``initial_epoch``, ``steps_per_epoch`` or the
callbacks, nor even which model it feeds. Yet each of those decides whether a stateful model
trains on aligned streams, and a refusal must come before the first step. The hooks run
inside the trainer's method, a few frames down, so its arguments are read there: the one
place where they exist before training starts.

Every Keras internal that ``seqbatch.keras`` relies on (Keras 3.15.1): what uses it, and the
test of ``tests/keras/test_keras_internals.py`` that fails when a Keras release changes it.

* The frames of ``fit``, ``evaluate`` and ``predict``, and their locals ``x``, ``epoch``,
  ``initial_epoch``, ``epochs``, ``steps_per_epoch``, ``validation_steps``,
  ``validation_data``, ``validation_split``, ``callbacks`` (``CallbackList.callbacks``),
  ``epoch_iterator``: ``running_call``, so every check, ``StatefulTraining`` and
  ``BackupAndRestore``. ``test_dataset_hooks_run_inside_fit_with_its_arguments``,
  ``test_dataset_hooks_run_inside_evaluate_and_predict``.
* The probe's frame, ``_symbolic_build`` (``_maybe_symbolic_build`` on TensorFlow):
  ``KerasCall.probe``. ``test_the_probe_runs_in_symbolic_build``.
* The data adapter's ``py_dataset``, ``shuffle`` and ``enqueuer`` (``start``, ``stop``,
  ``is_running``, ``ready_queue``), stopped before the end hook: ``StreamSequence``.
  ``test_the_adapter_stops_its_workers_before_the_end_hook``.
* ``epoch_iterator.steps_per_epoch`` and ``_num_batches``, read every epoch:
  ``BackupAndRestore``. ``test_the_epoch_iterator_reads_its_num_batches_every_epoch``.
* ``Model._initial_epoch``, read after ``on_train_begin``: ``BackupAndRestore``.
  ``test_initial_epoch_set_on_the_model_in_on_train_begin_starts_fit_there``.
* ``Layer._flatten_layers``: ``stateful_rnns``, ``check_runs_forwards``,
  ``with_batch_size``, ``BackupAndRestore``.
  ``test_flatten_layers_reaches_nested_models_and_wrappers``.
* ``Layer._seed_generators``, whose entries' ``state`` is in ``variables`` and not in
  ``weights``: ``carry_states`` on JAX.
  ``test_layer_variables_list_the_state_of_seed_entries_and_weights_do_not``.
* ``RNN.inner_loop``: ``carry_states`` on torch.
  ``test_rnn_call_hands_its_initial_state_to_inner_loop``.
* ``Variable._autocast``: ``carry_states`` on torch.
  ``test_a_variable_without_autocast_is_assigned_inside_an_autocast_scope``.
* ``Model.jax_state_sync``: every read or write of a state on JAX.
  ``test_jax_state_sync_puts_the_trainers_values_into_the_variables``.
* ``Layer._tracker.untrack``: ``with_batch_size``.
  ``test_an_untracked_cell_replaced_by_another_leaves_only_that_ones_weights``.
* ``RNN._maybe_config_dropout_masks`` and ``_maybe_reset_dropout_masks``: ``StreamReset``
  with per-step flags. ``test_rnn_dropout_masks_are_drawn_once_by_its_helpers``.
* ``fit(validation_split=...)`` looks ``x.__array__`` up before any hook runs:
  ``StreamSequence``.
  ``test_fit_looks_x_up_for_an_array_interface_before_any_hook_for_validation_split``.
* ``Model.loss`` and ``Model.outputs``: ``checks``.
  ``test_compiled_loss_and_outputs_are_attributes``.
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
