"""``python -m benchmarks [--quick] [--out DIR]``: run every benchmark and print the tables.

The output is markdown: the machine, the targets table (one row per measurement, with its
peer, ratio and target; the targets are listed in ``docs/benchmarks.md``, "Targets") and the
grid. With ``--out DIR`` the results are also written to ``DIR/benchmarks.json`` and drawn in
``DIR/benchmarks.svg``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", type=Path, help="folder for benchmarks.json and benchmarks.svg")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    # Before TensorFlow is first imported, by the sections below.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from benchmarks import (
        grid,
        keras_path,
        language_model,
        lengths,
        machine,
        many_series,
        memory,
        numpy_path,
        packing,
        plan_scale,
        plot,
        scaling,
        tables,
        tf_path,
        torch_path,
        unroll,
    )
    from benchmarks.report import RATIO_NOTE, rows_table
    from benchmarks.sizes import FULL, QUICK

    tf.get_logger().setLevel("ERROR")  # each pipeline is traced once, on purpose
    sizes = QUICK if args.quick else FULL
    size_name = "quick" if args.quick else "full"
    load_before = machine.load()
    rows = []
    begin = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - begin:6.1f} s] {what}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="seqbatch-benchmarks-") as tmp:
        workdir = Path(tmp)
        for section in (
            numpy_path,
            keras_path,
            tf_path,
            torch_path,
            memory,
            packing,
            plan_scale,
            many_series,
            tables,
            language_model,
            unroll,
            lengths,
        ):
            progress(section.__name__)
            rows += section.run(sizes, workdir)
        progress("benchmarks.scaling")
        times = scaling.measure(sizes, workdir)
        rows += scaling.rows(times)
        progress("benchmarks.grid")
        cells = grid.run(sizes)
        rows += grid.summary(cells)
    progress("done")

    print(f"# seqbatch benchmarks ({size_name} size)\n")
    if args.quick:
        print("The quick size is a smoke test: its figures are too small to mean anything.\n")
    for line in machine.describe():
        print(f"- {line}")
    print(f"- load average (1, 5, 15 min): {load_before} before, {machine.load()} after")
    print(f"- took {time.perf_counter() - begin:.0f} s\n")
    print(f"## Targets\n\n{RATIO_NOTE}\n\n{rows_table(rows)}\n")
    print(f"## Grid\n\n{grid.table(cells)}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        results = {
            "size": size_name,
            "machine": machine.describe(),
            "rows": [dataclasses.asdict(r) for r in rows],
            "grid": [dataclasses.asdict(c) for c in cells],
            "scaling": times,
        }
        (args.out / "benchmarks.json").write_text(json.dumps(results, indent=1) + "\n")
        plot.save(cells, times, args.out / "benchmarks.svg")


if __name__ == "__main__":
    main()
