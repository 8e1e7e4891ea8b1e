"""A reference that cannot be fooled: an LSTM in numpy that carries its state row by row.

Tests of every framework path (Keras on each backend, ``torch.nn.LSTM``, a JAX scan) replay
the batches that the framework trained on through :func:`lstm_replay`, with the framework's
weights, and compare outputs and final states. Nothing here imports a framework, and nothing
here calls seqbatch: the state carry and the resets are written out by hand, one row and one
step at a time, so a backend that drops the state (or resets the wrong row) cannot agree.

Weights use one layout for all frameworks, the gate order ``i, f, g, o`` of both Keras
(``kernel`` ``(F, 4U)``, ``recurrent_kernel`` ``(U, 4U)``, ``bias`` ``(4U,)``) and PyTorch
(``weight_ih_l0`` ``(4U, F)``, ``weight_hh_l0`` ``(4U, U)``, ``bias_ih_l0 + bias_hh_l0``):
see :func:`from_keras` and :func:`from_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LSTMWeights:
    """``kernel`` ``(F, 4U)``, ``recurrent`` ``(U, 4U)``, ``bias`` ``(4U,)``; gates i, f, g, o."""

    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray

    @property
    def units(self) -> int:
        return self.recurrent.shape[0]


def from_keras(kernel: Any, recurrent_kernel: Any, bias: Any) -> LSTMWeights:
    """The weights of a Keras ``LSTM`` (``layer.cell.get_weights()``), in float64."""
    return LSTMWeights(*(np.asarray(w, dtype=np.float64) for w in (kernel, recurrent_kernel, bias)))


def from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any, bias_hh: Any) -> LSTMWeights:
    """The weights of layer 0 of a ``torch.nn.LSTM`` (as numpy arrays), in float64."""
    w_ih, w_hh, b_ih, b_hh = (
        np.asarray(w, dtype=np.float64) for w in (weight_ih, weight_hh, bias_ih, bias_hh)
    )
    return LSTMWeights(w_ih.T, w_hh.T, b_ih + b_hh)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def lstm_step(
    weights: LSTMWeights, x: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One step for one row: ``x`` ``(F,)``, ``h`` and ``c`` ``(U,)``; returns the new ``(h, c)``."""
    U = weights.units
    z = x @ weights.kernel + h @ weights.recurrent + weights.bias
    i, f, g, o = (
        _sigmoid(z[:U]),
        _sigmoid(z[U : 2 * U]),
        np.tanh(z[2 * U : 3 * U]),
        _sigmoid(z[3 * U :]),
    )
    c = f * c + i * g
    return o * np.tanh(c), c


def lstm_replay(
    weights: LSTMWeights,
    batches: list[tuple[np.ndarray, ...]],
    state: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Run ``batches`` through the LSTM, carrying each row's state to the same row of the next.

    Args:
        weights: the LSTM's weights.
        batches: ``(x, reset)`` pairs in the order trained, ``x`` of shape ``(B, W, F)``;
            ``reset`` either ``(B,)`` (zero row ``i``'s state before the window) or ``(B, W)``
            (zero it before each flagged step: packed windows). A third element, the
            ``(B, W)`` sample weight, holds the state through the steps it weights 0: the
            output and state of a padded step are those of the step before it.
        state: ``(h, c)``, each ``(B, U)``, before the first batch; zeros if None.

    Returns:
        The outputs ``h`` of every step, one ``(B, W, U)`` array per batch, and the final
        ``(h, c)``.
    """
    B = batches[0][0].shape[0]
    U = weights.units
    if state is None:
        h, c = np.zeros((B, U)), np.zeros((B, U))
    else:
        h, c = (np.array(s, dtype=np.float64) for s in state)
    outputs = []
    for x, reset, *weight in batches:
        x = np.asarray(x, dtype=np.float64).reshape(B, x.shape[1], -1)
        reset = np.asarray(reset, dtype=bool)
        W = x.shape[1]
        real = np.asarray(weight[0]).reshape(B, W) > 0 if weight else np.ones((B, W), bool)
        per_step = reset.reshape(B, W) if reset.ndim == 2 else np.zeros((B, W), bool)
        if reset.ndim == 1:
            per_step[:, 0] = reset
        out = np.zeros((B, W, U))
        for i in range(B):
            for t in range(W):
                if per_step[i, t]:
                    h[i], c[i] = 0.0, 0.0
                if real[i, t]:
                    h[i], c[i] = lstm_step(weights, x[i, t], h[i], c[i])
                out[i, t] = h[i]
        outputs.append(out)
    return outputs, (h, c)
