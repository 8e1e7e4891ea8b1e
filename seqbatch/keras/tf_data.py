"""The seqbatch tf.data datasets that a Keras call reads, found without importing TensorFlow.

A dataset of :func:`seqbatch.tf.to_dataset` exists only once ``seqbatch.tf`` is imported, so
when it is not, nothing is looked for: importing TensorFlow here could crash a process that
then imports ``torch.optim``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqbatch._tf_found import Fed


def fed_by(x: Any, name: str) -> Fed | None:
    """What ``x``, the argument ``name`` of a Keras call, reads from seqbatch datasets.

    Returns None when ``x`` reads none; raises ``ValueError`` when it reads one through a
    transformation that would misalign the streams (:func:`seqbatch._tf_found.fed_by`).
    """
    if "seqbatch.tf" not in sys.modules:
        return None
    from seqbatch._tf_found import fed_by as found

    return found(x, name)
