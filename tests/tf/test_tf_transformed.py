"""A seqbatch tf.data dataset extended by the user keeps its epochs and its checks in fit().

``batches.to_tf_dataset().prefetch(2)``, ``.map(f)``, ``.with_options(...)``, ``.apply(f)``:
each Keras epoch ``e`` must still train epoch ``e``'s layout of a shuffled batcher (so that
``fit(initial_epoch=2)`` resumes exactly), a ``steps_per_epoch`` other than the number of
batches must still be refused, and so must any transformation that does not pass the
batches on one for one and in order, and a ``cache`` that would replay one layout in every
epoch. The model records the first step of every row it trains on (``order_model``) and the
data encodes its position, so a batch of the wrong epoch or order shows as a wrong number.
``tests/tf/test_tf_distributed_transformed.py`` does the same under ``tf.distribute``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import seqbatch
from seqbatch.keras import BackupAndRestore, StatefulTraining
from tests.encoded import encoded_series
from tests.keras_models import first_steps, order_model
from tests.keras_runs import Interrupt, StopAt, batcher, shuffled

# After Keras: on the torch backend, torch must load before TensorFlow (the other order
# crashes in torch.optim).
tf = pytest.importorskip("tensorflow", reason="the tf.data adapter needs TensorFlow")

pytestmark = [pytest.mark.keras, pytest.mark.needs_tensorflow]


def unshuffled() -> seqbatch.StreamBatcher:
    data = [encoded_series(s, n, (1,), "float32") for s, n in enumerate([20, 16, 12, 9])]
    return seqbatch.StreamBatcher(data, batch_size=2, sequence_length=4)


@tf.autograph.experimental.do_not_convert
def scaled(x: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
    """A user's map: the same batch, its weights halved (the order model learns nothing)."""
    return x, y, w * 0.5


def options(deterministic: bool | None = None) -> tf.data.Options:
    o = tf.data.Options()
    o.experimental_optimization.map_parallelization = True
    if deterministic is not None:
        o.deterministic = deterministic
    return o


# Transformations that pass the batches on one for one and in order, as users write them.
KEPT: dict[str, Callable[[Any], Any]] = {
    "prefetch": lambda ds: ds.prefetch(2),
    "prefetch autotune": lambda ds: ds.prefetch(tf.data.AUTOTUNE),
    "map": lambda ds: ds.map(scaled),
    "parallel map": lambda ds: ds.map(scaled, num_parallel_calls=tf.data.AUTOTUNE),
    "with_options": lambda ds: ds.with_options(options(deterministic=False)),
    "apply": lambda ds: ds.apply(lambda d: d.map(scaled).prefetch(1)),
    "chain": lambda ds: ds.map(scaled).with_options(options()).prefetch(2),
}


def fit(model: keras.Model, data: Any, **kwargs: Any) -> None:
    model.fit(data, shuffle=False, verbose=0, **kwargs)


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
@pytest.mark.parametrize("transform", KEPT.values(), ids=KEPT.keys())
def test_initial_epoch_trains_that_epochs_layout(transform: Callable) -> None:
    model, seen = order_model(2, 4)
    fit(
        model,
        transform(shuffled().to_tf_dataset()),
        initial_epoch=2,
        epochs=4,
        callbacks=[seen, StatefulTraining()],
    )
    assert seen.seen == first_steps(shuffled(), range(2, 4))
    # Epoch 0's layout differs, so a dataset that counted its own passes could not pass.
    assert seen.seen[: len(shuffled())] != first_steps(shuffled(), range(1))


def steps_refusal(steps: int, n: int, name: str = "steps_per_epoch") -> str:
    return (
        rf"`{name}` must be None \(or {n}, the number of batches per epoch\) for seqbatch "
        rf"batches: .* Received: {name}={steps}"
    )


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
@pytest.mark.parametrize("transform", [*KEPT.values(), lambda ds: ds.cache()], ids=[*KEPT, "cache"])
def test_steps_per_epoch_other_than_the_batches_is_refused(transform: Callable) -> None:
    batches = unshuffled()
    n = len(batches)
    assert n > 3
    model, seen = order_model(2, 4)
    with pytest.raises(ValueError, match=steps_refusal(3, n)):
        fit(
            model,
            transform(batches.to_tf_dataset()),
            steps_per_epoch=3,
            epochs=2,
            callbacks=[seen, StatefulTraining()],
        )
    assert seen.seen == []
    with pytest.raises(ValueError, match=steps_refusal(3, n, "validation_steps")):
        fit(
            model,
            batches.to_tf_dataset(),
            validation_data=transform(batches.to_tf_dataset()),
            validation_steps=3,
            callbacks=[seen, StatefulTraining()],
        )
    assert seen.seen == []


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
def test_a_cache_of_unshuffled_batches_trains_every_epoch_on_them() -> None:
    # Every pass of unshuffled batches is the same, so replaying the first one is exact.
    model, seen = order_model(2, 4)
    fit(
        model,
        unshuffled().to_tf_dataset().cache().prefetch(2),
        initial_epoch=2,
        epochs=4,
        callbacks=[seen, StatefulTraining()],
    )
    assert seen.seen == first_steps(unshuffled(), range(2, 4))


