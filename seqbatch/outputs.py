"""Model outputs over an epoch's batches, put back into per-series arrays in time order.

``model.predict`` over a :class:`~seqbatch.StreamBatcher`'s batches returns
``(len(batches) * B, W, ...)`` in batch-then-stream order: row ``k * B + i`` is stream ``i`` of
batch ``k``. Which step of which series each slot holds is in the plan (the provenance of every
window, or of every step when packed), so the outputs go back where their inputs came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from seqbatch.ragged import lengths_of

if TYPE_CHECKING:
    from seqbatch.batcher import StreamBatcher


def by_series(batches: StreamBatcher, outputs: Any) -> list[np.ma.MaskedArray]:
    """Model outputs over the current epoch of ``batches``, one masked array per series.

    ``out[s][t]`` is the output for input step ``t`` of series ``s``: the model's prediction of
    that step's target (with ``targets="next"``, of step ``t + 1``). Steps that no window fed
    as input (dropped, before the offset, without a target, padding) are masked, never zero:
    ``out[s].mask`` marks them, ``out[s].filled(np.nan)`` gives floats with NaN there. With
    ``return_sequences=False`` only the last step of each full window has an output.

    Args:
        batches: the batcher, at the epoch (and shard) whose batches the model ran on, in
            order. Its ``return_sequences`` says whether outputs have a time axis.
        outputs: one array of ``len(batches) * batch_size`` rows (``model.predict``'s), or a
            sequence of ``len(batches)`` arrays of ``batch_size`` rows (one per batch); each
            row is ``(W, *out)`` with ``return_sequences=True``, else ``(*out)``. When the
            window lengths vary (or with ``burn_in=b``) and ``return_sequences=True``, one
            array per batch, each ``(B, b + length(k), *out)``: the burn-in columns are left
            out.

    Returns:
        A list of ``batches.n_series`` masked arrays, in the order of the data (the series
        that ``series_boundary="concat"`` joined, each on its own): series ``s`` of ``T_s``
        steps gives ``(T_s, *out)`` with the dtype of ``outputs``.

    Raises:
        ValueError: ``outputs`` has another number of rows, batches or steps, or has a time
            axis of ``sequence_length`` steps (a model with ``return_sequences=True``) where
            the batches have ``return_sequences=False``.

    Examples:
        Outputs equal to the inputs come back as the series, with the dropped steps (and
        the last one, which has no target) masked:

        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.arange(15.0), batch_size=2, sequence_length=3)
        >>> outputs = np.concatenate([b.x for b in batches])  # 2 batches of 2 rows
        >>> outputs.shape
        (4, 3)
        >>> batches.by_series(outputs)[0]
        masked_array(data=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
                           11.0, --, --, --],
                     mask=[False, False, False, False, False, False, False, False,
                           False, False, False, False,  True,  True,  True],
               fill_value=1e+20)
    """
    n, B = len(batches), batches.batch_size
    if batches.varying or batches.burn_in:
        values, series, position = _varying(batches, outputs, n, B)
    else:
        W = int(batches.plan.sequence_length)
        values = _per_batch(outputs, n, B)
        if batches.return_sequences and (values.ndim < 3 or values.shape[2] != W):
            raise ValueError(
                "`outputs` must have a time axis of `sequence_length` steps after the rows, as "
                f"the batches have return_sequences=True. Received: outputs of shape "
                f"{values.shape[1:]} per batch for sequence_length={W}"
            )
        shapes = (batches.target_shape, batches.feature_shape)
        if not batches.return_sequences and _has_time_axis(values, W, shapes):
            raise ValueError(
                "`outputs` must have one output per window, without a time axis, as the "
                "batches have return_sequences=False. Received: outputs of shape "
                f"{values.shape[1:]} per batch, whose axis 1 has sequence_length={W} steps "
                "(pass outputs[:, -1], the output at each window's last step, or build the "
                "batcher with return_sequences=True)"
            )
        series, position = _provenance(batches, n)
        if not batches.return_sequences:
            series, position = series[:, :, -1], position[:, :, -1]
    held = series >= 0
    # All series end to end: one scatter fills every series at once.
    sizes = lengths_of(batches.sources)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    where = offsets[series[held]] + position[held]
    data = np.zeros((int(offsets[-1]), *values.shape[series.ndim :]), dtype=values.dtype)
    data[where] = values[held]
    mask = np.ones(data.shape, dtype=bool)
    mask[where] = False
    cuts = offsets[1:-1].tolist()
    parts = getattr(batches.sources[0], "ends", None)  # the series that "concat" joined
    if parts is not None:
        cuts = [int(e) for e in parts[:-1]]
    return [
        np.ma.MaskedArray(d, m)
        for d, m in zip(np.split(data, cuts), np.split(mask, cuts), strict=True)
    ]


def _has_time_axis(values: np.ndarray, W: int, shapes: tuple[tuple[int, ...] | None, ...]) -> bool:
    """Whether ``(n, B, ...)`` outputs hold ``W`` steps per row, as return_sequences=True gives.

    An output whose first axis has ``W`` entries is taken for steps, unless a step of the
    targets or of the data has that shape too (a model that predicts ``W`` values per window,
    or one that gives back a step of its input).
    """
    per_row = tuple(values.shape[2:])
    return len(per_row) >= 2 and per_row[0] == W and per_row not in shapes


def _per_batch(outputs: Any, n: int, B: int) -> np.ndarray:
    """``outputs`` as one array ``(n, B, ...)``, or an error that says what was expected."""
    if isinstance(outputs, Sequence) and not isinstance(outputs, np.ndarray):
        arrays = [np.asarray(o) for o in outputs]
        if len(arrays) != n or any(a.ndim == 0 or a.shape[0] != B for a in arrays):
            raise ValueError(
                f"`outputs` must be {n} arrays of {B} rows, one per batch of the epoch, when "
                f"given as a sequence. Received: {len(arrays)} arrays of "
                f"{sorted({a.shape[0] if a.ndim else 0 for a in arrays})} rows"
            )
        return np.stack(arrays)
    values = np.asarray(outputs)
    if values.ndim == 0 or values.shape[0] != n * B:
        raise ValueError(
            f"`outputs` must have {n * B} rows ({n} batches of {B} streams, as model.predict "
            "returns them over the epoch) when given as one array. Received: outputs of "
            f"shape {values.shape}"
        )
    return values.reshape(n, B, *values.shape[1:])


def _provenance(batches: StreamBatcher, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, B, W)`` int64: the series and the step of every slot of the epoch, -1 on padding."""
    plan, streams = batches.plan, slice(batches.streams.start, batches.streams.stop)
    if batches.packed:
        steps = [plan.steps(k, streams) for k in range(n)]
        W = plan.sequence_length  # the longest window when the lengths vary
        return tuple(  # type: ignore[return-value]
            np.stack([np.pad(a, ((0, 0), (0, W - a.shape[1])), constant_values=-1) for a in arrays])
            for arrays in ([s.series for s in steps], [s.position for s in steps])
        )
    t = plan.table()
    series, start, length = t.series[:, streams], t.start[:, streams], t.length[:, streams]
    W = plan.sequence_length  # the longest window when the lengths vary
    real = np.arange(W) < length[:, :, None]
    position = np.where(real, start[:, :, None] + np.arange(W), -1)
    return np.where(real, series[:, :, None], -1), position


