"""The documentation cannot drift from the code: every example on every page runs here.

Each ```python block of README.md and docs/**/*.md runs; the blocks of one page run in order in
one namespace, in a fresh Python process and an empty working folder: a page is one session, as
a reader would run it, and may configure TensorFlow's devices before it starts. A block whose first
line starts with ``>>>`` is a doctest: its printed output must match. In a ```console block,
each ``$ python -m seqbatch ...`` line runs, and its output must be the lines under it. A block
right after a
``<!-- skip: reason -->`` line is not run; it is for what truly cannot run in CI, and says why.
Docstring examples run through pytest's ``--doctest-modules`` (see pyproject.toml).
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests import background
from tests.doc_blocks import blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

README_COMMANDS = [
    'python -m pip install ".[tf]" && python -m seqbatch demo',
    'python -m pip install -e ".[test,docs]" && python -m ruff check . && '
    "python -m ruff format --check . && python -m mypy && HYPOTHESIS_PROFILE=ci "
    "KERAS_BACKEND=tensorflow python -m pytest -q && HYPOTHESIS_PROFILE=ci KERAS_BACKEND=jax "
    "python -m pytest -q -m keras && HYPOTHESIS_PROFILE=ci KERAS_BACKEND=torch python -m "
    "pytest -q -m keras && python -m mkdocs build --strict -q",
]


def run_page(path: Path, name: str) -> None:
    """Run the python blocks of page ``path`` (called ``name`` in errors) in one namespace."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for block in blocks(path.read_text(encoding="utf-8")):
        if block.lang not in ("python", "console") or block.skip is not None:
            continue
        where = f"{name}:{block.line}"
        if block.lang == "console":
            run_console(block.code, where)
        elif block.code.lstrip().startswith(">>>"):
            test = doctest.DocTestParser().get_doctest(
                block.code, namespace, where, str(path), block.line - 1
            )
            runner = doctest.DocTestRunner(optionflags=flags)
            runner.run(test, clear_globs=False)
            namespace.update(test.globs)  # DocTest ran on a copy of the namespace
            if runner.failures:
                pytest.fail(f"doctest block at {where} failed (output above)", pytrace=False)
        else:
            # Pad with blank lines so that a traceback names the line of the page.
            code = "\n" * (block.line - 1) + block.code
            exec(compile(code, str(path), "exec"), namespace)


def run_console(text: str, where: str) -> None:
    """Run each ``$ python ...`` line of a console block; its output must follow it."""
    for chunk in text.split("$ ")[1:]:
        command, *expected = chunk.rstrip("\n").split("\n")
        argv = shlex.split(command)
        assert argv[0] == "python", f"{where}: console examples run `python` only: {command}"
        done = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True)
        got = [line.rstrip() for line in (done.stdout + done.stderr).rstrip("\n").split("\n")]
        if done.returncode != 0 or got != [line.rstrip() for line in expected]:
            pytest.fail(
                f"{where}: `{command}` exited {done.returncode} and printed\n"
                + "\n".join(got)
                + "\ninstead of\n"
                + "\n".join(expected),
                pytrace=False,
            )


def backend_dependent(path: Path) -> bool:
    """Whether a page trains Keras models that run on every Keras backend (not tf.distribute)."""
    text = path.read_text(encoding="utf-8")
    return "import keras" in text and "MirroredStrategy(" not in text


