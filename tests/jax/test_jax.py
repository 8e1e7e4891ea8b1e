"""seqbatch.jax: the grain-compatible source, its order guard, and a state carried through a scan.

Records are compared with the batches of a batcher set to the same epoch in this process,
over epochs whose layouts differ, through threads, grain's reading threads and its worker
processes. The LSTM of the JAX guide (docs/guides/jax.md) is trained here and replayed
through ``tests.replay``, a numpy LSTM that carries state row by row.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import seqbatch
from seqbatch.jax import StreamSource, hold, reset_rows, weighted_mean
from tests.carried import (
    FEATURES,
    LENGTHS,
    assert_served,
    assert_served_epoch,
    assert_trained_states_replay,
    at_epoch,
    distinct_layouts,
    many_series,
)
from tests.doc_blocks import blocks
from tests.encoded import encoded_series
from tests.replay import LSTMWeights, lstm_step
from tests.series_alone import expected_states, padded_rows

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "jax.md"


def as_batch(record: dict[str, Any]) -> seqbatch.Batch:
    return seqbatch.Batch(
        record["x"],
        record.get("y"),
        record["sample_weight"],
        record["reset"],
        record["series"],
        record["position"],
    )


def epochs_of(source: StreamSource, records: list[dict[str, Any]]) -> list[list[seqbatch.Batch]]:
    """Records cut into epochs, each record checked to name its epoch and batch."""
    n = source.batches_per_epoch
    assert len(records) == len(source)
    for i, r in enumerate(records):
        assert (int(r["epoch"]), int(r["batch"])) == divmod(i, n)
    return [[as_batch(r) for r in records[e * n : (e + 1) * n]] for e in range(source.epochs)]


# --- Records: every epoch's batches, in order ------------------------------------------------


def test_records_are_the_batches_of_each_epoch() -> None:
    batches = many_series()
    source = StreamSource(batches, epochs=4)
    assert distinct_layouts(batches, range(4)) == 4
    assert len(source) == 4 * len(batches)
    records = list(source.in_order(source))
    for epoch, served in enumerate(epochs_of(source, records)):
        assert_served_epoch(served, at_epoch(batches, epoch))
    assert batches.epoch == 0  # the user's batcher is never changed


def test_records_read_from_threads_in_any_order_are_the_same() -> None:
    # Reads of two epochs interleave, as prefetching threads make them at an epoch's end.
    batches = many_series()
    source = StreamSource(batches, epochs=3)
    order = np.random.default_rng(0).permutation(len(source)).tolist()
    with ThreadPoolExecutor(4) as pool:
        read = dict(zip(order, pool.map(source.__getitem__, order), strict=True))
    records = [read[i] for i in range(len(source))]
    for epoch, served in enumerate(epochs_of(source, records)):
        assert_served(served, at_epoch(batches, epoch))


def test_the_first_epoch_is_the_batchers_and_targets_are_optional() -> None:
    batches = seqbatch.StreamBatcher(
        np.arange(64.0), None, batch_size=2, sequence_length=5, shuffle=True, seed=3
    )
    batches.set_epoch(5)
    source = StreamSource(batches, epochs=2)
    assert source.first_epoch == 5
    record = source[-1]
    assert "y" not in record and (int(record["epoch"]), int(record["batch"])) == (6, 5)
    assert_served([as_batch(source[i]) for i in range(6, 12)], at_epoch(batches, 6))


# --- Through grain --------------------------------------------------------------------------


def import_grain() -> Any:
    grain = pytest.importorskip("grain", reason="grain is optional: pip install grain")
    # grain 0.2.18 reads an absl flag that only a parsed command line sets, once JAX is
    # imported (google/grain#1355); scripts without absl.app mark the flags parsed.
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    return grain


def test_grain_keeps_the_order_through_threads_and_worker_processes() -> None:
    grain = import_grain()
    batches = many_series()
    source = StreamSource(batches, epochs=3)
    pipelines = {
        "threads": grain.MapDataset.source(source).to_iter_dataset(
            grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)
        ),
        "processes": grain.MapDataset.source(source)
        .to_iter_dataset()
        .mp_prefetch(grain.MultiprocessingOptions(num_workers=2)),
    }
    for pipeline in pipelines.values():
        records = list(source.in_order(pipeline))
        for epoch, served in enumerate(epochs_of(source, records)):
            assert_served(served, at_epoch(batches, epoch))


def test_grain_pipelines_that_reorder_are_refused_at_the_first_record_out_of_place() -> None:
    grain = import_grain()
    source = StreamSource(many_series(), epochs=2)
    ds = grain.MapDataset.source(source)
    reordered = {
        "shuffle": ds.shuffle(seed=1),
        "shard by record": ds[1::2],
        "repeat": ds.repeat(2)[len(source) - 1 :],
    }
    for name, pipeline in reordered.items():
        seen = []
        with pytest.raises(ValueError, match="Records must come in the order of the source"):
            for record in source.in_order(pipeline.to_iter_dataset()):
                seen.append(record)
        assert [(int(r["epoch"]), int(r["batch"])) for r in seen] == [], name
    batched = ds.batch(2).to_iter_dataset()
    with pytest.raises(ValueError, match="records are whole batches, never batched again"):
        next(iter(source.in_order(batched)))


# --- The order guard -------------------------------------------------------------------------


def test_in_order_passes_the_order_of_the_source_only() -> None:
    source = StreamSource(many_series(), epochs=2)
    n = source.batches_per_epoch
    assert len(list(source.in_order(source))) == 2 * n
    resumed = [source[i] for i in range(n - 1, 2 * n)]  # across the epoch boundary
    assert len(list(source.in_order(resumed, start=n - 1))) == n + 1
    skipped = [source[0], source[1], source[3]]
    message = re.escape(
        "Records must come in the order of the source, so that row i of each batch continues "
        "row i of the batch before: keep the order of the pipeline (no shuffle; shard by "
        "stream with StreamBatcher.shard, not by record). Received: epoch 0 batch 3 where "
        "epoch 0 batch 2 was due"
    )
    guarded = source.in_order(skipped)
    assert [int(r["batch"]) for r in (next(guarded), next(guarded))] == [0, 1]
    with pytest.raises(ValueError, match=message):
        next(guarded)
    with pytest.raises(ValueError, match="epoch 1 batch 0 where epoch 0 batch 0 was due"):
        list(source.in_order([source[n]]))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Every record must be one record of a StreamSource, with a scalar 'epoch' and "
            "'batch': records are whole batches, never batched again. Received: a record with "
            "epoch=None, batch=None"
        ),
    ):
        list(source.in_order([{"x": np.zeros(3)}]))
    with pytest.raises(ValueError, match="`start` must be a non-negative integer"):
        list(source.in_order(source, start=-1))


def test_source_checks_its_arguments() -> None:
    batches = many_series()
    with pytest.raises(
        TypeError,
        match=re.escape(
            "`batches` must be a seqbatch.StreamBatcher. Received: batches of type list"
        ),
    ):
        StreamSource([np.zeros(3)])  # type: ignore[arg-type]
    for epochs, error in ((0, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="`epochs` must be a positive integer"):
            StreamSource(batches, epochs=epochs)  # type: ignore[arg-type]
    source = StreamSource(batches, epochs=2)
    with pytest.raises(IndexError, match=f"record index out of range. Received: {len(source)}"):
        source[len(source)]
    with pytest.raises(
        TypeError, match=re.escape("record indices must be integers. Received: 1.0")
    ):
        source[1.0]  # type: ignore[index]


# --- State helpers ---------------------------------------------------------------------------


def test_reset_rows_zeroes_the_flagged_streams_under_jit() -> None:
    flags = jnp.array([True, False, False, True])
    state = {"h": jnp.ones((4, 3)), "conv": jnp.ones((2, 4, 5)), "none": None}
    zeroed = jax.jit(
        lambda s, r: {
            "h": reset_rows(s["h"], r, axis=0),
            "conv": reset_rows(s["conv"], r, axis=-2),
            "none": reset_rows(s["none"], r, axis=0),
        }
    )(state, flags)
    assert zeroed["none"] is None
    np.testing.assert_array_equal(zeroed["h"], np.where(flags[:, None], 0.0, np.ones((4, 3))))
    np.testing.assert_array_equal(
        zeroed["conv"], np.where(flags[None, :, None], 0.0, np.ones((2, 4, 5)))
    )
    # Gradients flow into the rows kept and stop at the rows reset.
    grad = jax.grad(lambda s: reset_rows(s, flags, axis=0).sum())(jnp.ones((4, 3)))
    np.testing.assert_array_equal(grad, np.where(flags[:, None], 0.0, np.ones((4, 3))))


def test_reset_rows_checks_its_arguments() -> None:
    h = jnp.ones((4, 3))
    flags = jnp.zeros(4, bool)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`reset` must hold one bool flag per stream, shape (B,). Received: reset of dtype "
            "float32 and shape (4,)"
        ),
    ):
        reset_rows(h, jnp.zeros(4), axis=0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`state` must have one row per stream along axis=1. Received: a state of shape (4, 3) "
            "and 4 reset flags"
        ),
    ):
        reset_rows(h, flags, axis=1)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`axis` must be an axis of every state leaf. Received: axis=2 for a state of shape (4, 3)"
        ),
    ):
        reset_rows(h, flags, axis=2)


def test_weighted_mean_counts_real_steps_only() -> None:
    loss = jnp.array([[1.0, 2.0, jnp.inf], [4.0, jnp.nan, 0.0]])
    w = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(weighted_mean(loss, w)) == pytest.approx(7 / 3)
    grad = jax.grad(lambda v: weighted_mean(v, w))(jnp.ones((2, 3)))
    np.testing.assert_allclose(grad, w / 3)
    assert float(weighted_mean(loss, jnp.zeros((2, 3)))) == 0.0
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`values` must have the shape of `sample_weight`, one value per step: reduce other axes "
            "first. Received: values of shape (2, 3, 1) and sample_weight of shape (2, 3)"
        ),
    ):
        weighted_mean(jnp.ones((2, 3, 1)), w)


# --- Proof: the guide's scan LSTM carries each row's state -----------------------------------


def guide_namespace() -> dict[str, Any]:
    """Run the JAX guide up to its grain section and return what it defined."""
    text = GUIDE.read_text(encoding="utf-8").split("\n## Through grain", 1)[0]
    namespace: dict[str, Any] = {"__name__": "__guide__"}
    for block in blocks(text):
        if block.lang == "python":
            exec(compile(block.code, str(GUIDE), "exec"), namespace)
    return namespace


def test_the_guides_scan_lstm_carries_each_rows_state() -> None:
    guide = guide_namespace()
    init_params, train_step = guide["init_params"], guide["train_step"]
    batches = many_series()
    data_scale = 1e-4  # the codes are in the thousands: keep the gates out of saturation
    source = StreamSource(batches, epochs=3)
    # Weights under which a replay without resets drifts far from the right one, now that
    # the state a new series would inherit is the last real step's, not the padding's.
    params = init_params(jax.random.key(0), features=2, units=3)
    state = (jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    weights, states = [], []
    for record in source.in_order(source):
        weights.append(
            LSTMWeights(
                *(np.asarray(params[k], np.float64) for k in ("kernel", "recurrent", "bias"))
            )
        )
        batch = {
            "x": record["x"] * data_scale,
            "y": record["y"] * data_scale,
            "sample_weight": record["sample_weight"],
            "reset": record["reset"],
        }
        params, state, _ = train_step(params, state, batch, 0.5)
        states.append(np.asarray(state[0]))
    expected = [
        seqbatch.Batch(b.x * data_scale, b.y, b.sample_weight, b.reset, b.series, b.position)
        for epoch in range(3)
        for b in at_epoch(batches, epoch)
    ]
    # The guide's scan holds each row's state through padding: so must the replay.
    assert_trained_states_replay(states, weights, expected, hold=True)


def test_the_guides_scan_ends_each_stream_at_its_last_real_step() -> None:
    guide = guide_namespace()
    data = [encoded_series(s, n, FEATURES, "float32") * 1e-4 for s, n in enumerate(LENGTHS)]
    inputs = [d[:-1] for d in data]  # targets="next": the last step is a target only
    batches = seqbatch.StreamBatcher(
        data, batch_size=4, sequence_length=5, remainder="pad", shuffle=True, seed=7
    )
    source = StreamSource(batches, epochs=2)
    params = guide["init_params"](jax.random.key(2), features=2, units=3)
    weights = LSTMWeights(
        *(np.asarray(params[k], np.float64) for k in ("kernel", "recurrent", "bias"))
    )

    def state_of(steps: np.ndarray) -> np.ndarray:
        h, c = np.zeros(3), np.zeros(3)
        for x_t in steps:
            h, c = lstm_step(weights, x_t, h, c)
        return h

    state = (jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for record in source.in_order(source):
        batch = {k: record[k] for k in ("x", "y", "sample_weight", "reset")}
        params, state, _ = guide["train_step"](params, state, batch, 0.0)  # weights kept
        got[int(record["epoch"])].append(np.asarray(state[0]))
    for epoch, states in got.items():
        reference = at_epoch(batches, epoch)
        assert padded_rows(reference) >= 8  # series end mid-window again and again
        want = expected_states(reference, inputs, state_of, units=3)
        assert len(states) == len(want) == len(reference)
        for k, (g, w) in enumerate(zip(states, want, strict=True)):
            np.testing.assert_allclose(g, w, atol=2e-5, err_msg=f"epoch {epoch} batch {k}")
        # In words: after the epoch, each stream holds its last series' state, run alone.
        last = {i: s for b in reference for i, s in enumerate(b.series.tolist()) if s >= 0}
        for i, s in last.items():
            np.testing.assert_allclose(states[-1][i], state_of(inputs[s]), atol=2e-5)


def test_hold_keeps_the_old_state_in_padded_rows_under_jit() -> None:
    real = jnp.array([True, False, True])
    old = {"h": jnp.zeros((3, 2)), "conv": jnp.zeros((2, 3)), "none": None}
    new = {"h": jnp.ones((3, 2)), "conv": jnp.ones((2, 3)), "none": None}
    held = jax.jit(
        lambda n, o: {
            "h": hold(n["h"], o["h"], real, axis=0),
            "conv": hold(n["conv"], o["conv"], real, axis=-1),
            "none": hold(n["none"], o["none"], real, axis=0),
        }
    )(new, old)
    assert held["none"] is None
    np.testing.assert_array_equal(held["h"], [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(held["conv"], [[1, 0, 1], [1, 0, 1]])
    # Gradients reach the new state in real rows and the old one in padded rows.
    grad_new, grad_old = jax.grad(lambda n, o: hold(n, o, real, axis=0).sum(), argnums=(0, 1))(
        jnp.ones((3, 2)), jnp.ones((3, 2))
    )
    np.testing.assert_array_equal(grad_new, [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(grad_old, [[0, 0], [1, 1], [0, 0]])


def test_hold_checks_its_arguments() -> None:
    h = jnp.ones((4, 3))
    flags = jnp.ones(4, bool)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`real` must hold one bool flag per stream, shape (B,). Received: real of dtype "
            "float32 and shape (4,)"
        ),
    ):
        hold(h, h, jnp.ones(4), axis=0)
    with pytest.raises(ValueError, match="must be pytrees of the same structure"):
        hold((h, h), h, flags, axis=0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`new_state` and `old_state` must have the same shapes, with an axis 0. "
            "Received: leaves of shapes (4, 3) and (4, 2)"
        ),
    ):
        hold(h, jnp.ones((4, 2)), flags, axis=0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`state` must have one row per stream along axis=1. Received: a state of shape "
            "(4, 3) and 4 flags"
        ),
    ):
        hold(h, h, flags, axis=1)


# --- The guide's grain script: worker processes that import it again -------------------------


def guide_script(tmp_path: Path, edit: tuple[str, str] = ("", "")) -> subprocess.CompletedProcess:
    """Run the JAX guide's ``train.py`` as a script (``edit`` replaces one line first)."""
    (code,) = [
        b.code for b in blocks(GUIDE.read_text(encoding="utf-8")) if b.code.startswith("# train.py")
    ]
    old, new = edit
    assert old in code
    script = tmp_path / "train.py"
    script.write_text(code.replace(old, new), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,  # two epochs through two worker processes take seconds
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_guides_grain_script_reads_through_worker_processes_quietly(tmp_path: Path) -> None:
    pytest.importorskip("grain", reason="grain is optional: pip install grain")
    done = guide_script(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    batches = seqbatch.StreamBatcher(
        [np.zeros(n) for n in range(60, 200, 7)], batch_size=8, sequence_length=20, remainder="pad"
    )
    assert done.stdout == f"{2 * len(batches)} records read through 2 worker processes\n"
    assert "Traceback" not in done.stderr
    # What the guide says may remain: the resource tracker's note on the last records' blocks
    # (how many are still held when Python exits depends on the timing of the workers).
    noted = [line for line in done.stderr.splitlines() if "shared_memory" in line]
    assert all("resource_tracker: There appear to be" in line for line in noted), noted


def test_the_guides_grain_script_explains_both_of_its_lines(tmp_path: Path) -> None:
    # What the guide says happens without them: the workers' own pipelines, then the warning.
    pytest.importorskip("grain", reason="grain is optional: pip install grain")
    unguarded = guide_script(tmp_path, ('if __name__ == "__main__":', "if True:"))
    assert unguarded.returncode != 0
    assert "Worker process was terminated unexpectedly" in unguarded.stderr
    uncollected = guide_script(tmp_path, ("    gc.collect()", "    pass"))
    assert uncollected.returncode == 0, uncollected.stderr[-3000:]
    assert re.search(
        r"There appear to be \d+ leaked shared_memory objects to clean up at shutdown",
        uncollected.stderr,
    )


# --- Imports ---------------------------------------------------------------------------------


def test_each_adapter_loads_its_own_framework_on_first_use_only() -> None:
    code = (
        "import sys, seqbatch\n"
        "heavy = ('torch', 'jax', 'grain', 'tensorflow', 'keras')\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "seqbatch.jax.StreamSource\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "seqbatch.torch.StreamDataset\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["[]", "['jax']", "['torch', 'jax']"]
