"""Back up a stateful ``fit()`` and resume it exactly, mid-epoch, after the process was killed."""

from __future__ import annotations

import contextlib
import glob
import json
import os
from typing import Any

import keras
import numpy as np

from seqbatch import _checks
from seqbatch.batcher import StreamBatcher
from seqbatch.keras.run import running_call
from seqbatch.keras.states import _CarriedState, _state_variables, _sync_jax_state, carry_states
from seqbatch.keras.tf_data import fed_by

_FILE = "seqbatch-backup.npz"
_FORMAT = 1


class BackupAndRestore(keras.callbacks.Callback):
    """Back up ``fit()`` as it goes, and after a crash go on exactly where it stopped.

    Named and shaped like ``keras.callbacks.BackupAndRestore``, which restores the weights and
    the epoch only: that epoch is then done again from its first batch, and the states of
    stateful RNNs are lost. This one saves everything that training reads, so that a run
    killed at any step (even with ``SIGKILL``) and started again with the same command ends
    with the same weights as a run never stopped (bit for bit on CPU; see the
    [resume guide](../guides/resume.md) for each backend):

    * the weights and the optimizer's variables (its step count and moments);
    * the state of every stateful RNN, put back before the first step that resumes;
    * the states of the model's random seed generators (``Dropout`` and others), so that
      they draw what they would have drawn;
    * where ``fit()`` stands: the epoch and the batch that comes next. A mid-epoch
      checkpoint resumes inside its epoch: that epoch's pass serves the remaining batches
      only, and Keras is told that it is shorter;
    * for the batchers of ``x`` and ``validation_data``, their seed and a fingerprint of their
      data and arguments (:meth:`seqbatch.StreamBatcher.state_dict`): a batcher built on
      other data or sizes is refused instead of resumed misaligned, and one built with
      ``seed=None`` takes the saved seed.

    ``x`` must be a :class:`StreamSequence` or a dataset of :func:`seqbatch.tf.to_dataset`.
    Use it beside :class:`StatefulTraining`. A checkpoint is one file,
    ``backup_dir/seqbatch-backup.npz``, written to a temporary file, flushed to disk and
    renamed over the last one: a process killed while writing leaves the last good
    checkpoint. On a new ``fit()`` the checkpoint is restored in ``on_train_begin``, and
    ``fit()`` starts at its epoch (as with ``initial_epoch``). Within the epoch that resumes
    mid-way, callbacks see its batches numbered from 0, and the loss Keras logs for it
    averages its remaining batches only.

    Args:
        backup_dir: the directory of the checkpoint, made if missing; keep it for this run
            alone.
        save_freq: ``"epoch"``: save at the end of every epoch; an int ``n``: save after
            every ``n``-th training step, counted from the start of training (a save due
            after an epoch's last batch waits for the epoch's end, after validation).
        delete_checkpoint: delete the checkpoint when ``fit()`` ends normally, and then
            ``backup_dir`` itself if nothing else is in it, even a directory you made: a
            later look finds no directory at all. ``False`` keeps both.

    Raises:
        TypeError: ``delete_checkpoint`` is not a bool, or ``save_freq`` is neither
            ``"epoch"`` nor an int.
        ValueError: ``backup_dir`` is empty or ``save_freq`` below 1; in ``fit()``, before
            the first step: ``x`` is not a seqbatch dataset, or the checkpoint was saved
            for another model (other variables) or for other data (other fingerprints).

    Examples:
        >>> import tempfile, numpy as np, keras, seqbatch
        >>> batches = seqbatch.StreamBatcher(np.sin(np.arange(60.0))[:, None], batch_size=2,
        ...                                  sequence_length=3)
        >>> model = keras.Sequential([
        ...     keras.Input(batch_shape=(2, 3, 1)),
        ...     keras.layers.LSTM(4, stateful=True, return_sequences=True),
        ...     keras.layers.Dense(1),
        ... ])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> backup_dir = tempfile.mkdtemp()
        >>> backup = seqbatch.keras.BackupAndRestore(backup_dir, save_freq=4)
        >>> history = model.fit(
        ...     seqbatch.keras.StreamSequence(batches), shuffle=False, epochs=2, verbose=0,
        ...     callbacks=[backup, seqbatch.keras.StatefulTraining()])
        >>> import os; os.path.exists(backup_dir)  # fit() ended: checkpoint and directory gone
        False
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike[str],
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
    ) -> None:
        super().__init__()
        if not os.fspath(backup_dir):
            raise ValueError(
                f"`backup_dir` must name a directory. Received: backup_dir={backup_dir!r}"
            )
        if save_freq != "epoch":
            if isinstance(save_freq, str):
                raise TypeError(
                    "`save_freq` must be 'epoch' or a positive integer. "
                    f"Received: save_freq={save_freq!r}"
                )
            save_freq = _checks.positive_int("save_freq", save_freq)
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = _checks.boolean("delete_checkpoint", delete_checkpoint)
        self._path = os.path.join(self.backup_dir, _FILE)
        self._fit: dict[str, Any] = {}
        self._n = 0
        # (epoch, next batch) of a mid-epoch checkpoint until its epoch begins; then the
        # batch that item 0 of the running epoch is.
        self._resume: tuple[int, int] | None = None
        self._offset = 0
        self._epoch = 0
        self._steps = 0  # trained since training began, at the last batch's end
        self._states: list[np.ndarray] | None = None
        self._torch_rng: np.ndarray | None = None
        self._due = False

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        carry_states(model)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        call = running_call()
        arguments = call.arguments if call is not None else {}
        x = arguments.get("x")
        batches = _batches_of(x, "x")
        if batches is None:
            raise ValueError(
                "`x` of fit() must be a seqbatch.keras.StreamSequence or a dataset of "
                "seqbatch.tf.to_dataset for seqbatch.keras.BackupAndRestore, which saves "
                "and restores where the batches stand. Received: x of type "
                f"{type(x).__name__}"
            )
        # Batches per epoch: the same in every epoch unless the window lengths vary.
        self._batches = batches
        self._n = len(batches)
        self._fit = {
            "x": x,
            "validation_data": arguments.get("validation_data"),
            "epoch_iterator": arguments.get("epoch_iterator"),
        }
        self._resume, self._offset, self._states, self._due = None, 0, None, False
        self._torch_rng = None
        for stale in glob.glob(glob.escape(self._path) + ".tmp*"):
            os.remove(stale)  # a write that a killed process left half done
        if os.path.exists(self._path):
            self._restore()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch, self._offset = epoch, 0
        if self._batches.varying:
            self._n = self._batches.view.n_batches(epoch)
        self._steps = epoch * self._n
        if self._resume is None or self._resume[0] != epoch:
            # Before the epoch's data loader is made, as in the run that saved it.
            self._restore_torch_rng()
            return
        self._offset = first = self._resume[1]
        self._steps += first
        x = self._fit["x"]
        if hasattr(x, "_start_pass_at"):
            x._start_pass_at(first)
        else:
            fed = fed_by(x, "x")
            assert fed is not None  # on_train_begin refused anything else
            fed.start_epoch(epoch, first)
        iterator = self._fit["epoch_iterator"]
        if iterator is not None:
            # This epoch has fewer steps. Keras reads their number once per fit(), and with
            # steps_per_epoch given (it can only equal the number of batches) keeps one
            # iterator across epochs: it makes a fresh one per epoch without it.
            iterator.steps_per_epoch = None
            iterator._num_batches = self._n - first

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._states is None:
            return
        # After every on_epoch_begin (StatefulTraining zeroes the states there), before the
        # step: the states the interrupted run had at this batch.
        _sync_jax_state(self.model)
        for variable, value in zip(_state_variables(self.model), self._states, strict=True):
            variable.assign(value)
        self._states = None
        self._restore_torch_rng()

    def _restore_torch_rng(self) -> None:
        """On torch, put back the global generator, which a Dropout without seed draws from.

        Keras's torch data loader draws from it too, once per epoch as it starts.
        """
        if self._torch_rng is not None:
            import torch

            torch.set_rng_state(torch.from_numpy(self._torch_rng))
            self._torch_rng = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not isinstance(self.save_freq, int):
            return
        # Keras numbers the last batch of each execution (steps_per_execution): a save is
        # due when the steps trained since training began pass a multiple of save_freq.
        position = self._offset + batch + 1
        steps = self._epoch * self._n + position
        if steps // self.save_freq > self._steps // self.save_freq:
            if position < self._n:
                self._save(self._epoch, position)
            else:
                self._due = True
        self._steps = steps

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._resume is not None and self._resume[0] == epoch:
            self._resume = None
            iterator = self._fit["epoch_iterator"]
            if iterator is not None:
                iterator._num_batches = self._n
        self._offset = 0
        if self.save_freq == "epoch" or self._due:
            self._save(epoch + 1, 0)
            self._due = False

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # Keras's own callback leaves the epoch it restored on the model, where it would
        # start every later fit() of this model.
        self.model._initial_epoch = None
        self._fit = {}
        if self.delete_checkpoint and os.path.exists(self._path):
            os.remove(self._path)
            with contextlib.suppress(OSError):
                os.rmdir(self.backup_dir)  # only if nothing else is in it

    def _variables(self) -> list[tuple[str, Any]]:
        """Everything fit() reads and changes, but the data: named groups of variables."""
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        seeds = [
            g.state
            for layer in model._flatten_layers(include_self=True, recursive=True)
            for g in getattr(layer, "_seed_generators", [])
            if not isinstance(g, _CarriedState)
        ]
        groups = [
            ("weights", model.weights),
            ("optimizer", optimizer.variables if optimizer is not None else []),
            ("states", _state_variables(model)),
            ("seeds", seeds),
        ]
        seen: set[int] = set()
        out = []
        for group, variables in groups:
            for v in variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append((group, v))
        return out

    def _save(self, epoch: int, next_batch: int) -> None:
        _sync_jax_state(self.model)
        variables = self._variables()
        arrays = {f"v{i}": keras.ops.convert_to_numpy(v) for i, (_, v) in enumerate(variables)}
        meta: dict[str, Any] = {
            "format": _FORMAT,
            "epoch": epoch,
            "next_batch": next_batch,
            "variables": [_describe(group, v) for group, v in variables],
            "batchers": {},
        }
        for name in ("x", "validation_data"):
            batches = _batches_of(self._fit[name], name)
            if batches is not None:
                position = {"epoch": epoch, "next_batch": next_batch} if name == "x" else {}
                meta["batchers"][name] = batches.state_dict(**position)
        if keras.backend.backend() == "torch":
            import torch

            arrays["torch_rng"] = torch.get_rng_state().numpy()
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        os.makedirs(self.backup_dir, exist_ok=True)
        _write_atomically(self._path, arrays)

    def _restore(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        with np.load(self._path, allow_pickle=False) as saved:
            meta = json.loads(saved["meta"].tobytes())
            arrays = [saved[f"v{i}"] for i in range(len(meta["variables"]))]
            torch_rng = saved["torch_rng"] if "torch_rng" in saved.files else None
        if meta.get("format") != _FORMAT:
            raise ValueError(
                f"The checkpoint {self._path} must be of format {_FORMAT}. Received: a file of "
                f"format {meta.get('format')!r}"
            )
        variables = self._variables()
        here = [_describe(group, v) for group, v in variables]
        # Layer names (in the paths) are numbered per process: the rest must agree.
        kinds = [[_kind(e) for e in entries] for entries in (here, meta["variables"])]
        if kinds[0] != kinds[1]:
            first = next(
                (i for i, (a, b) in enumerate(zip(*kinds, strict=False)) if a != b),
                min(len(here), len(meta["variables"])),
            )
            raise ValueError(
                "The checkpoint in `backup_dir` must be restored into the model that saved it, "
                f"with the same variables. Received: backup_dir={self.backup_dir!r}, whose "
                f"checkpoint holds {len(meta['variables'])} variables where this model has "
                f"{len(here)}; the first that differs: saved "
                f"{_entry(meta['variables'], first)}, here {_entry(here, first)}"
            )
        for name, state in meta["batchers"].items():
            batches = _batches_of(self._fit[name], name)
            if batches is None:
                raise ValueError(
                    f"`{name}` of fit() must be seqbatch batches, as when the checkpoint in "
                    f"`backup_dir` was saved. Received: {name} of type "
                    f"{type(self._fit[name]).__name__}"
                )
            try:
                batches.load_state_dict(state)
            except ValueError as err:
                raise ValueError(f"`{name}` of fit(): {err}") from None
        epoch, next_batch = meta["epoch"], meta["next_batch"]
        states = []
        for (group, variable), value in zip(variables, arrays, strict=True):
            if group == "states" and next_batch > 0:
                states.append(value)
            else:
                # At an epoch's start the states go back now, before on_epoch_begin (where
                # StatefulTraining zeroes them, as it did in the run that saved them).
                variable.assign(value)
        self._torch_rng = torch_rng
        self.model._initial_epoch = epoch
        if next_batch > 0:
            self._resume, self._states = (epoch, next_batch), states


def _batches_of(dataset: Any, name: str) -> StreamBatcher | None:
    """The batcher behind a StreamSequence or a dataset of seqbatch.tf.to_dataset (through
    the user's transformations), or None: also for ``distribute_datasets_from_function``,
    whose pipelines each hold a shard of the batcher."""
    batches = getattr(dataset, "batches", None)
    if hasattr(dataset, "_start_pass_at") and isinstance(batches, StreamBatcher):
        return batches
    fed = fed_by(dataset, name)
    if fed is None or fed.pipelines:
        return None
    if fed.cached:
        raise ValueError(
            f"`{name}` of fit() must not read its seqbatch dataset through `cache` for "
            "seqbatch.keras.BackupAndRestore: the pass of an epoch resumed mid-way serves "
            "only its remaining batches, and a cache would keep that shorter pass for the "
            f"epochs after. Received: {name} made with cache() (remove the cache)"
        )
    return fed.batches


def _describe(group: str, variable: Any) -> list[Any]:
    return [group, variable.path, list(variable.shape), str(variable.dtype)]


def _kind(entry: list[Any]) -> tuple[Any, ...]:
    """A variable's group, shape and dtype: what must match between save and restore."""
    return (entry[0], *entry[2:])


def _entry(entries: list[Any], i: int) -> str:
    return repr(entries[i]) if i < len(entries) else "nothing"


def _write_atomically(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``path`` so that it is, at any instant, the old file or the whole new one."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stubs miss **kwds
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    if os.name == "posix":
        # The rename itself reaches the disk once the directory is flushed.
        directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
