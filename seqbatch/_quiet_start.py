"""A quiet start for TensorFlow in the demo: the demo's lines, not TensorFlow's start-up log.

Imported by :mod:`seqbatch.demo` alone: a library must not change how its users' frameworks
log, but a new user's first command should show the demo, not lines of information from
TensorFlow's C++ libraries and, on a machine without a GPU, an error line about CUDA.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_discarded() -> Iterator[None]:
    """Discard what native code writes to file descriptor 2 inside the block.

    Python's own messages (warnings, tracebacks) still reach the original stderr: if
    ``sys.stderr`` writes to descriptor 2, it is pointed at a copy of it for the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        python_writes_fd_2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO: no descriptor
        python_writes_fd_2 = False
    if python_writes_fd_2:
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if python_writes_fd_2:
            sys.stderr.close()
            sys.stderr = python_stderr


def tensorflow_start_quiet() -> contextlib.AbstractContextManager[None]:
    """A block to import Keras in, which silences TensorFlow's logs unless the user chose.

    If ``TF_CPP_MIN_LOG_LEVEL`` is unset and TensorFlow not yet imported, it is set to 3 (no
    log lines from TensorFlow's C++ code) and the block discards what the libraries write
    to stderr as they load, which they do before reading that variable ("All log messages
    before absl::InitializeLog() ..."). Otherwise the block changes nothing: whoever sets
    ``TF_CPP_MIN_LOG_LEVEL`` keeps TensorFlow's logging as they set it.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return contextlib.nullcontext()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return native_stderr_discarded()
