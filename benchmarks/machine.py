"""The machine a run measured: what a reader needs to compare its figures with theirs."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version


def cpu_model() -> str:
    """The CPU model that ``lscpu`` reports, or the platform's processor name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    """Total memory in GiB, from ``/proc/meminfo``."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    raise KeyError("MemTotal")


def load() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def describe() -> list[str]:
    """One line each: CPU, cores, memory, OS, versions and BLAS settings."""
    versions = []
    for package in ("numpy", "tensorflow", "keras", "seqbatch"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    blas = ", ".join(
        f"{name}={os.environ[name]}"
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        if name in os.environ
    )
    return [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"memory: {memory_gib():.1f} GiB",
        f"system: {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"packages: {', '.join(versions)}",
        f"BLAS settings: {blas or 'none'}",
    ]
