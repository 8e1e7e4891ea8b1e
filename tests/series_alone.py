"""The state a loop must carry when padding never enters it: each series run alone.

After every batch, the row of a stream that holds series ``s`` up to step ``p`` must hold the
state of the first ``p`` input steps of ``s`` run alone from zeros, whatever padding followed
them in the window; a row without data keeps what it held. The expected states come from the
test's own data and arithmetic (the series lengths, the target shift): the batches' ``series``
and ``position`` only say where to look, and each window's real steps are checked against
the data first. Nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import seqbatch


def expected_states(
    batches: Sequence[seqbatch.Batch],
    inputs: Sequence[np.ndarray],
    state_of: Callable[[np.ndarray], np.ndarray],
    *,
    units: int,
) -> list[np.ndarray]:
    """``(B, units)`` after each batch: ``state_of(inputs[s][:p])`` for the series a row holds.

    Args:
        batches: the batches in the order the loop ran them, from the start of an epoch.
        inputs: the input steps of each series (its data without the steps that have no
            target), indexed by series id.
        state_of: the state after a series' first steps run alone from zeros, ``(units,)``.
        units: the size of that state.
    """
    held = np.zeros((len(batches[0].x), units))
    out = []
    for k, b in enumerate(batches):
        W = b.x.shape[1]
        for i, (s, start) in enumerate(zip(b.series.tolist(), b.position.tolist(), strict=True)):
            if s < 0:
                continue
            stop = min(start + W, len(inputs[s]))
            np.testing.assert_array_equal(
                b.x[i, : stop - start], inputs[s][start:stop], err_msg=f"batch {k} row {i}"
            )
            held[i] = state_of(inputs[s][:stop])
        out.append(held.copy())
    return out


def padded_rows(batches: Sequence[seqbatch.Batch]) -> int:
    """How many windows hold padding after some real steps: the test has power only if many."""
    return sum(
        int(((b.sample_weight > 0).any(1) & (b.sample_weight == 0).any(1)).sum()) for b in batches
    )


def expected_packed_states(
    batches: Sequence[seqbatch.Batch],
    inputs: Sequence[np.ndarray],
    state_of: Callable[[np.ndarray], np.ndarray],
    *,
    units: int,
) -> list[np.ndarray]:
    """:func:`expected_states` for packed batches: a row holds several series in a window.

    Every real step of a window is checked against the data at the series and step that
    ``step_series`` and ``step_position`` name; the row's state is then the state of its last
    real step's series, run alone from zeros up to that step.
    """
    held = np.zeros((len(batches[0].x), units))
    out = []
    for k, b in enumerate(batches):
        assert b.step_series is not None and b.step_position is not None
        for i in range(len(b.x)):
            steps = np.flatnonzero(b.step_series[i] >= 0)
            for j in steps.tolist():
                s, p = int(b.step_series[i, j]), int(b.step_position[i, j])
                np.testing.assert_array_equal(
                    b.x[i, j], inputs[s][p], err_msg=f"batch {k} row {i} step {j}"
                )
            if len(steps):
                last = steps[-1]
                s, p = int(b.step_series[i, last]), int(b.step_position[i, last])
                held[i] = state_of(inputs[s][: p + 1])
        out.append(held.copy())
    return out
