"""The wheel and the sdist as users get them: built, checked, and the wheel run on its own.

CI installs the checkout in editable mode, where a file missing from the wheel would never
show. These tests build both distributions with the installed ``build`` and ``hatchling``
(no build isolation, so no network), read their metadata and file lists, install the wheel
alone into a new virtual environment outside the checkout, and run ``python -m seqbatch``
from there.
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

import seqbatch

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = {"tf", "jax", "torch", "tables", "test", "docs", "dev"}


def run(args: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel, built as ``python -m build`` does: the wheel from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    # build and hatchling come with the test extra; without isolation nothing is downloaded.
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        timeout=300,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def wheel_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def sdist_files(sdist: Path) -> dict[str, bytes]:
    with tarfile.open(sdist) as archive:
        top = f"seqbatch-{seqbatch.__version__}/"
        files = {}
        for member in archive.getmembers():
            assert member.name.startswith(top), member.name
            if member.isfile():
                files[member.name.removeprefix(top)] = archive.extractfile(member).read()  # type: ignore[union-attr]
        return files


def checkout_files(*folders: str, suffixes: tuple[str, ...]) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for folder in folders
        for path in (ROOT / folder).rglob("*")
        if path.suffix in suffixes and "__pycache__" not in path.parts
    }


def check_metadata(text: str) -> None:
    metadata: Message = email.parser.Parser().parsestr(text)
    assert metadata["Name"] == "seqbatch"
    assert metadata["Version"] == seqbatch.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Requires-Python"] == ">=3.10"
    assert set(metadata.get_all("Provides-Extra")) == EXTRAS
    # numpy is the one dependency of `import seqbatch`; frameworks come with the extras.
    assert [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r] == ["numpy>=1.24"]
    assert "Exact batches for stateful recurrent models" in metadata.get_payload()  # README


def test_the_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert re.search(r"^version\s*=", pyproject, re.MULTILINE) is None
    assert re.findall(
        r'^__version__ = "(.+)"', (ROOT / "seqbatch/__init__.py").read_text(), re.MULTILINE
    ) == [seqbatch.__version__]


def test_the_wheel_holds_the_package_and_nothing_else(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    assert wheel.name == f"seqbatch-{seqbatch.__version__}-py3-none-any.whl"
    files = wheel_files(wheel)
    info = f"seqbatch-{seqbatch.__version__}.dist-info"
    package = checkout_files("seqbatch", suffixes=(".py", ".typed"))
    assert "seqbatch/py.typed" in package and "seqbatch/keras/__init__.py" in package
    expected = package | {
        f"{info}/{name}" for name in ("METADATA", "WHEEL", "RECORD", "licenses/LICENSE")
    }
    assert sorted(set(files) ^ expected) == []  # missing from the wheel, or extra in it
    assert files[f"{info}/licenses/LICENSE"] == (ROOT / "LICENSE").read_bytes()
    assert b"Apache License" in files[f"{info}/licenses/LICENSE"]
    check_metadata(files[f"{info}/METADATA"].decode())


def test_the_sdist_holds_what_the_tests_and_the_build_need(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    assert sdist.name == f"seqbatch-{seqbatch.__version__}.tar.gz"
    files = sdist_files(sdist)
    wanted = checkout_files("seqbatch", "tests", "benchmarks", suffixes=(".py", ".typed"))
    wanted |= checkout_files("docs", suffixes=(".md", ".svg", ".py"))
    wanted |= {"LICENSE", "README.md", "CHANGELOG.md", "CONTRIBUTING.md", "pyproject.toml"}
    wanted |= {"mkdocs.yml", ".ci/run", "PKG-INFO"}
    assert wanted <= set(files), sorted(wanted - set(files))
    assert not [name for name in files if name.startswith(("site/", "dist/", "build/"))]
    assert not [name for name in files if "__pycache__" in name]
    assert files["LICENSE"] == (ROOT / "LICENSE").read_bytes()
    check_metadata(files["PKG-INFO"].decode())


def test_the_wheel_alone_runs_the_command_line(dists: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dists
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # pip's --python (pip 22.3 and later) installs into another environment.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        timeout=120,
    )
    # numpy, Keras and the rest come from this test's environment, listed after the new
    # environment's own site-packages by a .pth file. The folders it names are not site
    # folders, so their .pth files (the editable install of the checkout) are not read.
    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            timeout=60,
        ).stdout.strip()
    )
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"

    def seqbatch_cli(*args: str, timeout: float = 60) -> str:
        # Run from an empty folder: neither the checkout nor the working directory is on the path.
        return run(
            [str(python), "-m", "seqbatch", *args], timeout=timeout, cwd=tmp_path, env=env
        ).stdout

    where = run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, seqbatch; print(seqbatch.__file__); print(m.version('seqbatch'))",
        ],
        timeout=60,
        cwd=tmp_path,
        env=env,
    ).stdout.splitlines()
    assert Path(where[0]).is_relative_to(venv), where
    assert where[1] == seqbatch.__version__
    assert seqbatch_cli("--version") == f"seqbatch {seqbatch.__version__}\n"
    assert seqbatch_cli(
        "plan", "--steps", "1000", "--batch-size", "4", "--sequence-length", "10"
    ).splitlines() == [
        "data: 1 series, x (4, 10) float32, y (4, 10) float32",
        "layout: one series cut into contiguous streams (epoch 0)",
        "batches: 24 of 4 streams x 10 steps; resets: 4",
        "steps: 1000 in the data = 960 used + 1 without target + 0 before the offset + 39 dropped (remainder='drop')",
        "padding: 0 of 960 batch slots (0.0%)",
    ]
    report = seqbatch_cli("demo", "--size", "tiny", timeout=300)
    assert re.search(r"aligned streams  \d\.\d{3}\n  shuffled rows    \d\.\d{3}", report), report
    assert "Trained and validated in" in report
