"""torch and TensorFlow tensors in host memory are series, read in place; device tensors are refused.

The tests create tensors and read them, nothing more: no optimizer, so torch and TensorFlow
can share the pytest process (importing TensorFlow and then ``torch.optim`` is what crashes).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

import seqbatch
from tests.encoded import encoded_series
from tests.same import assert_same_batches

KWARGS: dict[str, Any] = {"batch_size": 3, "sequence_length": 4, "remainder": "pad"}


def series_list() -> list[np.ndarray]:
    return [encoded_series(s, 9 + 5 * s, (2,), "float32") for s in range(4)]


def test_torch_cpu_tensors_are_read_in_place() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    arrays = series_list()
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    # A list of separate tensors gives the batches of the arrays (gathered once into one
    # array, as a list of separate arrays is, so that every batch is one gather).
    assert_same_batches(
        seqbatch.StreamBatcher(tensors, **KWARGS), seqbatch.StreamBatcher(arrays, **KWARGS)
    )
    # One tensor of every series end to end is read in place, as a numpy array is.
    flat = torch.from_numpy(np.concatenate(arrays))
    lengths = [len(a) for a in arrays]
    batches = seqbatch.StreamBatcher.from_offsets(flat, lengths=lengths, **KWARGS)
    assert_same_batches(batches, seqbatch.StreamBatcher(arrays, **KWARGS))
    assert batches.dtype == np.float32
    assert np.shares_memory(batches.sources.values, flat.numpy())  # type: ignore[attr-defined]
    # In place: a change to the tensor is a change to the batches.
    flat[0, :] = -1
    first = next(b for b in batches if b.series.tolist().count(0))
    row = first.series.tolist().index(0)
    assert first.x[row, 0].tolist() == [-1.0, -1.0]


def test_torch_targets_parameters_and_one_long_tensor() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    data = encoded_series(0, 200, (), "int64")
    one = seqbatch.StreamBatcher(torch.from_numpy(data), batch_size=4, sequence_length=5)
    assert_same_batches(one, seqbatch.StreamBatcher(data, batch_size=4, sequence_length=5))
    arrays = series_list()
    # A tensor that requires grad (a Parameter) is read through detach(), still in place.
    weights = torch.nn.Parameter(torch.from_numpy(-np.concatenate(arrays)))
    lengths = [len(a) for a in arrays]
    with_targets = seqbatch.StreamBatcher.from_offsets(
        np.concatenate(arrays), targets=weights, lengths=lengths, **KWARGS
    )
    assert_same_batches(
        with_targets, seqbatch.StreamBatcher(arrays, [-a for a in arrays], **KWARGS)
    )
    targets = with_targets.target_sources.values  # type: ignore[attr-defined]
    assert np.shares_memory(targets, weights.detach().numpy())


def test_a_torch_tensor_off_the_cpu_is_refused_with_the_fix() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    # "meta" is a device other than the CPU that every torch has; a CUDA tensor is refused
    # the same way (below, where a GPU is present).
    tensor = torch.empty((50, 2), device="meta")
    with pytest.raises(TypeError) as err:
        seqbatch.StreamBatcher([np.zeros((50, 2), np.float32), tensor], batch_size=2)
    assert str(err.value) == (
        "`data[1]` must be a tensor in host memory, which the batcher reads in place. "
        "Received: data[1], a torch Tensor on meta (pass data[1].cpu(), which copies it to "
        "host memory once)"
    )


def test_a_cuda_tensor_is_refused_with_the_fix() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device; the meta-device test covers the refusal without one")
    with pytest.raises(TypeError, match=re.escape("on cuda:0 (pass data.cpu(), which copies")):
        seqbatch.StreamBatcher(torch.zeros((50, 2), device="cuda"), batch_size=2)


def test_a_torch_tensor_numpy_cannot_read_is_refused_naming_its_dtype() -> None:
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    with pytest.raises(TypeError) as err:
        seqbatch.StreamBatcher(torch.zeros((50, 2), dtype=torch.bfloat16), batch_size=2)
    assert str(err.value).startswith(
        "`data` must be a tensor that numpy can read. Received: data, a torch Tensor with "
        "dtype torch.bfloat16 ("
    )


def test_tensorflow_tensors_are_read_in_place() -> None:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is in the test extra")
    arrays = series_list()
    with tf.device("/CPU:0"):
        tensors = [tf.constant(a) for a in arrays]
        targets = [tf.Variable(-a) for a in arrays]  # a variable is read once, a copy
    batches = seqbatch.StreamBatcher(tensors, targets, **KWARGS)
    assert_same_batches(batches, seqbatch.StreamBatcher(arrays, [-a for a in arrays], **KWARGS))
    # One EagerTensor is read from its own memory, not a copy of it.
    with tf.device("/CPU:0"):
        flat = tf.constant(np.concatenate(arrays))
    lengths = [len(a) for a in arrays]
    one = seqbatch.StreamBatcher.from_offsets(flat, lengths=lengths, **KWARGS)
    assert_same_batches(one, seqbatch.StreamBatcher(arrays, **KWARGS))
    assert np.shares_memory(one.sources.values, np.asarray(flat))  # type: ignore[attr-defined]


def test_tensorflow_bfloat16_is_kept() -> None:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is in the test extra")
    data = np.arange(60.0).reshape(30, 2)
    with tf.device("/CPU:0"):
        tensor = tf.constant(data, dtype=tf.bfloat16)
    batches = seqbatch.StreamBatcher(tensor, batch_size=2, sequence_length=3)
    assert batches.dtype.name == "bfloat16"
    # Small integers are exact in bfloat16: the same steps as the float64 data.
    exact = seqbatch.StreamBatcher(data, batch_size=2, sequence_length=3)
    assert len(batches) == len(exact)
    for a, b in zip(batches, exact, strict=True):
        assert a.x.astype(np.float64).tolist() == b.x.tolist()


def test_a_symbolic_tensorflow_tensor_is_refused() -> None:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is in the test extra")
    messages = []

    @tf.function
    def build(x: Any) -> Any:
        try:
            seqbatch.StreamBatcher(x, batch_size=2, sequence_length=3)
        except TypeError as err:
            messages.append(str(err))
        return x

    build(tf.zeros((30, 2)))
    assert len(messages) == 1
    assert messages[0].startswith(
        "`data` must be a tensor that numpy can read. Received: data, a TensorFlow "
        "SymbolicTensor with dtype <dtype: 'float32'> (Cannot convert a symbolic tf.Tensor"
    )


class GpuTensor:
    """What seqbatch sees of a TensorFlow tensor on a GPU: its class's module and device.

    A stand-in where no GPU is present (TensorFlow has no device other than the CPU without
    one); the real tensor is tested below where there is a GPU.
    """

    __module__ = "tensorflow.python.framework.ops"
    shape = (50, 2)
    dtype = np.dtype(np.float32)
    device = "/job:localhost/replica:0/task:0/device:GPU:0"

    def __getitem__(self, key: slice) -> np.ndarray:
        raise AssertionError("a tensor on a GPU was read")


def test_a_tensorflow_tensor_on_a_gpu_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError) as err:
        seqbatch.StreamBatcher(GpuTensor(), batch_size=2)
    assert str(err.value) == (
        "`data` must be a tensor in host memory, which the batcher reads in place. Received: "
        "data, a TensorFlow GpuTensor on /job:localhost/replica:0/task:0/device:GPU:0 (pass "
        "data.numpy(), which copies it to host memory once)"
    )


def test_a_real_tensorflow_gpu_tensor_is_refused() -> None:
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is in the test extra")
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("needs a GPU; the stand-in above covers the refusal without one")
    with tf.device("/GPU:0"):
        tensor = tf.zeros((50, 2))
    with pytest.raises(TypeError, match=re.escape("device:GPU:0 (pass data.numpy(), which")):
        seqbatch.StreamBatcher(tensor, batch_size=2)
