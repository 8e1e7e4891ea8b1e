"""Callbacks for stateful ``fit()``: fresh states per epoch, validation kept apart."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from seqbatch.keras.checks import check_call
from seqbatch.keras.run import KerasCall, running_call
from seqbatch.keras.states import _state_variables, _sync_jax_state, carry_states, reset_states
from seqbatch.keras.tf_data import fed_by


class StatefulTraining(keras.callbacks.Callback):
    """The callback a stateful ``fit()`` needs: fresh states per epoch, validation kept apart.

    * At the start of every epoch it zeroes every stateful RNN state (:func:`reset_states`):
      an epoch starts every stream over.
    * Before validation (``fit(validation_data=...)``, or ``evaluate(callbacks=[...])``) it
      saves the training states and zeroes them, so that validation starts from zero states
      like training; after validation it puts the training states back. Without it, the
      validation batches run through the same state variables and leave them holding the
      end of the validation data.
    * It makes the model carry its states on every Keras backend (:func:`carry_states`).
    * On the tf.data path (:func:`seqbatch.tf.to_dataset`, as it returns the dataset or
      after ``prefetch``, ``map``, ``with_options``, ``apply`` or ``cache``, and through
      ``tf.distribute``), where no seqbatch code runs during ``fit()`` otherwise, it also
      refuses, before the first step, a model whose batch size or output does not fit the
      batches, a ``steps_per_epoch`` other than the number of batches, and a transformation
      that would misalign the streams; and it makes epoch ``e`` of ``fit()`` lay out epoch
      ``e`` of a shuffled batcher, so that ``fit(initial_epoch=e)`` resumes exactly.
      :class:`StreamSequence` does all of that by itself.

    Validation data must be batched like training data: a :class:`StreamSequence` (or the
    tf.data adapter) of a batcher with the model's batch size, and ``shuffle`` plays no part
    in ``evaluate()``. Under JAX the trainer's state is synced before states are touched.

    Examples:
        >>> import numpy as np, keras, seqbatch
        >>> def sequence(data):
        ...     batcher = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3)
        ...     return seqbatch.keras.StreamSequence(batcher)
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.GRU(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> history = model.fit(
        ...     sequence(np.sin(np.arange(50.0))[:, None]),
        ...     validation_data=sequence(np.cos(np.arange(20.0))[:, None]),
        ...     shuffle=False, epochs=2, verbose=0, callbacks=[seqbatch.keras.StatefulTraining()],
        ... )
        >>> len(history.history["val_loss"])
        2
    """

    def __init__(self) -> None:
        super().__init__()
        self._training_states: list[tuple[Any, np.ndarray]] | None = None
        self._datasets: list[Any] = []

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        carry_states(model)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._datasets = []
        self._check_datasets(running_call())

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        reset_states(self.model)
        for fed in self._datasets:
            fed.start_epoch(epoch)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        call = running_call()
        if call is not None and call.outer is None:
            self._check_datasets(call)
        _sync_jax_state(self.model)
        self._training_states = [
            (v, keras.ops.convert_to_numpy(v).copy()) for v in _state_variables(self.model)
        ]
        reset_states(self.model)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._training_states is None:
            return
        _sync_jax_state(self.model)
        for variable, value in self._training_states:
            variable.assign(value)
        self._training_states = None

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._check_datasets(running_call())

    def _check_datasets(self, call: KerasCall | None) -> None:
        """Check the seqbatch datasets that ``call`` reads, and keep those of ``fit()``."""
        if call is None:
            return
        given = [("x", call)]
        if call.method == "fit":
            given.append(("validation_data", _validation(call)))
        for name, reader in given:
            fed = fed_by(call.arguments.get(name), name)
            if fed is None:
                continue
            check_call(
                reader, input_shapes=fed.input_shapes, y_shape=fed.y_shape, steps=len(fed.batches)
            )
            if call.method == "fit":
                self._datasets.append(fed)


def _validation(fit: KerasCall) -> KerasCall:
    """The ``evaluate()`` that ``fit()`` runs on its validation data, as the checks see it."""
    return KerasCall("evaluate", fit.model, {}, False, fit, None)
