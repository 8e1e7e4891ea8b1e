"""The demo and the command line, as a user runs them."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seqbatch.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


#: A line of TensorFlow's C++ log ("I0000 00:00:1796300543.457306   29090 port.cc:153] ..."),
#: or the one absl writes before it is set up.
NATIVE_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] |absl::InitializeLog"
)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # As a new user runs it: TensorFlow's log level left unset.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "seqbatch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_plan_prints_the_layout_without_importing_keras() -> None:
    code = textwrap.dedent(
        """
        import runpy, sys
        sys.argv = ["seqbatch", "plan", "--steps", "100000", "--batch-size", "32",
                    "--sequence-length", "100"]
        try:
            runpy.run_module("seqbatch", run_name="__main__", alter_sys=True)
        except SystemExit as done:
            assert done.code == 0
        print(sorted({"keras", "tensorflow"} & set(sys.modules)))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "data: 1 series, x (32, 100) float32, y (32, 100) float32",
        "layout: one series cut into contiguous streams (epoch 0)",
        "batches: 31 of 32 streams x 100 steps; resets: 32",
        "steps: 100000 in the data = 99200 used + 1 without target + 0 before the offset"
        " + 799 dropped (remainder='drop')",
        "padding: 0 of 99200 batch slots (0.0%)",
        "[]",
    ]


def test_plan_of_many_series(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--series", "500", "300", "200", "100", "--batch-size", "2"]
    argv += ["--sequence-length", "64", "--remainder", "pad", "--features", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "data: 4 series, x (2, 64, 3) float32, y (2, 64, 3) float32" in out
    assert "layout: 4 series dealt whole onto the streams (epoch 0)" in out
    assert "padding: 184 of 1280 batch slots (14.4%)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan"], "one of the arguments --steps --series is required"),
        (["plan", "--steps", "0"], "argument --steps: must be a positive integer, got '0'"),
        (["plan", "--steps", "ten"], "argument --steps: must be a positive integer, got 'ten'"),
        (["plan", "--steps", "10", "--series", "5"], "not allowed with argument --steps"),
        (["plan", "--steps", "99", "--targets", "soon"], "must be 'none', 'next' or a positive"),
        (
            ["plan", "--steps", "100", "--batch-size", "32", "--sequence-length", "100"],
            "plan: error: `batch_size * sequence_length` must not exceed the usable steps of "
            "the series (99)",
        ),
        (["demo", "--size", "huge"], "argument --size: invalid choice: 'huge'"),
        (["demo", "--epochs", "0"], "argument --epochs: must be a positive integer, got '0'"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_options_get_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m seqbatch")
    assert message in err


def test_demo_option_that_the_text_cannot_fill() -> None:
    done = run_cli("demo", "--size", "tiny", "--batch-size", "5000")
    assert done.returncode == 2
    assert "demo: error: `batch_size * sequence_length` must not exceed" in done.stderr


@pytest.mark.keras  # the gap must show on every Keras backend
def test_tiny_demo_in_a_log_shows_the_gap_one_line_per_epoch() -> None:
    done = run_cli("demo", "--size", "tiny")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # Nothing before the report: no start-up log of TensorFlow (which Keras imports on every
    # backend), no error line about CUDA on a machine without a GPU.
    assert done.stderr == ""
    assert out.startswith("Text: 80,000 training and 20,000 validation characters"), out[:2000]
    assert not [line for line in out.splitlines() if NATIVE_LOG_LINE.search(line)]
    # A pipe, as in CI or `> log`: Keras's progress bar would write \r, \b and colours.
    assert not {"\r", "\b", "\x1b"} & set(out)
    epochs = [line for line in out.splitlines() if line.startswith("  epoch")]
    assert len(epochs) == 2, out
    for line in epochs:
        assert re.fullmatch(r"  epoch 1/1: loss \d\.\d{4}, val_loss \d\.\d{4} \(\d+\.\d s\)", line)
    aligned = float(re.search(r"aligned streams  (\d\.\d{3})", out)[1])  # type: ignore[index]
    shuffled = float(re.search(r"shuffled rows    (\d\.\d{3})", out)[1])  # type: ignore[index]
    # Seeds 0 and 1 give gaps of 0.12 and 0.10 (TensorFlow), 0.10 (torch); seeds move either
    # loss by about 0.02.
    assert shuffled - aligned > 0.05, out
    assert "x (32, 4) int32" in out and "LSTM of 64 units" in out


def test_demo_import_quiets_tensorflow_unless_its_log_level_is_set() -> None:
    code = "import os, seqbatch.demo; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "3\n", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "1"
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (chosen.returncode, chosen.stdout) == (0, "1\n"), chosen.stderr


def test_silenced_native_output_keeps_python_messages() -> None:
    code = textwrap.dedent(
        """
        import os, sys, warnings
        from seqbatch._quiet_start import native_stderr_discarded
        with native_stderr_discarded():
            os.write(2, b"from C\\n")
            warnings.warn("from Python")
        os.write(2, b"after\\n")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0
    lines = done.stderr.splitlines()
    assert "from C" not in done.stderr
    assert lines[0].endswith("UserWarning: from Python") and lines[-1] == "after", done.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_on_a_terminal_shows_the_keras_progress_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from seqbatch import demo

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    result = demo.run("tiny", batch_size=64, sequence_length=16, units=8)
    report = terminal.getvalue()
    assert "\r" in report or "\b" in report  # the bar redraws itself
    assert "  epoch 1/1:" not in report
    assert f"aligned streams  {result.aligned:.3f}" in report
    assert f"shuffled rows    {result.shuffled:.3f}" in report
    assert "Training batches:\n  data: 1 series, x (64, 16) int32, y (64, 16) int32" in report


@pytest.mark.parametrize("verbose", ["yes", 3, True])
def test_demo_refuses_an_unknown_verbose(verbose: object) -> None:
    from seqbatch import demo

    data = demo.prepare("tiny")
    with pytest.raises(ValueError) as error:
        demo.train_and_compare(data, verbose=verbose)  # type: ignore[arg-type]
    assert str(error.value) == (
        f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
    )


def test_version_comes_from_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    import seqbatch

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"seqbatch {seqbatch.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+)?", seqbatch.__version__)


def test_demo_corpus_keeps_validation_files_apart() -> None:
    from seqbatch import demo

    train, validation, files = demo.stdlib_corpus(50_000, 10_000)
    assert (len(train), len(validation)) == (50_000, 10_000)
    assert files == sorted(files) and not any(f.startswith("_") for f in files)
    held_out = files[4::5]
    root = Path(os.__file__).parent
    assert validation.startswith((root / held_out[0]).read_text(encoding="utf-8")[:1000])
    assert (root / held_out[0]).read_text(encoding="utf-8")[:1000] not in train


def test_demo_without_keras_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['keras'] = None  # as if Keras were not installed\n"
        "from seqbatch.__main__ import main\n"
        "main(['demo'])\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "the demo needs Keras 3 and TensorFlow" in out.stderr
    assert 'pip install "seqbatch[tf]"' in out.stderr


def test_demo_on_jax_without_jax_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['jax'] = None  # as if JAX were not installed\n"
        "from seqbatch.__main__ import main\n"
        "main(['demo'])\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "the demo needs Keras 3 and, with KERAS_BACKEND=jax, JAX" in out.stderr
    assert 'pip install keras "seqbatch[jax]"' in out.stderr
