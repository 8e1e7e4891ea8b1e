"""``python -m seqbatch plan`` lays out every argument of the batcher that shapes the layout.

Expected numbers are worked out by hand from the rules in docs/concepts.md: two series of 23
and 17 steps, 2 streams of 5-step windows.
"""

from __future__ import annotations

import pytest

from seqbatch.__main__ import main

SERIES = ["plan", "--series", "23", "17", "--batch-size", "2", "--sequence-length", "5"]


def plan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_align_end_leaves_out_the_oldest_steps(capsys: pytest.CaptureFixture[str]) -> None:
    start = plan([*SERIES, "--targets", "none"], capsys)
    end = plan([*SERIES, "--targets", "none", "--align", "end"], capsys)
    # 23 = 4 windows + 3 steps, 17 = 3 windows + 2 steps: 5 steps left over either way,
    # the newest by default, the oldest aligned to the end.
    assert start[3] == (
        "steps: 40 in the data = 35 used + 0 without target + 0 before the offset + 5 dropped "
        "(remainder='drop')"
    )
    assert end[3] == (
        "steps: 40 in the data = 35 used + 0 without target + 5 dropped before the first "
        "window (the oldest) + 0 after the last (remainder='drop', align='end')"
    )


def test_no_return_sequences_gives_one_target_per_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plan(SERIES, capsys)[0] == "data: 2 series, x (2, 5) float32, y (2, 5) float32"
    last = plan([*SERIES, "--no-return-sequences"], capsys)
    assert last[0] == "data: 2 series, x (2, 5) float32, y (2,) float32"
    assert plan([*SERIES, "--return-sequences"], capsys)[0].endswith("y (2, 5) float32")


def test_align_end_with_padding_is_refused_as_the_batcher_refuses_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*SERIES, "--align", "end", "--remainder", "pad"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m seqbatch plan: error: `align='end'` needs remainder='drop' and a layout "
        "other than packing: the steps left over go before the first window, where padding "
        "may not go (it would run through the state before the data), and a packed stream has "
        "no series of its own to align. Received: align='end' with remainder='pad', "
        "layout='whole'"
    )
    with pytest.raises(SystemExit):
        main([*SERIES, "--align", "middle"])
    assert "argument --align: invalid choice: 'middle'" in capsys.readouterr().err
