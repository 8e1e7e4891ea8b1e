"""Window lengths that vary: AWD-LSTM's random lengths against a fixed length, and their cost.

``python -m benchmarks.lengths [--quick]`` runs this section alone.

A character-level language model (embedding, one stateful ``torch.nn.LSTM``, logits over the
characters) learns the demo's text (the standard library's modules, ``seqbatch.demo``) in a
plain torch loop that carries each row's state across batches and zeroes it where a batch
says ``reset``. It trains twice from the same initial weights, with Adam: once on windows of
``bptt`` steps, once on ``seqbatch.lengths.awd(bptt)`` windows with the learning rate of each
batch scaled by ``lr_scale``, as the paper does, and stopped once it has trained on as many
tokens as the fixed run. The figure is the validation loss (nats per character, on held-out
modules read in fixed windows with the state carried) after the same number of training
tokens.

The second row times ``batches[k]`` on AWD windows against the same data in fixed windows of
``bptt`` steps: the cost of windows that vary in the numpy core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import seqbatch
from benchmarks.report import Row, in_own_process, rows_table, speed_ratio
from benchmarks.sizes import FULL, QUICK, Sizes


@dataclass(frozen=True)
class Setting:
    train_chars: int
    validation_chars: int
    batch_size: int
    bptt: int
    units: int
    epochs: int


SETTINGS = {
    "full": Setting(400_000, 60_000, 32, 35, 128, 2),
    "quick": Setting(3_000, 1_000, 4, 10, 8, 1),
}
LR = 3e-3
VOCAB = 128  # ASCII


def corpus(setting: Setting) -> tuple[np.ndarray, np.ndarray]:
    """The demo's text: the standard library's public modules, every fifth held out for
    validation, as character ids (ASCII; 0 for the rest)."""
    modules = sorted(p for p in Path(os.__file__).parent.glob("*.py") if p.name[0] != "_")
    texts = [[], []]  # type: list[list[str]]
    for i, path in enumerate(modules):
        texts[i % 5 == 4].append(path.read_text(encoding="utf-8", errors="replace"))
    out = []
    for parts, chars in zip(texts, (setting.train_chars, setting.validation_chars), strict=True):
        raw = np.frombuffer("\n\n".join(parts).encode("ascii", "replace"), np.uint8)[:chars]
        if raw.size < chars:
            raise ValueError(f"the standard library holds {raw.size} characters, not {chars}")
        out.append(np.where(raw < VOCAB, raw, 0).astype(np.int64))
    return out[0], out[1]


def model(setting: Setting) -> Any:
    import torch

    class CharLSTM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 32)
            self.lstm = torch.nn.LSTM(32, setting.units, batch_first=True)
            self.out = torch.nn.Linear(setting.units, VOCAB)

        def forward(self, x: Any, state: Any) -> tuple[Any, Any]:
            h, state = self.lstm(self.embed(x), state)
            return self.out(h), state

    torch.manual_seed(0)
    return CharLSTM()


def carried(state: Any, reset: np.ndarray) -> Any:
    """The state detached from the last window's graph, zeroed on the rows that reset."""
    import torch

    keep = torch.as_tensor(~reset, dtype=torch.float32)[None, :, None]
    return tuple(s.detach() * keep for s in state)


def zero_state(setting: Setting, rows: int) -> Any:
    import torch

    return tuple(torch.zeros(1, rows, setting.units) for _ in range(2))


def train(setting: Setting, data: np.ndarray, sequence_length: Any, tokens: int | None) -> Any:
    """Train a fresh model; stop after ``setting.epochs`` epochs, or at ``tokens`` tokens."""
    import torch

    net = model(setting)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    batches = seqbatch.StreamBatcher(
        data, batch_size=setting.batch_size, sequence_length=sequence_length
    )
    seen, epoch = 0, 0
    while (tokens is None and epoch < setting.epochs) or (tokens is not None and seen < tokens):
        batches.set_epoch(epoch)
        state = zero_state(setting, setting.batch_size)
        for b in batches:
            if tokens is not None and seen >= tokens:
                break
            for group in optimizer.param_groups:
                group["lr"] = LR * float(b.lr_scale)
            state = carried(state, b.reset)
            logits, state = net(torch.tensor(b.x), state)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, VOCAB), torch.tensor(b.y).reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += int(b.sample_weight.sum())
        epoch += 1
    return net, seen


