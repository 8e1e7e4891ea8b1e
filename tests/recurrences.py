"""Reference recurrences in numpy, run over one series alone from an explicit initial state.

The two recurrences that carried-state language models are built of: a diagonal linear
recurrence (the core of state-space models), ``h_t = a * h_{t-1} + x_t @ b``, and linear
attention with a state, ``S_t = S_{t-1} + k_t v_t^T``, ``o_t = q_t @ S_t``. They are written
one step at a time, with nothing of seqbatch: the tests run a batch's steps through them by
the kernel formats (or a model with a ``StreamState``) and compare with these per series.
"""

from __future__ import annotations

import numpy as np


def diagonal(
    x: np.ndarray, a: np.ndarray, b: np.ndarray, h: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``h_t = a * h_{t-1} + x_t @ b`` over ``x`` ``(T, F)``, from ``h`` ``(U,)`` (zeros if None).

    Returns:
        Every ``h_t``, ``(T, U)``, and the last (``h`` itself when ``T`` is 0).
    """
    h = np.zeros(len(a)) if h is None else np.array(h, dtype=np.float64)
    out = np.zeros((len(x), len(a)))
    for t in range(len(x)):
        h = a * h + np.asarray(x[t], dtype=np.float64) @ b
        out[t] = h
    return out, h


def linear_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, state: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``S_t = S_{t-1} + k_t v_t^T``, ``o_t = q_t @ S_t`` over ``(T, D)`` inputs, from ``S`` ``(D, D)``.

    Returns:
        Every ``o_t``, ``(T, D)``, and the last ``S``.
    """
    d = q.shape[1]
    s = np.zeros((d, v.shape[1])) if state is None else np.array(state, dtype=np.float64)
    out = np.zeros((len(q), v.shape[1]))
    for t in range(len(q)):
        s = s + np.outer(k[t], v[t])
        out[t] = q[t] @ s
    return out, s
