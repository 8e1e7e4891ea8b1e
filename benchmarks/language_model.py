"""A byte-level language model with a carried state: what the state is worth, in nats per token.

The text is Python's standard library source (one document per ``.py`` file under
``sysconfig.get_paths()["stdlib"]``, site-packages left out): real text that no one here
wrote, on every machine, with nothing downloaded. Every tenth file is held out for
validation. The documents are packed into streams (``StreamBatcher.from_offsets``,
``series_boundary="pack"``), and a small diagonal linear-recurrent model (a state-space
layer in plain PyTorch, no custom kernel) is trained three times from the same start, the
same batches and the same seed, with its state:

* **carried** from window to window by :class:`seqbatch.torch.StreamState`, reset where a
  document starts (the model's recurrence restarts inside a window where ``seq_idx`` changes);
* **reset** before every window: a model that never sees past its window;
* **shuffled**: carried, but into the wrong streams (the rows of the state permuted at every
  window, resets still applied): what a loader that loses the order of its rows trains on.

Each is evaluated the way it was trained, on the held-out files; the carried model is also
evaluated with its state reset every window. ``python -m benchmarks.language_model torch
SIZE`` prints the figures as JSON (it runs in a process of its own: TensorFlow and
``torch.optim`` must not share one).
"""

from __future__ import annotations

import json
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Row, on_backend
from benchmarks.sizes import QUICK, Sizes

REGIMES = ("carried", "reset", "shuffled")


@dataclass(frozen=True)
class LMSize:
    """The sizes of one run: corpus, streams, window, model and training steps."""

    files: int | None  # the first files of the sorted list; None: all of them
    max_bytes: int | None  # each file cut to its first bytes; None: whole
    batch_size: int
    window: int
    width: int
    layers: int
    steps: int
    val_batches: int
    lr: float


SIZES = {
    "quick": LMSize(60, 2000, 4, 32, 16, 1, 6, 3, 3e-3),
    "full": LMSize(None, None, 32, 64, 128, 2, 3000, 300, 2e-3),  # a minute on one GPU
    "cpu": LMSize(None, None, 16, 64, 64, 1, 1000, 100, 3e-3),  # the full suite without one
}


def stdlib_documents() -> list[Path]:
    """The ``.py`` files of the standard library, sorted, without site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)


def corpus(size: LMSize) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The bytes of the training and validation files, end to end, with their offsets."""
    files = stdlib_documents()[: size.files]
    splits: list[list[bytes]] = [[], []]
    for i, path in enumerate(files):
        text = path.read_bytes()[: size.max_bytes]
        if len(text) > 1:  # a document of one byte has no next byte to predict
            splits[i % 10 == 9].append(text)
    out = []
    for docs in splits:
        values = np.frombuffer(b"".join(docs), dtype=np.uint8).astype(np.int64)
        offsets = np.concatenate(([0], np.cumsum([len(d) for d in docs])))
        out.append((values, offsets))
    return out[0], out[1]