def validation_loss(setting: Setting, net: Any, data: np.ndarray) -> float:
    """Nats per character over the validation text, in fixed windows, the state carried."""
    import torch

    batches = seqbatch.StreamBatcher(
        data, batch_size=setting.batch_size, sequence_length=setting.bptt
    )
    state = zero_state(setting, setting.batch_size)
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            state = carried(state, b.reset)
            logits, state = net(torch.tensor(b.x), state)
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, VOCAB), torch.tensor(b.y).reshape(-1), reduction="sum"
                )
            )
            count += b.y.size
    return total / count


def batch_seconds(data: np.ndarray, sequence_length: Any, batch_size: int) -> float:
    """Median seconds of ``batches[k]`` over every batch of an epoch, 3 rounds."""
    batches = seqbatch.StreamBatcher(data, batch_size=batch_size, sequence_length=sequence_length)
    n = len(batches)
    rounds = []
    for _ in range(3):
        begin = time.perf_counter()
        for k in range(n):
            batches[k]
        rounds.append((time.perf_counter() - begin) / n)
    return float(np.median(rounds))


def measure(size: str) -> dict[str, Any]:
    """Train both models and time the batches; in a process of its own (see :func:`run`)."""
    import torch  # before anything else can load another framework's runtime

    torch.set_num_threads(1)  # tiny models: threads cost more than they give
    setting = SETTINGS[size]
    train_data, validation_data = corpus(setting)
    awd = seqbatch.lengths.awd(bptt=setting.bptt, seed=0, minimum=min(5, setting.bptt))
    fixed_net, tokens = train(setting, train_data, setting.bptt, None)
    awd_net, awd_tokens = train(setting, train_data, awd, tokens)
    fixed_loss = validation_loss(setting, fixed_net, validation_data)
    awd_loss = validation_loss(setting, awd_net, validation_data)
    # The core on its own: a batch of AWD windows against fixed ones, same data.
    long = np.tile(
        train_data, max(1, (2_000_000 if size == "full" else 100_000) // train_data.size)
    )
    return {
        "tokens": tokens,
        "awd_tokens": awd_tokens,
        "fixed_loss": fixed_loss,
        "awd_loss": awd_loss,
        "long": int(long.size),
        "fixed_s": batch_seconds(long, setting.bptt, 64),
        "awd_s": batch_seconds(long, awd, 64),
    }


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """The rows of this section, measured in a fresh process: torch alone in it."""
    del workdir
    size = "quick" if sizes is QUICK else "full"
    setting = SETTINGS[size]
    m = in_own_process("benchmarks.lengths", "--measure", size)
    tokens, awd_tokens = m["tokens"], m["awd_tokens"]
    fixed_loss, awd_loss, fixed_s, awd_s = m["fixed_loss"], m["awd_loss"], m["fixed_s"], m["awd_s"]
    model_case = (
        f"char LSTM({setting.units}), {tokens:,} training tokens, {setting.batch_size} "
        f"streams: validation loss (nats/char), AWD lengths (bptt={setting.bptt}) vs fixed"
    )
    return [
        Row(
            "lengths",
            model_case,
            awd_loss,
            "nats/char",
            f"fixed {setting.bptt}",
            fixed_loss,
            fixed_loss / awd_loss,
            f"trained tokens within 1 % ({awd_tokens:,} vs {tokens:,})",
            abs(awd_tokens - tokens) <= 0.01 * tokens,
        ),
        Row(
            "lengths",
            f"batch of 64 x AWD({setting.bptt}) windows of {m['long']:,} int64 tokens",
            awd_s * 1e6,
            "us/batch",
            f"fixed {setting.bptt}: zero-copy view",
            fixed_s * 1e6,
            speed_ratio(awd_s, fixed_s),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lengths")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--measure", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(rows_table(run(QUICK if args.quick else FULL, Path("."))))


if __name__ == "__main__":
    main()
