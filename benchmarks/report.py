"""The results: one row per measurement, printed as a markdown table.

A ratio is always "how many times faster seqbatch is than the peer": the peer's time over
seqbatch's time, or seqbatch's bandwidth over the peer's. Above 1, seqbatch is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.sizes import FULL, QUICK, Sizes

RATIO_NOTE = (
    "ratio = peer time / seqbatch time (or seqbatch bandwidth / peer bandwidth): "
    "above 1x, seqbatch is faster. Times and bandwidths are medians of the repeats."
)


@dataclass(frozen=True)
class Row:
    """One measurement of seqbatch, beside the peer it is compared with.

    Attributes:
        section: the benchmark it belongs to (``numpy``, ``tf.data``, ...).
        case: what was measured, in words.
        value: seqbatch's figure, in ``unit``.
        unit: the unit of both figures: ``us/batch``, ``GB/s``, ``MB``, ``ms``, ``x``, ...
        peer: the peer's name, or ``""`` when there is none.
        peer_value: the peer's figure in the same unit, or None.
        ratio: see :data:`RATIO_NOTE`; None when no ratio applies.
        target: the target, in words (``docs/benchmarks.md``, "Targets"), or ``""``.
        met: whether the target is met; None without a target.
    """

    section: str
    case: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def speed_ratio(seqbatch_seconds: float, peer_seconds: float) -> float:
    """How many times faster seqbatch is: the peer's time over seqbatch's."""
    return peer_seconds / seqbatch_seconds


def figure(value: float, unit: str, *, signed: bool = False) -> str:
    """``value`` with three significant digits and its unit, written out as a person reads it.

    Never in exponent notation: thousands are grouped (``1,110 MB``, not ``1.11e+03 MB``) and
    small values keep their zeros (``0.0000123 s``). ``signed`` writes ``+`` before a positive
    value.

    Examples:
        >>> figure(1107.4, "MB"), figure(10.52, "MB"), figure(0.2378, "GB/s")
        ('1,110 MB', '10.5 MB', '0.238 GB/s')
    """
    text = f"{value:{'+' if signed else ''}.3g}"
    if "e" in text:  # .3g switches to an exponent from 1,000 up and below 0.0001
        rounded = float(text)
        exponent = int(text.split("e")[1])
        sign = "+" if signed else ""
        if exponent >= 0:
            text = f"{rounded:{sign},.0f}"
        else:
            text = f"{rounded:{sign}.{2 - exponent}f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"


def number(n: int) -> str:
    """A count as a person reads it: ``1e5`` for a power of ten from 10,000 up, else digits
    grouped by thousands.

    Examples:
        >>> number(100_000), number(838_860), number(1000)
        ('1e5', '838,860', '1,000')
    """
    digits = str(int(n))
    if n >= 10_000 and digits.rstrip("0") == "1":
        return f"1e{len(digits) - 1}"
    return f"{n:,}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table whose columns are padded to line up in a terminal too."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def rows_table(rows: Sequence[Row]) -> str:
    """The measurements as a markdown table: seqbatch, peer, ratio, target, met."""
    body = []
    for r in rows:
        peer = "" if r.peer_value is None else f"{r.peer}: {figure(r.peer_value, r.unit)}"
        body.append(
            [
                r.section,
                r.case,
                figure(r.value, r.unit),
                peer or r.peer,
                "" if r.ratio is None else f"{r.ratio:.2f}x",
                r.target,
                {True: "yes", False: "NO", None: ""}[r.met],
            ]
        )
    return markdown_table(["section", "case", "seqbatch", "peer", "ratio", "target", "met"], body)


def run_alone(run: Callable[[Sizes, Path], list[Row]], argv: Sequence[str] | None = None) -> None:
    """Run one section with ``[--quick]`` from ``argv`` and print its rows as a table."""
    parser = argparse.ArgumentParser(description="Run one benchmark section alone.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqbatch-benchmarks-") as tmp:
        print(rows_table(run(QUICK if args.quick else FULL, Path(tmp))))


def on_backend(module: str, backend: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module backend *args`` with ``KERAS_BACKEND=backend``, in a process of
    its own (Keras reads its backend once per process), and return the JSON of its last line.
    """
    result: dict[str, Any] = in_own_process(
        module, backend, *args, env={"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    return result


def in_own_process(module: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m module *args`` in a fresh process, with this checkout first on the
    path and ``env`` added to the environment, and return the JSON of its last line."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env={
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        what = " ".join((module, *args))
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