def build_model(size: LMSize) -> Any:
    import torch

    class DiagonalRecurrence(torch.nn.Module):
        """``h_t = a * h_{t-1} + (1 - a) * u_t`` per channel, restarted where ``seq_idx`` changes.

        The whole window at once: ``h = K @ u`` with ``K[t, s] = a^(t - s)`` for the steps
        ``s <= t`` of the same run, plus ``a^(t + 1) h_0`` on the row's first run.
        """

        def __init__(self, width: int) -> None:
            super().__init__()
            self.norm = torch.nn.RMSNorm(width)
            self.inp = torch.nn.Linear(width, 2 * width)
            decay = torch.linspace(0.5, 0.999, width)  # some channels remember far back
            self.logit = torch.nn.Parameter(torch.log(decay / (1 - decay)))
            self.out = torch.nn.Linear(width, width)

        def forward(self, x: Any, h0: Any, same: Any, first: Any) -> tuple[Any, Any]:
            u, gate = self.inp(self.norm(x)).chunk(2, dim=-1)
            log_a = torch.nn.functional.logsigmoid(self.logit)  # (D,)
            u = (1 - log_a.exp()) * u
            t = torch.arange(x.shape[1], device=x.device)
            lag = (t[:, None] - t[None, :]).clamp_min(0)  # (W, W)
            kernel = torch.exp(lag[None] * log_a[:, None, None])  # (D, W, W)
            causal = same & (t[:, None] >= t[None, :])  # (B, W, W)
            h = torch.einsum("bts,dts,bsd->btd", causal.to(u.dtype), kernel, u)
            h = h + first[..., None] * torch.exp((t[:, None] + 1) * log_a) * h0[:, None]
            return x + self.out(h * torch.nn.functional.silu(gate)), h

    class LM(torch.nn.Module):
        def __init__(self, width: int, layers: int) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(256, width)
            self.layers = torch.nn.ModuleList(DiagonalRecurrence(width) for _ in range(layers))
            self.norm = torch.nn.RMSNorm(width)
            self.head = torch.nn.Linear(width, 256)
            self.width = width

        def zeros(self, rows: int) -> tuple[Any, ...]:
            device = self.head.weight.device
            return tuple(torch.zeros(rows, self.width, device=device) for _ in self.layers)

        def forward(self, b: Any, state: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
            seq = b.seq_idx
            same = seq[:, :, None] == seq[:, None, :]
            first = (seq == seq[:, :1]).to(torch.float32)  # the row's first run
            last = (b.sample_weight.sum(1).long() - 1).clamp_min(0)  # the last real step
            rows = torch.arange(len(seq), device=seq.device)
            x = self.embed(b.x)
            new = []
            for layer, h0 in zip(self.layers, state, strict=True):
                x, h = layer(x, h0, same, first)
                new.append(h[rows, last])
            return self.head(self.norm(x)), tuple(new)

    return LM(size.width, size.layers)


def measure(size_name: str) -> dict[str, Any]:
    import torch

    import seqbatch
    from seqbatch.torch import StreamDataset, StreamState, reset_rows, weighted_mean

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        # As in benchmarks.packing_fit: on a machine shared with other work, torch's pool of
        # threads ran these steps many times slower than one thread.
        torch.set_num_threads(1)
    size = SIZES[size_name]
    (train_values, train_offsets), (val_values, val_offsets) = corpus(size)

    def batcher(values: np.ndarray, offsets: np.ndarray, shuffle: bool) -> Any:
        return seqbatch.StreamBatcher.from_offsets(
            values,
            offsets,
            batch_size=size.batch_size,
            sequence_length=size.window,
            series_boundary="pack",
            remainder="pad",
            shuffle=shuffle,
            seed=0,
        )

    train = batcher(train_values, train_offsets, True)
    val = batcher(val_values, val_offsets, False)

    def loss_of(logits: Any, b: Any) -> tuple[Any, Any]:
        losses = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), b.y.flatten(), reduction="none"
        ).view_as(b.sample_weight)
        return weighted_mean(losses, b.sample_weight), (losses * b.sample_weight).sum()

    def state_for(regime: str, carried: Any, b: Any, rng: np.random.Generator) -> Any:
        if regime == "reset":
            return model.zeros(size.batch_size)
        if regime == "shuffled":
            rows = torch.from_numpy(rng.permutation(size.batch_size)).to(device)
            carried.state_for(b)  # the order check
            return reset_rows(tuple(s[rows] for s in carried.state), b.reset, dim=0)
        return carried.state_for(b)

    def passes(batches: Any) -> Any:
        dataset = StreamDataset(batches)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=dataset.sampler)
        epoch = 0
        while True:
            dataset.set_epoch(epoch)
            yield from loader
            epoch += 1

    def on_device(b: Any) -> Any:
        b.seq_idx  # computed on the CPU, then moved with the batch  # noqa: B018
        return b.to(device, non_blocking=True)

    def evaluate(regime: str) -> float:
        carried = StreamState(val, zeros=model.zeros(size.batch_size))
        rng = np.random.default_rng(1)
        total, count = 0.0, 0.0
        with torch.no_grad():
            for k, b in enumerate(passes(val)):
                if k == min(size.val_batches, len(val)):
                    break
                b = on_device(b)
                logits, new = model(b, state_for(regime, carried, b, rng))
                carried.update(b, new)
                total += float(loss_of(logits, b)[1])
                count += float(b.sample_weight.sum())
        return total / count

    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "python": sys.version.split()[0],
        "train_documents": len(train_offsets) - 1,
        "train_bytes": int(train_values.size),
        "val_documents": len(val_offsets) - 1,
        "val_tokens": 0.0,
    }
    for regime in REGIMES:
        torch.manual_seed(0)
        model = build_model(size).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=size.lr)
        carried = StreamState(train, zeros=model.zeros(size.batch_size))
        rng = np.random.default_rng(0)
        begin = time.perf_counter()
        for step, b in enumerate(passes(train)):
            if step == size.steps:
                break
            b = on_device(b)
            logits, new = model(b, state_for(regime, carried, b, rng))
            loss, _ = loss_of(logits, b)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            carried.update(b, new)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{regime}_seconds"] = time.perf_counter() - begin
        out[f"{regime}_train_loss"] = float(loss.detach())
        out[regime] = evaluate(regime)
        if regime == "carried":
            out["carried_eval_reset"] = evaluate("reset")
    out["val_tokens"] = float(
        sum(float(b.sample_weight.sum()) for b in val[: min(size.val_batches, len(val))])
    )
    return out


def rows(sizes: Sizes) -> list[Row]:
    """The validation nats per token of each regime, beside the carried state's."""
    import torch

    size_name = "quick" if sizes == QUICK else "full" if torch.cuda.is_available() else "cpu"
    size = SIZES[size_name]
    got = on_backend("benchmarks.language_model", "torch", size_name)
    what = (
        f"{size.layers}-layer diagonal recurrence, width {size.width}, {size.steps} steps of "
        f"{size.batch_size} streams x {size.window} bytes, {got['train_documents']} stdlib files; "
        f"{got['val_tokens']:.0f} held-out tokens ({got['device']})"
    )
    out = []
    for peer, name in (
        ("reset", "state reset every window"),
        ("shuffled", "state carried into the wrong streams"),
        ("carried_eval_reset", "carried-state model evaluated with resets"),
    ):
        out.append(
            Row(
                "language model",
                f"validation nats/token, carried state vs {name}, {what}",
                got["carried"],
                "nats/token",
                peer=peer.replace("_", " "),
                peer_value=got[peer],
                ratio=got[peer] / got["carried"],
            )
        )
    return out


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """The section of ``python -m benchmarks``."""
    return rows(sizes)


if __name__ == "__main__":
    _, size_name = sys.argv[1:]
    print(json.dumps(measure(size_name)))
