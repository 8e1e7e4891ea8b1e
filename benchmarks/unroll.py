"""torch training on packed batches: :func:`seqbatch.torch.unroll` against the padding it saves.

``python -m benchmarks.unroll [--quick]`` runs this section alone.

Series of log-uniform lengths (the packing section's lengths) of 8 random float32 features
train an ``nn.LSTM(8, 64)`` and a linear head to predict the next step, for one epoch of
forward, backward and Adam steps, the state carried from batch to batch (and detached):

* packed (``series_boundary="pack"``), through ``unroll``: the layer runs once per batch in
  its fused kernel, each run of one series of the window its own packed sequence;
* the ``"reset"`` layout, through the plain layer: ``reset_rows`` before each window, then
  ``lstm(x, state)`` over every slot, padding included (the peer: what packing saves is the
  padding this layout runs through);
* packed, through the layer one step at a time, its state zeroed at each flagged step by
  hand: what a loop that honours per-step resets costs without ``unroll``. It is timed on
  the first batches of the epoch only, and scaled to the epoch's batches.

Two cases: 1,500 series on 32 streams, and the packing section's 10,000 series on 64 streams,
windows of 100 steps. The batches are made into tensors before the clock starts: the rows
time the training steps, and the numpy epoch of both layouts is the packing section's. The
target is the padding saved: the packed epoch must be faster than the reset one by at least
0.9 times the ratio of their batch slots. The runs take their steps in turns, the one least
far through its epoch next, so that a burst of load from other processes slows them alike;
the median of the repeats (after one round that warms up) is given. All of it runs in a
process of its own, on one torch thread (on a machine shared with other work, torch's pool
of threads made steps run many times slower, differently from run to run).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import series, series_lengths
from benchmarks.report import Row, in_own_process, run_alone, speed_ratio
from benchmarks.sizes import FULL, QUICK, Sizes

FEATURES, UNITS = 8, 64
TARGET = 0.9  # the packed epoch's speed-up must reach 0.9 x the slots saved
# (series, streams, window, repeats, batches the per-step loop is timed on), per size.
CASES = {
    "full": [(1500, 32, 100, 3, 8), (FULL.packing_series, FULL.packing_batch_size, 100, 3, 0)],
    "quick": [(60, 8, 20, 1, 2), (QUICK.packing_series, QUICK.packing_batch_size, 20, 1, 0)],
}


def batches_of(sizes: Sizes, count: int, streams: int, window: int, boundary: str) -> Any:
    """The tensors of one epoch of ``count`` log-uniform series laid out with ``boundary``."""
    from seqbatch import StreamBatcher
    from seqbatch.torch import TensorBatch

    lengths = series_lengths(sizes, "log-uniform", count=count)
    data = np.split(series(int(lengths.sum()), FEATURES), np.cumsum(lengths)[:-1])
    batches = StreamBatcher(
        data,
        batch_size=streams,
        sequence_length=window,
        remainder="pad",
        series_boundary=boundary,  # type: ignore[arg-type]
        shuffle=True,
        seed=0,
    )
    return [TensorBatch.from_batch(batches[k]) for k in range(len(batches))]


def per_step(lstm: Any, b: Any, state: Any) -> tuple[Any, Any]:
    """The layer one step at a time, zeroed right before each flagged step, held at padding."""
    import torch

    outs = []
    for t in range(b.x.shape[1]):
        flag = b.step_reset[:, t].view(1, -1, 1)
        state = tuple(torch.where(flag, 0.0, s) for s in state)
        out, new = lstm(b.x[:, t : t + 1], state)
        real = (b.sample_weight[:, t] > 0).view(1, -1, 1)
        state = tuple(torch.where(real, n, s) for n, s in zip(new, state, strict=True))
        outs.append(out[:, 0])
    return torch.stack(outs, dim=1), state


def training(how: str, tensors: list[Any], limit: int) -> Iterator[float]:
    """Train one epoch over ``tensors`` (its first ``limit`` batches, if > 0), yielding the
    seconds of each training step."""
    import torch

    from seqbatch.torch import detach, reset_rows, unroll, weighted_mean

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(FEATURES, UNITS, batch_first=True)
    head = torch.nn.Linear(UNITS, FEATURES)
    optimizer = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3)
    zeros = torch.zeros(1, tensors[0].x.shape[0], UNITS)
    state: Any = (zeros, zeros)
    for b in tensors[:limit] if limit > 0 else tensors:
        begin = time.perf_counter()
        if how == "unroll":
            out, state = unroll(lstm, b, state)
        elif how == "plain":
            out, state = lstm(b.x, reset_rows(state, b.reset, dim=1))
        else:
            out, state = per_step(lstm, b, state)
        loss = weighted_mean(((head(out) - b.y) ** 2).mean(dim=-1), b.sample_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = detach(state)
        yield time.perf_counter() - begin


def epochs_in_lockstep(runs: dict[str, tuple[list[Any], int]]) -> dict[str, float]:
    """Seconds of one epoch of each run, the runs' steps taken in turns: the run least far
    through its epoch steps next, so that a burst of load from other processes slows every
    run alike. A run limited to its first batches is scaled to its whole epoch."""
    steps = {how: training(how, tensors, limit) for how, (tensors, limit) in runs.items()}
    counts = {how: limit or len(tensors) for how, (tensors, limit) in runs.items()}
    done = dict.fromkeys(runs, 0)
    seconds = dict.fromkeys(runs, 0.0)
    while any(done[how] < counts[how] for how in runs):
        how = min((h for h in runs if done[h] < counts[h]), key=lambda h: done[h] / counts[h])
        seconds[how] += next(steps[how])
        done[how] += 1
    return {how: seconds[how] * len(runs[how][0]) / counts[how] for how in runs}


def measure(size_name: str) -> list[dict[str, Any]]:
    """Each case's batches and epoch seconds, in this process (see the module's docstring)."""
    import torch

    torch.set_num_threads(1)
    sizes = QUICK if size_name == "quick" else FULL
    out = []
    for count, streams, window, repeats, per_step_batches in CASES[size_name]:
        laid = {
            boundary: batches_of(sizes, count, streams, window, boundary)
            for boundary in ("reset", "pack")
        }
        runs = {"unroll": (laid["pack"], 0), "plain": (laid["reset"], 0)}
        if per_step_batches:
            runs["per-step"] = (laid["pack"], per_step_batches)
        times: dict[str, list[float]] = {how: [] for how in runs}
        for round_ in range(repeats + 1):  # round 0 warms up
            for how, seconds in epochs_in_lockstep(runs).items():
                if round_ > 0:
                    times[how].append(seconds)
        out.append(
            {
                "series": count,
                "streams": streams,
                "window": window,
                "batches": {boundary: len(t) for boundary, t in laid.items()},
                "per_step_batches": per_step_batches,
                "seconds": {how: float(np.median(t)) for how, t in times.items()},
            }
        )
    return out


def measured(size_name: str) -> list[dict[str, Any]]:
    """:func:`measure` in a process of its own: torch.optim must not share a process with
    the TensorFlow that the other sections import."""
    result: list[dict[str, Any]] = in_own_process("benchmarks.unroll", "--measure", size_name)
    return result


def run(sizes: Sizes, workdir: Path) -> list[Row]:
    """Per case, the packed epoch through ``unroll`` against the reset epoch; on the first
    case, against the per-step loop too. ``workdir`` is unused."""
    size_name = "quick" if sizes == QUICK else "full"
    lo, hi = sizes.packing_lengths
    rows = []
    for case in measured(size_name):
        seconds, batches = case["seconds"], case["batches"]
        saved = batches["reset"] / batches["pack"]
        ratio = speed_ratio(seconds["unroll"], seconds["plain"])
        what = (
            f"{case['series']:,} series of {lo} to {hi} steps (log-uniform), "
            f"{case['streams']} streams x {case['window']} steps, nn.LSTM({FEATURES}, {UNITS})"
        )
        rows.append(
            Row(
                "unroll",
                f"torch training epoch, packed through unroll ({batches['pack']} batches) vs "
                f"reset through the plain layer ({batches['reset']}, {saved:.2f}x the slots), "
                f"{what}",
                seconds["unroll"],
                "s",
                peer="reset, plain nn.LSTM",
                peer_value=seconds["plain"],
                ratio=ratio,
                target=f">= {TARGET:g} x slots saved = {TARGET * saved:.2f}x",
                met=ratio >= TARGET * saved,
            )
        )
        if "per-step" in seconds:
            rows.append(
                Row(
                    "unroll",
                    "torch training epoch, packed through unroll vs packed through the layer "
                    f"step by step with resets by hand (timed on {case['per_step_batches']} "
                    f"batches, scaled to the epoch; {seconds['plain'] / seconds['per-step']:.2f}x "
                    f"the reset epoch), {what}",
                    seconds["unroll"],
                    "s",
                    peer="per-step loop",
                    peer_value=seconds["per-step"],
                    ratio=speed_ratio(seconds["unroll"], seconds["per-step"]),
                )
            )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--measure", choices=("full", "quick"))
    known, rest = parser.parse_known_args()
    if known.measure is not None:
        print(json.dumps(measure(known.measure)))
    else:
        run_alone(run, rest)
