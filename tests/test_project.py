"""The README's commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = readme_commands()[:2]
    assert demo.endswith("python -m seqbatch demo")
    assert "pytest" in tests and "mkdocs build --strict" in tests


def test_the_test_command_runs_the_keras_tests_on_every_backend() -> None:
    tests = readme_commands()[1]
    runs = [part.strip() for part in tests.split("&&") if "pytest" in part]
    assert runs == [
        "HYPOTHESIS_PROFILE=ci KERAS_BACKEND=tensorflow python -m pytest -q",
        "HYPOTHESIS_PROFILE=ci KERAS_BACKEND=jax python -m pytest -q -m keras",
        "HYPOTHESIS_PROFILE=ci KERAS_BACKEND=torch python -m pytest -q -m keras",
    ]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    tests = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [tests]