# Pages that train Keras models also run with `pytest -m keras` on JAX and torch.
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=[pytest.mark.keras] if backend_dependent(p) else []) for p in PAGES],
    ids=[str(p.relative_to(ROOT)) for p in PAGES],
)
def test_page_examples_run(path: Path, request: pytest.FixtureRequest) -> None:
    """The page's blocks in a fresh process (``run_page``), started in the background as the
    session began (tests/background.py)."""
    name = str(path.relative_to(ROOT))
    done, _ = request.config.stash[background.STASH].result(name)
    if done.returncode != 0:
        pytest.fail(f"examples of {name} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_are_labelled(path: Path) -> None:
    # A block tagged `py` or `pycon`, or not tagged, would silently escape the runner.
    for block in blocks(path.read_text(encoding="utf-8")):
        where = f"{path.relative_to(ROOT)}:{block.line}"
        assert block.lang in {"python", "bash", "console", "text", "yaml", "toml"}, (
            f"code block at {where} has language {block.lang!r}: tag Python `python` so it "
            "runs, or use bash/console/text/yaml/toml"
        )
        if block.skip is not None:
            assert block.skip, f"the skip marker before {where} must give a reason"
            assert block.lang == "python", (
                f"the skip marker before {where} is on a non-Python block"
            )


def test_skipped_examples_are_few() -> None:
    skipped = [
        f"{p.relative_to(ROOT)}:{b.line}"
        for p in PAGES
        for b in blocks(p.read_text(encoding="utf-8"))
        if b.skip is not None
    ]
    assert len(skipped) <= 3, f"too many examples are not run: {skipped}"


def test_runner_runs_and_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    lines = [
        "```python",
        "x = 1",
        "```",
        "<!-- skip: needs a cluster -->",
        "```python",
        "x = 2",
        "```",
        "```python",
        ">>> y = x + 1",
        ">>> y",
        "2",
        "```",
        "```python",
        "assert y == x + 1",
        "assert x == 2, 'the skipped block ran'",
        "```",
    ]
    page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # The skipped block did not run, names set by a doctest block carry over, and a failure
    # names the line of the page.
    with pytest.raises(AssertionError, match="the skipped block ran") as err:
        run_page(page, "page.md")
    assert err.traceback[-1].lineno + 1 == lines.index("assert x == 2, 'the skipped block ran'") + 1
    page.write_text("```python\n>>> 1 + 1\n3\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:2"):
        run_page(page, "page.md")
    page.write_text("```console\n$ python -c 'print(1 + 1)'\n2\n```\n", encoding="utf-8")
    run_page(page, "page.md")
    page.write_text("```console\n$ python -c 'print(1 + 1)'\n3\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match=r"page\.md:2: `python -c"):
        run_page(page, "page.md")


def test_readme_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# seqbatch")
    first = blocks("\n".join(lines))[0]
    assert first.code.splitlines() == README_COMMANDS
    # Only the title, one sentence and a blank line or two come before the commands.
    # tests/test_project.py checks that .ci/run runs the second one.
    assert first.line <= 6


# What mkdocs-autorefs leaves of a cross-reference it could not resolve, `[name][]` or
# `[name][target]`, once code (where `a[0][1]` is Python) is taken out of the page.
UNRESOLVED = re.compile(r"\]\[[\w.:-]*\]")
CODE = re.compile(r"<pre\b.*?</pre>|<code\b.*?</code>", re.DOTALL)


def unresolved_references(html: str) -> list[str]:
    """The cross-references of a built page that were left as text."""
    return UNRESOLVED.findall(CODE.sub("", html))


def test_unresolved_references_are_found() -> None:
    page = (
        "<p>See [<code>seqbatch.source.Joined</code>][] and [Joined][seqbatch.source.Joined], "
        "not <code>x[0][1]</code>.</p><pre><code>b[k][i]</code></pre>"
    )
    assert unresolved_references(page) == ["][]", "][seqbatch.source.Joined]"]


def test_built_site_resolves_every_reference(tmp_path: Path) -> None:
    # `mkdocs build --strict -q` hides autorefs' warnings from strict mode; without -q they
    # fail the build. The built pages are scanned too, for references left as text.
    pytest.importorskip("mkdocs", reason="the docs extra builds the site")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "NO_MKDOCS_2_WARNING": "1",
        },
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    left = [
        f"{page.relative_to(site)}: {ref}"
        for page in pages
        for ref in unresolved_references(page.read_text(encoding="utf-8"))
    ]
    assert left == [], "cross-references left as text:\n" + "\n".join(left)


def test_figures_match_the_script() -> None:
    path = ROOT / "docs" / "figures" / "make_figures.py"
    spec = importlib.util.spec_from_file_location("make_figures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, svg in module.figures().items():
        committed = (path.parent / name).read_text(encoding="utf-8")
        assert committed == svg, (
            f"docs/figures/{name} is not what make_figures.py draws now: run "
            "`python docs/figures/make_figures.py` and commit the result"
        )


if __name__ == "__main__":
    run_page(Path(sys.argv[1]), sys.argv[2])
