"""Before the first step: the model and the arguments of a running Keras call, checked
against the batches it is fed.

A batch size that differs between the model and the data fails deep inside the graph (or
under ``tf.distribute`` in an ``AddN``); targets with a time axis that the model's output
lacks, or the reverse, broadcast in the loss and train silently; ``steps_per_epoch`` other
than the number of batches makes Keras carry one iterator across epochs, so that an epoch
starts where the last one stopped. Each is refused here, naming both sides; and
``validation_split``, which cannot give validation streams of their own.

Under ``keras.distribution`` with several processes the model is one program over the
global batch: with ``auto_shard_dataset=False`` each process feeds its part of it, and with
``auto_shard_dataset=True`` Keras splits the data itself, a ``PyDataset`` by batch index
(after Keras 3.15.1), which would deal each process every other batch of every stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from seqbatch.keras.run import KerasCall
from seqbatch.keras.states import stateful_rnns


def check_call(
    call: KerasCall,
    *,
    input_shapes: Sequence[tuple[int, ...]],
    y_shape: Sequence[int] | None,
    steps: int,
) -> None:
    """Raise ``ValueError`` if ``call`` would train or run on these batches misaligned.

    Args:
        call: the running Keras call.
        input_shapes: the shapes of the model inputs of a batch, ``[x's]`` or
            ``[x's, reset's]`` (reset ``(B,)``, or ``(B, W)`` for packed batches), all
            replicas together.
        y_shape: the shape of the targets of a batch, or None without targets.
        steps: batches per epoch.
    """
    batch_size = input_shapes[0][0]
    rows, counted = _model_rows(call.model, batch_size)
    for rnn in stateful_rnns(call.model):
        built_for = keras.tree.flatten(rnn.states)[0].shape[0]
        if built_for != rows:
            raise ValueError(
                "`batch_size` of the batches must be the batch size that the model's "
                "stateful RNNs were built for, since each row is one stream with its own "
                f"state. Received: batch_size={batch_size}{counted} for layer "
                f"'{rnn.name}', built for batch size {built_for}: build the model with "
                f"keras.Input(batch_shape=({rows}, ...)) or the StreamBatcher with "
                f"batch_size={built_for * batch_size // rows}"
            )
    shapes = [(rows, *shape[1:]) for shape in input_shapes]
    _check_flag_shape(call.model, shapes)
    if y_shape is not None and call.method != "predict":
        _check_targets(call.model, shapes, (rows, *y_shape[1:]))
    fit = call.fit
    if fit is not None:
        check_validation_split(fit, input_shapes[0])
        name = "steps_per_epoch" if call.training else "validation_steps"
        given = fit.arguments.get(name)
        if given is not None and given != steps:
            raise ValueError(
                f"`{name}` must be None (or {steps}, the number of batches per epoch) for "
                "seqbatch batches: otherwise Keras carries one iterator across epochs, and "
                "an epoch starts with the batches that the last one left, in another epoch's "
                f"layout, while the model starts from fresh states. Received: {name}={given}"
            )


def check_validation_split(fit: KerasCall, x_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` if ``fit`` was given a ``validation_split``, naming the fix.

    Keras splits arrays by rows, never a dataset: validation needs streams of its own, in a
    batcher of its own. Keras refuses the split itself when ``validation_data`` is None (for
    a :class:`~seqbatch.keras.StreamSequence`, with this message) and ignores it otherwise.

    Args:
        fit: the running ``fit()``.
        x_shape: the shape of ``x`` in a batch, ``(batch_size, sequence_length, ...)``.
    """
    given = fit.arguments.get("validation_split")
    if not given:
        return
    batch_size, length = x_shape[:2]
    raise ValueError(
        "`validation_split` must be 0 (its default) on seqbatch batches: Keras can only split "
        "arrays, by rows, and validation needs streams of its own, batched like the training "
        "streams. Hold some series out and pass them in a batcher of their own: "
        "fit(..., validation_data=seqbatch.keras.StreamSequence(seqbatch.StreamBatcher("
        f"held_out, batch_size={batch_size}, sequence_length={length}))), or "
        "seqbatch.tf.to_dataset of that batcher on the tf.data path. Received: "
        f"validation_split={given!r}"
    )


def check_process_split() -> None:
    """Raise ``ValueError`` if Keras would split a ``PyDataset`` across processes by index.

    Under a ``keras.distribution`` whose processes feed different data (several processes,
    several model replicas) with ``auto_shard_dataset=True``, Keras 3.15.1 refuses any
    ``PyDataset`` itself, before this runs; later versions deal its batches to the processes
    by index (process ``p`` of ``P`` reads batches ``p``, ``p + P``, ...), and every stream
    would skip batches.
    """
    distribution = keras.distribution.distribution()
    if distribution is None or not distribution.auto_shard_dataset:
        return
    shards = _data_shards(distribution)
    if shards > 1:
        raise ValueError(
            "`auto_shard_dataset` of the Keras distribution must be False for a "
            "StreamSequence read by several processes: Keras would deal its batches to the "
            f"{shards} processes by index (process p reading batches p, p + {shards}, ...), "
            "so that row i of a batch would no longer continue row i of the batch before. "
            "Give each process its own streams instead, "
            f"StreamSequence(batches.shard(distribution.data_shard_id, {shards})) (for "
            "DataParallel, batches.shard(jax.process_index(), jax.process_count())), and set "
            "distribution.auto_shard_dataset = False. Received: auto_shard_dataset=True with "
            f"{distribution.num_processes} processes"
        )


def _data_shards(distribution: Any) -> int:
    # Processes of one model replica feed it the same rows: as Keras counts its data shards.
    return int(min(distribution.num_model_replicas, distribution.num_processes))


def _model_rows(model: keras.Model, batch_size: int) -> tuple[int, str]:
    """The rows that one copy of ``model`` computes on, fed batches of ``batch_size`` rows.

    Returns them with how they were counted from ``batch_size``, for a message: per replica
    of a ``tf.distribute`` strategy, or for the global batch of a ``keras.distribution``
    whose processes each feed their own part of it.
    """
    strategy = getattr(model, "distribute_strategy", None)
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if batch_size % replicas:
        raise ValueError(
            "`batch_size` of the batches must be a multiple of the number of replicas of the "
            "model's tf.distribute strategy, so that every replica holds whole streams. "
            f"Received: batch_size={batch_size} for num_replicas_in_sync={replicas}"
        )
    if replicas > 1:
        return batch_size // replicas, f" ({batch_size // replicas} per replica)"
    distribution = keras.distribution.distribution()
    # With auto_shard_dataset=True, Keras cuts the one global batch it is given itself.
    if distribution is not None and not distribution.auto_shard_dataset:
        shards = _data_shards(distribution)
        if shards > 1:
            return batch_size * shards, (
                f" (one process's part, {batch_size * shards} rows in all over {shards})"
            )
    return batch_size, ""


def _check_flag_shape(model: keras.Model, input_shapes: list[tuple[int, ...]]) -> None:
    """Refuse reset flags per step for a model that takes them per stream, or the reverse."""
    inputs = getattr(model, "inputs", None)
    if len(input_shapes) != 2 or not isinstance(inputs, list) or len(inputs) != 2:
        return
    expected = tuple(inputs[1].shape)
    if _fits(input_shapes[1], expected):
        return
    rows, width = input_shapes[0][:2]
    raise ValueError(
        "`reset` of the batches must have the shape of the model's reset input. Received: "
        f"reset of shape {input_shapes[1]} for a model input of shape {expected} (packed "
        "batches, series_boundary='pack', give a flag per step: "
        f"keras.Input(batch_shape=({rows}, {width})); other batches a flag per stream: "
        f"keras.Input(batch_shape=({rows},)))"
    )


def _check_targets(
    model: keras.Model, input_shapes: list[tuple[int, ...]], y_shape: tuple[int, ...]
) -> None:
    """Refuse targets that a built-in loss would broadcast against the model's output."""
    outputs = getattr(model, "outputs", None)
    if not isinstance(outputs, list) or len(outputs) != 1 or not _builtin_loss(model):
        return
    out = tuple(outputs[0].shape)
    if None in out[1:]:
        # A time axis left open in keras.Input: the output's shape for these inputs.
        inputs = [keras.KerasTensor(shape) for shape in input_shapes]
        spec = model.compute_output_spec(inputs[0] if len(inputs) == 1 else inputs)
        out = tuple(spec.shape)
    # Dense losses take y of the output's shape; sparse ones take it without the last axis,
    # or with a last axis of 1.
    if any(_fits(y_shape, shape) for shape in (out, out[:-1], (*out[:-1], 1))):
        return
    fix = ""
    if len(out) != len(y_shape):
        fix = (
            f": build the StreamBatcher with return_sequences={len(out) > len(y_shape)}, or "
            "change return_sequences of the model's last RNN"
        )
    raise ValueError(
        "`y` of the batches must have the shape of the model's output, or that shape "
        "without its last axis (sparse labels): the loss would broadcast one against the "
        f"other. Received: y of shape {y_shape} for a model output of shape {out}{fix}"
    )


def _fits(y_shape: tuple[int, ...], out: tuple[int | None, ...]) -> bool:
    return len(y_shape) == len(out) and all(
        o is None or o == y for y, o in zip(y_shape, out, strict=True)
    )


def _builtin_loss(model: keras.Model) -> bool:
    loss: Any = getattr(model, "loss", None)
    if isinstance(loss, str):
        return True
    owner = loss if callable(loss) and not isinstance(loss, keras.losses.Loss) else type(loss)
    return loss is not None and getattr(owner, "__module__", "").startswith("keras.")
