"""One memory measurement, run in a fresh process: ``python -m benchmarks.memory_probe``.

Usage: ``python -m benchmarks.memory_probe MODE PATH BATCH_SIZE SEQUENCE_LENGTH [FEATURES]``,
where MODE is one of :data:`MODES`. It imports what the mode needs, takes the anonymous memory
(``RssAnon``) as the baseline, streams one epoch of the ``.npy`` file at PATH opened as a
memmap (its steps split into FEATURES features each, when given: the same bytes as a longer
series of fewer features), and prints one JSON line: the baseline, the peak ``RssAnon``
above it and the peak RSS (``VmHWM``, which also counts the pages of the file that the
process has mapped).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MODES = ("seqbatch numpy", "seqbatch tf.data", "timeseries_dataset_from_array")
_SAMPLE_SECONDS = 0.002


def status_mb(field: str) -> float:
    """A field of ``/proc/self/status`` (``RssAnon``, ``VmHWM``, ...) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise KeyError(field)


class PeakSampler(threading.Thread):
    """Samples ``RssAnon`` every 2 ms in the background and keeps the highest value."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = status_mb("RssAnon")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(_SAMPLE_SECONDS):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def stop(self) -> float:
        """Stop sampling; return the peak, including one last sample."""
        self.done.set()
        self.join()
        return max(self.peak, status_mb("RssAnon"))


def open_series(path: str, features: int | None) -> Any:
    """The file as a memmap, of ``features`` features a step when given."""
    import numpy as np

    data = np.load(path, mmap_mode="r")
    return data if features is None else data.reshape(-1, features)


def numpy_epoch(path: str, batch_size: int, width: int, features: int | None) -> Callable[[], int]:
    """Read every batch of the numpy path and sum it, so that every window is read."""
    import numpy as np

    import seqbatch

    def run() -> int:
        batches = seqbatch.StreamBatcher(
            open_series(path, features),
            batch_size=batch_size,
            sequence_length=width,
            return_sequences=False,
        )
        for b in batches:
            np.add.reduce(b.x, axis=None)
            np.add.reduce(b.y, axis=None)
        return len(batches)

    return run


def tf_epoch(
    path: str, batch_size: int, width: int, features: int | None, seqbatch_path: bool
) -> Callable[[], int]:
    """Read one epoch of a tf.data pipeline over the memmap inside a ``tf.function``."""
    import keras
    import tensorflow as tf

    import seqbatch
    from benchmarks.tf_path import consume

    tf.constant(1.0) + 1.0  # start the runtime before the baseline, for every tf.data mode

    def run() -> int:
        data = open_series(path, features)
        if seqbatch_path:
            batches = seqbatch.StreamBatcher(
                data, batch_size=batch_size, sequence_length=width, return_sequences=False
            )
            dataset = batches.to_tf_dataset(sample_weight=False)
            count = len(batches)
        else:
            count = (len(data) - 1) // (batch_size * width)
            steps = count * batch_size * width
            dataset = keras.utils.timeseries_dataset_from_array(
                data[:steps],
                data[width : steps + 1],
                sequence_length=width,
                sequence_stride=width,
                batch_size=batch_size,
            )
        consume(dataset, count)()
        return count

    return run


def measure(
    mode: str, path: str, batch_size: int, width: int, features: int | None = None
) -> dict[str, Any]:
    """Stream one epoch in ``mode`` and return the memory figures in MB."""
    if mode == "seqbatch numpy":
        run = numpy_epoch(path, batch_size, width, features)
    else:
        run = tf_epoch(path, batch_size, width, features, mode == "seqbatch tf.data")
    baseline = status_mb("RssAnon")
    sampler = PeakSampler()
    sampler.start()
    begin = time.perf_counter()
    batches = run()
    seconds = time.perf_counter() - begin
    peak = sampler.stop()
    return {
        "mode": mode,
        "batches": batches,
        "seconds": seconds,
        "baseline_anon_mb": baseline,
        "added_anon_mb": peak - baseline,
        "peak_rss_mb": status_mb("VmHWM"),
    }


def main(argv: list[str]) -> None:
    mode, path, batch_size, width, *features = argv
    if mode not in MODES:
        raise SystemExit(f"MODE must be one of {MODES}. Received: {mode!r}")
    split = int(features[0]) if features else None
    print(json.dumps(measure(mode, path, int(batch_size), int(width), split)))


if __name__ == "__main__":
    main(sys.argv[1:])
