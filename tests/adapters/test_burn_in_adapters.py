"""Burn-in through the adapters: tf.data, torch and JAX serve the numpy batches with their
burn-in columns (checked by decoding in tests/core/test_burn_in.py), the per-step flags at
each row's first real step, weights that count the burn-in slots; what cannot take burn-in
is refused before any batch.
"""

from __future__ import annotations

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series
from tests.lazy import SliceOnly

LENGTHS = [40, 29, 23, 17, 11, 6]


def burned(lazy: bool = False, **kwargs: object) -> seqbatch.StreamBatcher:
    series = [encoded_series(s, n, (2,), "float32") for s, n in enumerate(LENGTHS)]
    args: dict[str, object] = {
        "batch_size": 4,
        "sequence_length": 3,
        "remainder": "pad",
        "shuffle": True,
        "seed": 1,
        "burn_in": 5,
    }
    args.update(kwargs)
    data = [SliceOnly(s) for s in series] if lazy else series
    return seqbatch.StreamBatcher(data, **args)  # type: ignore[arg-type]


def first_real_flags(b: seqbatch.Batch) -> np.ndarray:
    """1.0 at each held row's first real step, read from the batch's weights and flags."""
    assert b.burn_in is not None
    real = np.concatenate((b.burn_in, b.sample_weight[:, b.burn_in.shape[1] :] > 0), axis=1)
    flags = np.zeros(real.shape, np.float32)
    rows = np.flatnonzero(real.any(axis=1))
    flags[rows, real[rows].argmax(axis=1)] = 1.0
    return flags


@pytest.mark.parametrize(
    ("lazy", "schedule"), [(False, None), (True, None), (False, seqbatch.lengths.warmup(1, 4, 5))]
)
def test_tf_data_serves_the_burn_in_batches_with_per_step_flags(
    lazy: bool, schedule: object
) -> None:
    pytest.importorskip("tensorflow")
    extra = {} if schedule is None else {"sequence_length": schedule}
    batches = burned(lazy, **extra)
    dataset = batches.to_tf_dataset(reset_input=True)
    width = None if schedule is not None else 5 + 3
    assert dataset.element_spec[0][0].shape.as_list() == [4, width, 2]
    assert dataset.element_spec[0][1].shape.as_list() == [4, width]
    for epoch in range(2):
        mean, elements = 0.0, list(dataset)
        assert len(elements) == batches.view.n_batches(epoch)
        for k, ((x, reset), y, weight) in enumerate(elements):
            b = batches.batch_at(epoch, k)
            np.testing.assert_array_equal(x.numpy(), b.x)
            np.testing.assert_array_equal(y.numpy(), b.y)
            np.testing.assert_array_equal(reset.numpy(), first_real_flags(b))
            w = weight.numpy()
            assert ((w > 0) == (b.sample_weight > 0)).all()
            mean += w.sum() / w.size
        # A loss of 1 on every real window step reports 1: the burn-in slots count as padding.
        assert mean / len(elements) == pytest.approx(1.0, rel=1e-5)


def test_tf_data_input_pipelines_each_serve_their_streams_with_burn_in() -> None:
    tf = pytest.importorskip("tensorflow")
    batches = burned()
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        elements = list(batches.to_tf_dataset(reset_input=True, input_context=context))
        assert len(elements) == 2 * len(batches)  # two replicas per pipeline
        for j, ((x, _), _, _) in enumerate(elements):
            k, replica = divmod(j, 2)
            rows = slice(2 * pipeline + replica, 2 * pipeline + replica + 1)
            np.testing.assert_array_equal(x.numpy(), batches[k].x[rows])


def test_tf_data_without_the_flags_is_refused() -> None:
    pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match=r"`reset_input` must be True for batches with burn-in"):
        burned().to_tf_dataset()


def test_the_torch_loader_and_the_jax_source_carry_the_burn_in_field() -> None:
    torch = pytest.importorskip("torch")
    from seqbatch.jax import StreamSource
    from seqbatch.torch import StreamDataset

    batches = burned(sequence_length=seqbatch.lengths.warmup(1, 4, 5))
    dataset = StreamDataset(batches)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
    served = list(loader)
    assert len(served) == len(batches)
    source = StreamSource(batches)
    for k, item in enumerate(served):
        want, record = batches[k], source[k]
        assert item.length == want.length == item.x.shape[1] - 5
        for field in ("x", "y", "sample_weight", "reset", "burn_in"):
            np.testing.assert_array_equal(getattr(item, field).numpy(), getattr(want, field))
            np.testing.assert_array_equal(record[field], getattr(want, field))
    with pytest.raises(ValueError, match=r"`kernel_formats` must be False .*burn_in=5"):
        StreamSource(batches, kernel_formats=True)
    with pytest.raises(ValueError, match=r"`burn_in` must be 0 for the kernel formats"):
        _ = served[0].seq_idx


def test_jax_unroll_runs_each_row_from_zeros_at_its_first_burn_in_step() -> None:
    jnp = pytest.importorskip("jax.numpy")
    from seqbatch.jax import StreamSource, unroll

    series = [np.arange(1.0, n + 1) * (s + 1) for s, n in enumerate([23, 17, 12, 8])]
    batches = seqbatch.StreamBatcher(
        series, batch_size=2, sequence_length=3, remainder="pad", burn_in=4
    )

    def running_sum(total: object, x_t: object) -> tuple[object, object]:
        total = total + x_t  # type: ignore[operator]
        return total, total

    for k, record in enumerate(StreamSource(batches)):
        out, total = unroll(running_sum, record, jnp.full(2, 1000.0))  # a carry to ignore
        out, b = np.asarray(out), batches[k]
        for i in range(2):
            if b.series[i] < 0:
                continue
            s, t = int(b.series[i]), int(b.position[i])
            p = min(4, t)
            n = int(b.sample_weight[i].sum())  # real window steps
            alone = np.cumsum(series[s][t - p : t + n])  # the row's steps, from zeros
            np.testing.assert_allclose(out[i, 4 - p : 4 + n], alone)
            assert not out[i, : 4 - p].any() and not out[i, 4 + n :].any()
            assert float(total[i]) == alone[-1]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_carried_stream_state_is_refused_with_burn_in(framework: str) -> None:
    pytest.importorskip(framework)
    if framework == "torch":
        from seqbatch.torch import StreamState
    else:
        from seqbatch.jax import StreamState  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"`batches` must have burn_in=0 .*burn_in=5"):
        StreamState(burned())


def test_the_torch_unroll_refuses_a_burn_in_batch() -> None:
    torch = pytest.importorskip("torch")
    from seqbatch.torch import TensorBatch, unroll

    batch = TensorBatch.from_batch(burned()[1])
    rnn = torch.nn.GRU(2, 3, batch_first=True)
    with pytest.raises(ValueError, match=r"`batch` must have no burn-in columns .*burn_in=5"):
        unroll(rnn, batch)
