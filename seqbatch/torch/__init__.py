"""PyTorch for carried-state training: a ``Dataset`` of seqbatch batches and the loop's helpers.

Truncated backprop through time with the state carried from one window to the next (LSTMs,
state-space models) needs these from its data and its loop:

* batches in which row ``i`` continues row ``i`` of the batch before, in order, through
  any ``DataLoader``: :class:`StreamDataset` with its :class:`StreamSampler`, one
  :class:`TensorBatch` per batch, each rank of ``torch.distributed`` with its own streams;
* the state of exactly the streams that start a new series set to zero before a window
  (:func:`reset_rows`), and the state cut from the graph after it (:func:`detach`);
* a loss that counts real steps only (:func:`weighted_mean`);
* the state of every stream kept between windows and saved per global stream
  (:class:`StreamState`), so that a checkpoint of some number of ranks resumes on another;
* the state of each stream after its last real step, never after padding: an RNN module run
  over the real steps only (:func:`run_rnn`, with :func:`real_lengths`), or a cell's state
  held at padded steps (:func:`hold`);
* resets inside a window, where packed batches start a series, without giving up the fused
  kernel: :func:`unroll` runs an RNN module over a batch of any layout, exactly.

Importing this module imports torch; ``import seqbatch`` does not.
"""

from __future__ import annotations

from seqbatch.torch.data import StreamDataset, StreamSampler, TensorBatch
from seqbatch.torch.padding import hold, real_lengths, run_rnn
from seqbatch.torch.runs import unroll
from seqbatch.torch.state import detach, reset_rows, weighted_mean
from seqbatch.torch.stream_state import StreamState

__all__ = [
    "StreamDataset",
    "StreamSampler",
    "StreamState",
    "TensorBatch",
    "detach",
    "hold",
    "real_lengths",
    "reset_rows",
    "run_rnn",
    "unroll",
    "weighted_mean",
]
