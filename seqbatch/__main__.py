"""Command line: ``python -m seqbatch demo`` trains the demo, ``python -m seqbatch plan`` shows a layout.

``python -m seqbatch --version`` prints the installed version.

``plan`` needs numpy alone and reads no data: it lays out zero-filled series of the sizes
given and prints :meth:`~seqbatch.StreamBatcher.describe`. ``demo`` imports Keras and runs
:func:`seqbatch.demo.run`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqbatch import __version__, lengths
from seqbatch.batcher import StreamBatcher

_SIZES = ("tiny", "default", "large")  # the keys of seqbatch.demo.SIZES, without importing Keras


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _sequence_length(text: str) -> Any:
    """An int, ``awd:BPTT[:SEED]`` or ``warmup:START:END:BATCHES`` (seqbatch.lengths)."""
    name, _, rest = text.partition(":")
    try:
        numbers = [int(v) for v in rest.split(":")] if rest else []
        if not rest:
            return _positive_int(text)
        if name == "awd" and len(numbers) in (1, 2):
            return lengths.awd(numbers[0], seed=numbers[1] if len(numbers) == 2 else 0)
        if name == "warmup" and len(numbers) == 3:
            return lengths.warmup(*numbers)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    raise argparse.ArgumentTypeError(
        f"must be a positive int, awd:BPTT[:SEED] or warmup:START:END:BATCHES, not {text!r}"
    )


def _targets(text: str) -> str | int | None:
    if text in ("none", "next"):
        return None if text == "none" else text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be 'none', 'next' or a positive number of steps ahead, got {text!r}"
        ) from None


def _what_to_install(err: ImportError) -> str:
    """What the demo lacks, for the Keras backend asked for (``KERAS_BACKEND``)."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        return (
            f"the demo needs Keras 3 and TensorFlow ({err}): "
            'python -m pip install "seqbatch[tf]", or ".[tf]" from a checkout'
        )
    framework, extra = {"jax": ("JAX", "jax"), "torch": ("PyTorch", "torch")}.get(
        backend, (backend, backend)
    )
    return (
        f"the demo needs Keras 3 and, with KERAS_BACKEND={backend}, {framework} ({err}): "
        f'python -m pip install keras "seqbatch[{extra}]", or keras ".[{extra}]" from a checkout'
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m seqbatch``."""
    parser = argparse.ArgumentParser(
        prog="python -m seqbatch",
        description="Exact batches for stateful recurrent models.",
    )
    parser.add_argument("--version", action="version", version=f"seqbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,plan}")

    demo = commands.add_parser(
        "demo",
        help="train a stateful LSTM on aligned vs shuffled streams (Keras)",
        description=(
            "Character-level language modelling on the Python standard library's source: the "
            "same stateful LSTM trained on seqbatch's aligned streams and on the same batches "
            "with their rows shuffled, and the validation loss of each."
        ),
    )
    demo.add_argument(
        "--size",
        choices=_SIZES,
        default="default",
        help=(
            "amount of text and default settings: tiny (12 s measured on 2 CPU cores with "
            "TensorFlow), default (30 s there), large"
        ),
    )
    demo.add_argument("--epochs", type=_positive_int, help="epochs (default: the size's)")
    demo.add_argument("--batch-size", type=_positive_int, help="streams (default: the size's)")
    demo.add_argument(
        "--sequence-length",
        type=_positive_int,
        help="characters per window (default: the size's)",
    )
    demo.add_argument("--units", type=_positive_int, help="LSTM units (default: the size's)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="seed (0)")
    demo.add_argument(
        "--quiet",
        action="store_true",
        help=(
            "no progress (otherwise a progress bar on a terminal, one line per epoch in a "
            "log or a pipe)"
        ),
    )
    demo.set_defaults(command_parser=demo)

    plan = commands.add_parser(
        "plan",
        help="print how data of given sizes is laid out in streams (no data needed)",
        description="Print the layout of StreamBatcher batches for series of the given lengths.",
    )
    lengths = plan.add_mutually_exclusive_group(required=True)
    lengths.add_argument("--steps", type=_positive_int, help="length of one long series")
    lengths.add_argument(
        "--series", type=_positive_int, nargs="+", metavar="LENGTH", help="lengths of many series"
    )
    plan.add_argument("--batch-size", type=_positive_int, default=32, help="streams (32)")
    plan.add_argument(
        "--sequence-length",
        type=_sequence_length,
        default=100,
        help=(
            "steps per window (100), or lengths that vary: awd:BPTT[:SEED] (AWD-LSTM's draw) "
            "or warmup:START:END:BATCHES"
        ),
    )
    plan.add_argument(
        "--burn-in", type=_non_negative_int, default=0, help="burn-in steps before each window (0)"
    )
    plan.add_argument(
        "--features", type=_positive_int, nargs="*", default=[], help="feature shape (none)"
    )
    plan.add_argument(
        "--targets", type=_targets, default="next", help="none, next (default) or steps ahead"
    )
    plan.add_argument(
        "--return-sequences",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a target per step (default); --no-return-sequences: per window's last step",
    )
    plan.add_argument("--remainder", choices=("drop", "pad"), default="drop")
    plan.add_argument(
        "--align",
        choices=("start", "end"),
        default="start",
        help="start (default): windows from each series' first step; end: to its newest step",
    )
    plan.add_argument("--series-boundary", choices=("reset", "concat", "pack"), default="reset")
    plan.add_argument("--shuffle", action="store_true", help="a new layout every epoch")
    plan.add_argument("--seed", type=_non_negative_int, default=0, help="shuffle seed (0)")
    plan.add_argument("--epoch", type=_non_negative_int, default=0, help="epoch to show (0)")
    plan.set_defaults(command_parser=plan)
    return parser


def _plan(args: argparse.Namespace) -> str:
    def zeros(steps: int) -> np.ndarray:
        # A read-only view of one zero: any length costs no memory.
        return np.broadcast_to(np.float32(0), (steps, *args.features))

    data = zeros(args.steps) if args.series is None else [zeros(n) for n in args.series]
    batches = StreamBatcher(
        data,
        args.targets,
        batch_size=args.batch_size,
        sequence_length=args.sequence_length,
        return_sequences=args.return_sequences,
        remainder=args.remainder,
        align=args.align,
        series_boundary=args.series_boundary,
        shuffle=args.shuffle,
        seed=args.seed,
        burn_in=args.burn_in,
    )
    batches.set_epoch(args.epoch)
    return batches.describe()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m seqbatch`` with ``argv`` (``sys.argv[1:]`` by default); return the exit code.

    Examples:
        >>> main(["plan", "--steps", "1000", "--batch-size", "4", "--sequence-length", "10"])
        data: 1 series, x (4, 10) float32, y (4, 10) float32
        layout: one series cut into contiguous streams (epoch 0)
        batches: 24 of 4 streams x 10 steps; resets: 4
        steps: 1000 in the data = 960 used + 1 without target + 0 before the offset + 39 dropped (remainder='drop')
        padding: 0 of 960 batch slots (0.0%)
        0

        Windows that end at the newest step, with a target for each window's last step:

        >>> main(["plan", "--steps", "1000", "--batch-size", "4", "--sequence-length", "10",
        ...       "--align", "end", "--no-return-sequences"])
        data: 1 series, x (4, 10) float32, y (4,) float32
        layout: one series cut into contiguous streams (epoch 0)
        batches: 24 of 4 streams x 10 steps; resets: 4
        steps: 1000 in the data = 960 used + 1 without target + 39 before the offset + 0 dropped (remainder='drop')
        padding: 0 of 960 batch slots (0.0%)
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "plan":
        try:
            print(_plan(args))
        except (TypeError, ValueError) as err:
            args.command_parser.error(str(err))
        return 0
    try:
        from seqbatch import demo
    except ImportError as err:
        args.command_parser.error(_what_to_install(err))
    try:
        data = demo.prepare(
            args.size, batch_size=args.batch_size, sequence_length=args.sequence_length
        )
    except ValueError as err:
        args.command_parser.error(str(err))
    demo.train_and_compare(
        data,
        epochs=args.epochs,
        units=args.units,
        seed=args.seed,
        verbose=0 if args.quiet else "auto",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