REFUSED = {
    "shuffle": lambda ds: ds.shuffle(4, seed=0),
    "take": lambda ds: ds.take(3),
    "skip": lambda ds: ds.skip(1),
    "repeat": lambda ds: ds.repeat(2),
    "filter": lambda ds: ds.filter(lambda x, y, w: True),
    "batch": lambda ds: ds.unbatch().batch(2),
    "zip": lambda ds: tf.data.Dataset.zip(ds, ds).map(lambda a, b: a),
    "concatenate": lambda ds: ds.concatenate(ds),
}


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
@pytest.mark.parametrize("method", REFUSED)
def test_a_transformation_that_misaligns_the_streams_is_refused(method: str) -> None:
    model, seen = order_model(2, 4)
    ds = REFUSED[method](shuffled().to_tf_dataset().prefetch(1))
    with pytest.raises(
        ValueError,
        match=r"`x` must be a dataset of seqbatch\.tf\.to_dataset, or one made from it by tf\."
        r"data transformations that pass its batches on one for one and in order \(prefetch, "
        r"map, with_options, apply of these, and cache of unshuffled batches\), so that row i "
        r"of every batch continues row i of the batch before\. Received: x made with "
        rf"`{method}` from a seqbatch dataset",
    ):
        fit(model, ds, callbacks=[seen, StatefulTraining()])
    assert seen.seen == []


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
@pytest.mark.parametrize(
    "transform",
    [
        lambda ds: ds.map(scaled, num_parallel_calls=2, deterministic=False),
        lambda ds: ds.map(scaled, num_parallel_calls=2).with_options(options(False)),
    ],
    ids=["deterministic=False", "Options.deterministic=False"],
)
def test_a_map_that_may_reorder_the_batches_is_refused(transform: Callable) -> None:
    model, seen = order_model(2, 4)
    with pytest.raises(ValueError, match=r"`x` must keep the order of the seqbatch batches"):
        fit(model, transform(shuffled().to_tf_dataset()), callbacks=[seen, StatefulTraining()])
    assert seen.seen == []


@pytest.mark.filterwarnings("ignore:Some streams of these batches:UserWarning")
def test_a_cache_that_would_replay_one_layout_is_refused(tmp_path: Path) -> None:
    model, seen = order_model(2, 4)
    with pytest.raises(
        ValueError,
        match=r"`validation_data` must not read a shuffled StreamBatcher through `cache`: the "
        r"cache replays the first pass's batches in every epoch",
    ):
        fit(
            model,
            unshuffled().to_tf_dataset(),
            validation_data=shuffled().to_tf_dataset().prefetch(1).cache(),
            callbacks=[seen, StatefulTraining()],
        )
    path = str(tmp_path / "cache")
    with pytest.raises(
        ValueError,
        match=rf"`x` must not read a seqbatch dataset through a cache in a file: .* Received: "
        rf"x made with cache\({re.escape(repr(path))}\)",
    ):
        fit(model, unshuffled().to_tf_dataset().cache(path), callbacks=[seen, StatefulTraining()])
    assert seen.seen == []


def test_a_user_dataset_of_no_seqbatch_batches_is_left_alone() -> None:
    x = np.zeros((4, 4, 1), "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, x)).batch(2).shuffle(2).take(2)
    model, seen = order_model(2, 4)
    fit(model, ds, epochs=1, callbacks=[seen, StatefulTraining()])
    assert len(seen.seen) == 2


def test_a_stopped_fit_on_a_prefetched_dataset_goes_on_with_the_batches_it_had_left(
    tmp_path: Path,
) -> None:
    first = batcher(seed=None)
    n = len(first)
    assert n > 12
    seen: list[list[float]] = []
    for stop, batches in [(7, first), (None, batcher(seed=None))]:
        model, recorder = order_model(2, 3)
        callbacks = [BackupAndRestore(tmp_path / "backup", save_freq=5), StatefulTraining()]
        callbacks += [recorder, *([StopAt(stop)] if stop else [])]
        with contextlib.suppress(Interrupt):
            fit(
                model,
                batches.to_tf_dataset().map(scaled).prefetch(2),
                epochs=3,
                callbacks=callbacks,
            )
        seen.append(recorder.seen)
    expected = first_steps(batcher(seed=first.seed), range(3))
    assert seen[0] == expected[:7]
    assert seen[1] == expected[5:]


def test_backup_refuses_a_cache(tmp_path: Path) -> None:
    model, seen = order_model(2, 4)
    with pytest.raises(
        ValueError,
        match=r"`x` of fit\(\) must not read its seqbatch dataset through `cache` for seqbatch"
        r"\.keras\.BackupAndRestore: the pass of an epoch resumed mid-way serves only its "
        r"remaining batches",
    ):
        fit(
            model,
            unshuffled().to_tf_dataset().cache(),
            callbacks=[BackupAndRestore(tmp_path / "b"), StatefulTraining(), seen],
        )
    assert seen.seen == []


# --- The tf.data internals that seqbatch._tf_found relies on -------------------------------


def test_each_transformation_holds_the_dataset_it_reads() -> None:
    base = tf.data.Dataset.range(3)
    rows = base.map(lambda v: (tf.fill([2], tf.cast(v, tf.float32)),) * 3)
    for method in (*KEPT.values(), *REFUSED.values(), lambda ds: ds.cache()):
        assert method(rows)._inputs()
    assert base.prefetch(1)._inputs() == [base]
    assert base.with_options(options())._inputs() == [base]
    parallel = base.map(lambda v: v, num_parallel_calls=2)
    assert parallel._deterministic == "default"
    assert base.map(lambda v: v, num_parallel_calls=2, deterministic=False)._deterministic == (
        "false"
    )
    assert bytes(base.cache("f")._filename.numpy()) == b"f"
    assert bytes(base.cache()._filename.numpy()) == b""
