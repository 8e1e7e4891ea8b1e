"""Smoke test of the benchmark suite: ``python -m benchmarks --quick`` runs every section and
prints every row. No timing is asserted: CI machines are too noisy for that."""

from __future__ import annotations

import itertools
import json

import pytest

from benchmarks import many_series, packing, packing_fit, plan_scale, unroll
from benchmarks.report import figure, number
from benchmarks.sizes import QUICK
from tests import background


def test_quick_run_prints_every_row_and_draws_the_figure(request: pytest.FixtureRequest) -> None:
    """``python -m benchmarks --quick``, started in the background as the session began."""
    done, tmp_path = request.config.stash[background.STASH].result(background.BENCHMARKS_TEST)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "## Targets" in out and "## Grid" in out
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    rows = results["rows"]
    counts = {
        section: sum(r["section"] == section for r in rows)
        for section in (
            "numpy",
            "keras",
            "tf.data",
            "torch",
            "memory",
            "packing",
            "plan",
            "many series",
            "tables",
            "language model",
            "unroll",
            "lengths",
            "scaling",
            "grid",
        )
    }
    assert counts == {
        "numpy": 8,
        "keras": 4,  # StreamSequence[k], then the share of a step on each Keras backend
        "tf.data": 5,
        "torch": 2,
        "memory": 6,
        # Padding, numpy epoch and tf.data batch per distribution; two fit steps per backend
        # (flags inside the window, and at its start only); a fit epoch and the validation
        # loss at equal epochs and at equal steps, per distribution, on the backends that
        # fit whole epochs.
        "packing": 3 * len(packing.DISTRIBUTIONS)
        + 2 * len(packing_fit.STEP_BACKENDS)
        + 3 * len(packing_fit.FIT_BACKENDS) * len(packing.DISTRIBUTIONS),
        # Build time and memory, and one lookup, per number of series; two shard rows.
        "plan": len(plan_scale.LAYOUTS) * (3 * len(QUICK.plan_series) + 2),
        # A batch per layout of tokens and of features, then two build rows.
        "many series": 2 * len(many_series.BOUNDARIES) + 2,
        # from_frame's build time and memory; an epoch's memory over a Parquet file and a
        # quarter of it, the full one under a memory limit, and the time per batch.
        "tables": 6,
        # Validation nats per token, carried state vs each of three others.
        "language model": 3,
        # The torch epoch through unroll against "reset" per case, and against the per-step
        # loop on the first case.
        "unroll": len(unroll.CASES["quick"]) + 1,
        # The validation loss of AWD-random against fixed lengths, and a batch of each.
        "lengths": 2,
        "scaling": 2 * len(QUICK.series_lengths),
        # No quick cell reaches 64 KB, so only the two tf.data worst-cell rows.
        "grid": 2,
    }
    assert len(rows) == sum(counts.values())
    table_lines = [line for line in out.splitlines() if line.startswith("| ")]
    for r in rows:
        assert sum(f"| {r['case']} " in line for line in table_lines) == 1, r["case"]
    cells = list(itertools.product(QUICK.grid_batch_sizes, QUICK.grid_windows, QUICK.grid_features))
    grid = out.split("## Grid", 1)[1]
    grid_rows = [line for line in grid.splitlines() if line.startswith("| ")][1:]
    assert len(grid_rows) == len(cells)
    assert sum("skipped: above the byte cap" in line for line in grid_rows) == 1
    assert (tmp_path / "benchmarks.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (1107.4, "1,110 MB"),  # the peak RSS that the page once printed as 1.11e+03 MB
        (6578.2, "6,580 MB"),
        (2877.0, "2,880 MB"),
        (999.6, "1,000 MB"),  # rounding carries into the thousands
        (123_456_789.0, "123,000,000 MB"),
        (134.2, "134 MB"),
        (10.52, "10.5 MB"),
        (3.6, "3.6 MB"),
        (0.2378, "0.238 MB"),
        (0.000_123_4, "0.000123 MB"),
        (0.000_012_34, "0.0000123 MB"),
        (0.000_012, "0.000012 MB"),
        (0.0, "0 MB"),
        (-4120.0, "-4,120 MB"),
    ],
)
def test_figures_are_written_without_exponents(value: float, written: str) -> None:
    assert figure(value, "MB") == written


def test_signed_figures() -> None:
    assert figure(0.0274, "us/batch", signed=True) == "+0.0274 us/batch"
    assert figure(-0.0274, "us/batch", signed=True) == "-0.0274 us/batch"
    assert figure(1234.0, "us/batch", signed=True) == "+1,230 us/batch"
    assert figure(0.000_012_3, "us", signed=True) == "+0.0000123 us"


@pytest.mark.parametrize(
    ("n", "written"),
    [
        (10**5, "1e5"),
        (10**8, "1e8"),
        (10_000, "1e4"),
        (1000, "1,000"),
        (838_860, "838,860"),
        (20_000, "20,000"),
        (7, "7"),
    ],
)
def test_counts_are_written_as_people_read_them(n: int, written: str) -> None:
    assert number(n) == written
