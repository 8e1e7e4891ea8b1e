"""JAX without Keras: seqbatch batches as a grain-compatible source, and a carried state.

* :class:`StreamSource` serves the batches of several epochs of a
  :class:`~seqbatch.StreamBatcher` as records of a random-access source (grain's
  ``RandomAccessDataSource`` protocol; grain itself is optional), each epoch with its own
  layout, and :meth:`seqbatch.jax.StreamSource.in_order` refuses any pipeline that reorders them.
* :func:`reset_rows` zeroes the carried state of exactly the streams that start a new series,
  inside a jitted step; :func:`hold` keeps a row's state through padded steps, so that the
  state after a window is its state after its last real step; :func:`weighted_mean`
  averages a loss over real steps only;
* :class:`StreamState` holds the carried state of every stream between jitted steps, hands
  each record its rows' state with resets applied, and saves it per global stream;
* :func:`unroll` scans a cell over a batch of any layout, resetting each row at the steps
  where its series start (packed batches start them inside the window).

Importing this module imports JAX; ``import seqbatch`` does not.
"""

from __future__ import annotations

from seqbatch.jax.scan import unroll
from seqbatch.jax.source import StreamSource
from seqbatch.jax.state import hold, reset_rows, weighted_mean
from seqbatch.jax.stream_state import StreamState

__all__ = ["StreamSource", "StreamState", "hold", "reset_rows", "unroll", "weighted_mean"]
