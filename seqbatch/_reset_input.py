"""The adapters' policy on reset flags that a model would not see (``reset_input=False``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqbatch.batcher import StreamBatcher


def check_reset_input(batches: StreamBatcher, reset_input: bool, stacklevel: int) -> None:
    """Refuse (packed) or warn of (dealt whole) resets that the model would not see.

    Called by the tf.data and Keras adapters with their ``reset_input``. A stream that holds
    several series starts the later ones from the state that the one before it ended with,
    unless the model reads the flags: packed batches, whose series start inside windows, are
    then refused; batches of series dealt whole warn, as joining series may be meant (the fix
    is ``series_boundary="concat"``). Batches with burn-in need the flags: refused without.
    ``stacklevel`` is the warning's, seen from the caller.
    """
    if batches.burn_in and not reset_input:
        raise ValueError(
            "`reset_input` must be True for batches with burn-in: each row's state starts "
            "at its first real step, after any padding in front of it, and only the per-step "
            "flags say where. Received: reset_input=False with burn_in="
            f"{batches.burn_in} (pass reset_input=True and wrap the RNN in "
            "seqbatch.keras.StreamReset, which zeroes the state at the flagged steps)"
        )
    if reset_input or all(len(held) <= 1 for held in batches.plan.assignment()):
        return
    if batches.packed:
        raise ValueError(
            "`reset_input` must be True for packed batches whose streams hold several "
            "series: without the per-step flags, the model would start every series "
            "from the state that the series before it in the stream ended with. "
            "Received: reset_input=False for series_boundary='pack' (pass "
            "reset_input=True and wrap the RNN in seqbatch.keras.StreamReset, which "
            "resets at the flagged steps)"
        )
    warnings.warn(
        "Some streams of these batches start a new series after the first batch, but "
        "the model will not see the reset flags (reset_input=False): each such stream "
        "would carry the state at one series' end into the next series. Pass "
        "reset_input=True and wrap the RNN in seqbatch.keras.StreamReset, or join the "
        "series on purpose with series_boundary='concat'.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )
