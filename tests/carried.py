"""What the torch and JAX tests share: data, the batches an adapter should serve, the replay.

Nothing here imports a framework. An adapter's output is turned into numpy
:class:`seqbatch.Batch` objects by its test, then compared here with the batches of a batcher
set to the same epoch in this process, checked against the invariant (``tests.encoded``),
and replayed through the numpy LSTM of ``tests.replay``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

import seqbatch
from tests.encoded import check_epoch, encoded_series
from tests.replay import LSTMWeights, lstm_replay

LENGTHS = [41, 37, 30, 26, 22, 19, 15, 12, 9, 7]
FEATURES = (2,)


def many_series(shuffle: bool = True, **kwargs: Any) -> seqbatch.StreamBatcher:
    """Encoded series of unequal lengths on 4 streams: resets mid-epoch, and padding."""
    data = [encoded_series(s, n, FEATURES, "float32") for s, n in enumerate(LENGTHS)]
    options = {"batch_size": 4, "sequence_length": 5, "remainder": "pad", "seed": 7, **kwargs}
    return seqbatch.StreamBatcher(data, shuffle=shuffle, **options)


def at_epoch(batches: seqbatch.StreamBatcher, epoch: int) -> seqbatch.StreamBatcher:
    """A copy of ``batches`` set to ``epoch``."""
    reference = copy.copy(batches)
    reference.set_epoch(epoch)
    return reference


def distinct_layouts(batches: seqbatch.StreamBatcher, epochs: range) -> int:
    """How many different layouts ``epochs`` have: a stale epoch is caught only if several."""
    return len({str(at_epoch(batches, e).plan.assignment()) for e in epochs})


class Served:
    """The batches an adapter served in one epoch, read like the batcher they came from."""

    def __init__(self, reference: seqbatch.StreamBatcher, served: list[seqbatch.Batch]) -> None:
        self._reference = reference
        self._served = served

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reference, name)

    def __len__(self) -> int:
        return len(self._served)

    def __getitem__(self, k: int) -> seqbatch.Batch:
        return self._served[k]


def assert_served(served: list[seqbatch.Batch], batches: seqbatch.StreamBatcher) -> None:
    """``served`` are exactly the batches of ``batches``' current epoch, in order."""
    assert len(served) == len(batches)
    for k, got_batch in enumerate(served):
        expected = batches[k]
        for field in dataclasses.fields(seqbatch.Batch):
            got, want = getattr(got_batch, field.name), getattr(expected, field.name)
            if want is None:
                assert got is None, f"batch {k} {field.name}"
                continue
            assert got.dtype == want.dtype and got.shape == want.shape, f"batch {k} {field.name}"
            np.testing.assert_array_equal(got, want, err_msg=f"batch {k} {field.name}")


def assert_served_epoch(served: list[seqbatch.Batch], reference: seqbatch.StreamBatcher) -> None:
    """:func:`assert_served`, then the invariant checked on what was served (many_series data)."""
    assert_served(served, reference)
    check_epoch(
        Served(reference, served),  # type: ignore[arg-type]
        LENGTHS,
        features=FEATURES,
        shift=1,
        target_arrays=False,
        concat=False,
    )


def replay_states(
    weights: list[LSTMWeights],
    batches: list[seqbatch.Batch],
    *,
    carry: bool = True,
    resets: bool = True,
    permute: bool = False,
    hold: bool = False,
) -> list[np.ndarray]:
    """``h`` after each batch, replayed with the weights of that step.

    ``carry=False`` starts every batch from zeros, ``resets=False`` ignores the flags and
    ``permute=True`` moves rows to other streams: each breaks one rule, for a test to show
    that its comparison would catch it. ``hold=True`` keeps the state through padding.
    """
    state = None
    out = []
    for step, (w, b) in enumerate(zip(weights, batches, strict=True)):
        x, reset = b.x, b.reset if resets else np.zeros_like(b.reset)
        weight = b.sample_weight
        if permute:
            order = np.random.default_rng(step).permutation(len(x))
            x, reset, weight = x[order], reset[order], weight[order]
        window = (x, reset, weight) if hold else (x, reset)
        _, state = lstm_replay(w, [window], state if carry else None)
        out.append(state[0])
    return out


def assert_trained_states_replay(
    states: list[np.ndarray],
    weights: list[LSTMWeights],
    batches: list[seqbatch.Batch],
    *,
    hold: bool = False,
) -> None:
    """The framework's ``h`` after each step equals the replay's, and only the right replay's.

    ``hold=True``: the model keeps each row's state through padding, and running through
    the padding instead must disagree.
    """
    assert len(states) == len(weights) == len(batches)
    assert not np.allclose(weights[0].kernel, weights[-1].kernel), "the model did not train"
    replayed = replay_states(weights, batches, hold=hold)
    for step, (got, want) in enumerate(zip(states, replayed, strict=True)):
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"step {step}")
    # The comparison has teeth: no carry, no resets, rows in other streams, or (where the
    # model holds) a state run through the padding all disagree.
    breaks: list[dict[str, bool]] = [{"carry": False}, {"resets": False}, {"permute": True}]
    for broken in breaks + ([{"hold": False}] if hold else []):
        replayed = replay_states(weights, batches, **{"hold": hold, **broken})
        gap = max(float(np.abs(g - w).max()) for g, w in zip(states, replayed, strict=True))
        assert gap > 1e-2, f"a replay with {broken} agrees too: the test has no power"
