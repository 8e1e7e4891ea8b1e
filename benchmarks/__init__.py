"""Benchmarks of seqbatch against its peers, side by side on the same data and windows.

Run ``python -m benchmarks`` (the full size, about 6 minutes on 2 cores) or
``python -m benchmarks --quick`` (a smoke test of every measurement, well under a minute).
Each section is one module: :mod:`benchmarks.numpy_path`, :mod:`benchmarks.keras_path`,
:mod:`benchmarks.tf_path`, :mod:`benchmarks.memory`, :mod:`benchmarks.scaling` and
:mod:`benchmarks.grid`. The targets they report are listed in ``docs/benchmarks.md``, "Targets".
"""
