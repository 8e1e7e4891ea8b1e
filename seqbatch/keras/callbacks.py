"""Callbacks for stateful ``fit()``: fresh states per epoch, validation kept apart."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from seqbatch.keras.states import _state_variables, _sync_jax_state, reset_states


class StatefulTraining(keras.callbacks.Callback):
    """The callback a stateful ``fit()`` needs: fresh states per epoch, validation kept apart.

    * At the start of every epoch it zeroes every stateful RNN state (:func:`reset_states`):
      an epoch starts every stream over.
    * Before validation (``fit(validation_data=...)``, or ``evaluate(callbacks=[...])``) it
      saves the training states and zeroes them, so that validation starts from zero states
      like training; after validation it puts the training states back. Without it, the
      validation batches run through the same state variables and leave them holding the
      end of the validation data.

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

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        reset_states(self.model)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        _sync_jax_state(self.model)
        self._training_states = [(v, v.numpy()) for v in _state_variables(self.model)]
        reset_states(self.model)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._training_states is None:
            return
        _sync_jax_state(self.model)
        for variable, value in self._training_states:
            variable.assign(value)
        self._training_states = None