def _varying(
    batches: StreamBatcher, outputs: Any, n: int, B: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outputs ``(n, B, L, ...)`` padded to the longest window ``L``, and the series and
    steps of their slots, when the window lengths vary or burn-in columns come first.

    Batch ``k``'s outputs have ``burn_in + length(k)`` steps per row with
    ``return_sequences=True`` (the burn-in columns' are left out: they are not the window's),
    and none without.
    """
    plan, b = batches.plan, batches.burn_in
    lengths = plan.window_lengths
    series, position = _provenance(batches, n)
    if not batches.return_sequences:
        last = (lengths - 1)[:, None, None]  # each batch's last column
        series = np.take_along_axis(series, last, axis=2)[:, :, 0]
        position = np.take_along_axis(position, last, axis=2)[:, :, 0]
        values = _per_batch(outputs, n, B)
        return values, series, position
    if not isinstance(outputs, Sequence) or isinstance(outputs, np.ndarray):
        if batches.varying:
            raise ValueError(
                f"`outputs` must be {n} arrays of {B} rows, one per batch, when the window "
                "lengths vary: each has its own time axis. Received: one array of shape "
                f"{np.shape(outputs)} (pass [model.predict_on_batch(...) for each batch])"
            )
        outputs = list(np.asarray(outputs).reshape(n, B, *np.shape(outputs)[1:]))
    arrays = [np.asarray(o) for o in outputs]
    want = [b + int(L) for L in lengths]
    got = [a.shape[1] if a.ndim >= 2 else None for a in arrays]
    if len(arrays) != n or any(a.ndim < 2 or a.shape[0] != B for a in arrays) or got != want:
        raise ValueError(
            f"`outputs` must be {n} arrays of {B} rows, one per batch, each with the steps of "
            f"its batch (burn_in + length). Received: {len(arrays)} arrays of shapes "
            f"{sorted({a.shape for a in arrays})} for steps {sorted(set(want))}"
        )
    L = plan.sequence_length
    values = np.stack(
        [
            np.pad(a[:, b:], ((0, 0), (0, L - (a.shape[1] - b))) + ((0, 0),) * (a.ndim - 2))
            for a in arrays
        ]
    )
    return values, series, position
