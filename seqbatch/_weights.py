"""The sample weights that the adapters yield: Keras's loss becomes the mean over real steps.

Keras reduces a weighted loss by dividing its sum by every slot of the batch, padding
included (``reduction="sum_over_batch_size"``, its default), and reports the mean of these
batch losses. With weights 0 on padding and 1 on data, the epoch's loss is then the mean over
real steps times the fraction of slots that hold data: 21.5 % padding reports 0.785 of the
true loss, and every gradient shrinks by as much. The adapters weigh each real step by the
inverse of that fraction instead, so that the reported loss is exactly the mean over the
epoch's real steps and every real step weighs the same in the gradient.
``reduction="mean_with_sample_weight"`` would not do it: it divides each batch by its own
real steps, so the epoch reports the mean of the batch means, which gives the steps of a
heavily padded batch more weight than the others.
"""

from __future__ import annotations

import numpy as np

from seqbatch.batcher import StreamBatcher
from seqbatch.plan import StreamPlan


def real_step_weight(batches: StreamBatcher) -> float:
    """The weight of a real step in the current epoch of ``batches``; padding weighs 0.

    It is the number of weighted slots in the epoch (``len * batch_size * sequence_length``,
    or ``len * batch_size`` with ``return_sequences=False``) divided by the number of those
    that hold data, over every stream of the plan: the weights average 1 over the epoch, and
    the losses of the shards of one batcher add up to the mean over all its real steps.

    Args:
        batches: the batcher (or shard) whose elements are weighed.

    Returns:
        A float >= 1; exactly 1 when nothing is padded.

    Examples:
        10 steps with a target on 2 streams of windows of 3: 10 of the 12 slots are real.

        >>> import numpy as np, seqbatch
        >>> batches = seqbatch.StreamBatcher(
        ...     np.arange(11), batch_size=2, sequence_length=3, remainder="pad"
        ... )
        >>> real_step_weight(batches)
        1.2
    """
    return plan_step_weight(batches.plan, batches.return_sequences, batches.burn_in)


def plan_step_weight(plan: StreamPlan, return_sequences: bool, burn_in: int = 0) -> float:
    """:func:`real_step_weight` of the epoch that ``plan`` lays out.

    ``burn_in`` columns in front of every window are slots too, of weight 0.
    """
    real = plan.real_slots(last_step_only=not return_sequences)
    # Windows of every length: the slots of each batch (its steps, or one per window).
    steps = len(plan)
    if return_sequences:
        steps = len(plan) * plan.sequence_length if plan.schedule is None else int(plan.cum_steps)
        steps += len(plan) * burn_in
    slots = plan.batch_size * steps
    return float(np.float64(slots) / real) if real else 1.0


def batch_step_weight(plan: StreamPlan, return_sequences: bool, k: int, burn_in: int = 0) -> float:
    """The weight of a real step of batch ``k``, when the window lengths vary.

    Keras divides each batch's weighted loss by the batch's own slots (``B * length``) and
    reports the mean over batches: for the epoch's loss to be the mean over its real steps,
    the real steps of batch ``k`` weigh :func:`plan_step_weight` times ``length(k)`` over the
    epoch's mean length. Each real step then weighs the same in the gradient, which is what
    AWD-LSTM's learning-rate scaling (``lr_scale``) does by hand: do not apply it again.
    """
    weight = plan_step_weight(plan, return_sequences, burn_in)
    if not return_sequences:
        return weight
    L = plan.window_lengths
    return weight * float(L[k] + burn_in) * L.size / float(L.sum() + L.size * burn_in)


def spread(weight: np.ndarray, target_shape: tuple[int, ...], step_weight: float) -> np.ndarray:
    """The element's weight: ``weight`` (0/1, ``(B, W)`` or ``(B,)``) for targets ``target_shape``.

    Real steps weigh ``step_weight`` (:func:`real_step_weight`). A Keras loss reduces only
    the target's last axis, so a target with more axes (``ConvLSTM1D``: ``(rows, filters)``)
    leaves a loss per step and per position: the weight is repeated over those positions.

    Returns:
        A float32 array of shape ``weight.shape + target_shape[:-1]`` (read-only).
    """
    extra = tuple(target_shape[:-1])
    scaled = (weight * np.float32(step_weight)).astype(np.float32, copy=False)
    return np.broadcast_to(scaled.reshape(weight.shape + (1,) * len(extra)), weight.shape + extra)
