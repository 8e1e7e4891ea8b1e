"""The project keeps its own promises: the README's commands and CI stay in step, both lists
of pages lead to every guide, and the repository cites only files it holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

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


def nav_guides() -> list[str]:
    """The guides in mkdocs.yml's nav, as paths under docs/ (``guides/keras.md``, ...)."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n", 1)[1]
    nav = nav.split("\n\n", 1)[0]
    return re.findall(r"^ +- [^:]+: (guides/[\w-]+\.md)$", nav, flags=re.MULTILINE)


def section(path: Path, heading: str) -> str:
    """The text of a page's section, from its ``## heading`` to the next ``## ``."""
    text = path.read_text(encoding="utf-8")
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_nav_lists_the_guides() -> None:
    guides = nav_guides()
    assert len(guides) == len(list((ROOT / "docs" / "guides").glob("*.md"))) >= 12
    assert "guides/resume.md" in guides and "guides/many-processes.md" in guides


@pytest.mark.parametrize(
    ("page", "heading", "prefix"),
    [("README.md", "Documentation", "docs/"), ("docs/index.md", "Where next", "")],
)
def test_both_lists_of_pages_link_every_guide(page: str, heading: str, prefix: str) -> None:
    # Markdown links may break across lines: only the target, in parentheses, must be whole.
    links = set(re.findall(r"\]\(([^)#]+)", section(ROOT / page, heading)))
    missing = [guide for guide in nav_guides() if prefix + guide not in links]
    assert missing == [], f"{page}, section {heading!r}, links no guide {missing}"


#: A design file outside the repository, spelled in two parts so that this file does not name it.
ABSENT = "DESIGN" + ".md"


def test_no_tracked_file_cites_a_design_file_the_repository_lacks() -> None:
    # A reader cannot open it: the invariant's home is docs/concepts.md and the performance
    # targets are on docs/benchmarks.md ("Targets"). CHANGELOG.md may name it in its history.
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    citing = [
        name
        for name in tracked
        if name
        and name != "CHANGELOG.md"
        and (ROOT / name).is_file()
        and ABSENT in (ROOT / name).read_text(encoding="utf-8", errors="replace")
    ]
    assert not (ROOT / ABSENT).exists()
    assert citing == []


def test_the_tests_mirror_the_package_and_no_test_file_imports_another() -> None:
    tests = ROOT / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    # Every adapter package has its folder of tests.
    adapters = {p.name for p in (ROOT / "seqbatch").iterdir() if (p / "__init__.py").exists()}
    assert adapters <= folders, adapters - folders
    importing = re.compile(r"^\s*(from|import)\s+tests\.(\w+\.)*test_\w+", re.M)
    offenders = [
        str(f.relative_to(ROOT)) for f in tests.rglob("*.py") if importing.search(f.read_text())
    ]
    assert offenders == [], f"import from a helper module instead: {offenders}"
