"""Data sources: the arrays behind a plan, read one window at a time.

A series is anything with ``shape``, ``dtype`` and slicing along its first axis: a numpy array,
an ``np.memmap``, a ``.npy`` path (opened as a memmap), an h5py or zarr dataset, a JAX array.
A torch or TensorFlow tensor in host memory is read as a numpy array over the same memory
(a ``tf.Variable`` is copied once); a tensor on a GPU is refused, with the call that copies
it to host memory. Python lists and other array-likes are converted with ``np.asarray``.
Nothing here reads a whole series.
A memory map pickles as the name of its file and where its elements lie in it
(:func:`portable`), never as a copy of its data.
"""

from __future__ import annotations

import mmap
import numbers
import os
import re
from collections.abc import Iterator, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from seqbatch.ragged import Ragged, lengths_of

if TYPE_CHECKING:
    pass

_NUMERIC_KINDS = "biufc"


def _numeric(dtype: np.dtype) -> bool:
    """Numbers: numpy's own kinds, and the types of ml_dtypes (bfloat16, float8, int4, ...)."""
    # ml_dtypes' types are numpy "void" kinds to numpy; they are known by their module,
    # which spares importing ml_dtypes (TensorFlow and JAX install it and train in bfloat16).
    return dtype.kind in _NUMERIC_KINDS or dtype.type.__module__.split(".")[0] == "ml_dtypes"


def _numpy_dtype(obj: Any, name: str) -> np.dtype:
    """The numpy dtype of ``obj``, or an error naming what it is instead."""
    given = obj.dtype
    try:
        if given is None:
            raise TypeError("dtype None")  # np.dtype(None) would silently mean float64
        return np.dtype(given)
    except TypeError as err:
        # A tensor of a framework (tf.Tensor, torch.Tensor) has a dtype of its own, and a
        # .numpy() method that gives the array; no framework is imported to tell.
        hint = f" (pass {name}.numpy())" if callable(getattr(obj, "numpy", None)) else ""
        raise TypeError(
            f"`{name}` must have a numpy dtype. Received: {name} of type "
            f"{type(obj).__name__} with dtype {given!r}{hint}"
        ) from err


# What a user may hold instead of series, and what to pass instead.
_NOT_SERIES = (
    (Mapping, "pass list({name}.values()), its values as series in the dict's order"),
    (Iterator, "it is read once, and batches are read by index: pass list({name})"),
    (Set, "it has no order: pass a list"),
)

# A tensor's framework, known by its class's module: no framework is imported to tell.
_FRAMEWORKS = {"torch": "torch", "tensorflow": "TensorFlow"}


def _framework(obj: Any) -> str | None:
    """``"torch"`` or ``"TensorFlow"`` for a tensor (or variable) of that framework, else None."""
    framework = _FRAMEWORKS.get(type(obj).__module__.split(".")[0])
    if framework is None or not (hasattr(obj, "shape") and hasattr(obj, "device")):
        return None  # not a tensor: a tf.data.Dataset, a torch Dataset, ...
    return framework


def _device(obj: Any) -> tuple[str, str]:
    """The kind of device a tensor is on (``"cpu"``, ``"cuda"``, ``"gpu"``...) and its name."""
    device = obj.device
    kind = getattr(device, "type", None)  # a torch.device
    if kind is None:
        # TensorFlow names it: "/job:localhost/replica:0/task:0/device:GPU:0"; "" in a graph.
        found = re.search(r"device:([A-Za-z_]+):", str(device))
        kind = found.group(1) if found else "cpu"
    return str(kind).lower(), str(device)


def _host_array(obj: Any, name: str, framework: str) -> np.ndarray:
    """A host tensor as a numpy array over its memory; a device tensor refused with the fix."""
    kind, device = _device(obj)
    kind_of = f"{framework} {type(obj).__name__}"
    if kind != "cpu":
        fix = f"{name}.cpu()" if framework == "torch" else f"{name}.numpy()"
        raise TypeError(
            f"`{name}` must be a tensor in host memory, which the batcher reads in place. "
            f"Received: {name}, a {kind_of} on {device} (pass {fix}, which copies it to host "
            "memory once)"
        )
    try:
        # torch's .numpy() and TensorFlow's __array__ view the tensor's memory, not a copy.
        return obj.detach().numpy() if framework == "torch" else np.asarray(obj)
    except (TypeError, RuntimeError, NotImplementedError) as err:
        raise TypeError(
            f"`{name}` must be a tensor that numpy can read. Received: {name}, a {kind_of} "
            f"with dtype {obj.dtype} ({err})"
        ) from err


def open_series(obj: Any, name: str) -> Any:
    """Return ``obj`` as a sliceable series, checking its dtype and rank; read nothing."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        try:
            obj = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"`{name}` must be a readable .npy file when given as a path. Received: "
                f"{name}={path!r} ({err})"
            ) from err
        if not isinstance(obj, np.ndarray):
            raise ValueError(
                f"`{name}` must be a .npy file holding one array, not an archive. "
                f"Received: {name}={path!r}"
            )
    elif isinstance(obj, np.ma.MaskedArray):
        raise TypeError(
            f"`{name}` must not be a masked array: its mask would be ignored and the masked "
            f"steps fed as data. Received: {name} of type {type(obj).__name__} (pass "
            f"{name}.filled(value), or the unmasked stretches as separate series with "
            "remainder='pad')"
        )
    elif (framework := _framework(obj)) is not None:
        obj = _host_array(obj, name, framework)
    elif not (hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__")):
        for kind, fix in _NOT_SERIES:
            if isinstance(obj, kind):
                raise TypeError(
                    f"`{name}` must be an array, or a list or tuple of arrays with one series "
                    f"each. Received: {name} of type {type(obj).__name__}, which is not "
                    f"supported ({fix.format(name=name)})"
                )
        obj = np.asarray(obj)
    dtype = _numpy_dtype(obj, name)
    if not _numeric(dtype):
        raise TypeError(
            f"`{name}` must hold numbers (bool, integer, float or complex; ml_dtypes' "
            f"bfloat16 and float8 too). Received: {name} with dtype {dtype}"
        )
    if len(obj.shape) == 0:
        raise ValueError(
            f"`{name}` must have a time axis: shape (steps, *features). Received: {name} "
            "with shape ()"
        )
    if obj.shape[0] == 0:
        raise ValueError(
            f"`{name}` must not be empty. Received: {name} with shape {tuple(obj.shape)}"
        )
    return obj


def open_series_list(data: Any, name: str) -> tuple[list[Any], bool]:
    """Open ``data`` as a list of series. Returns the list and whether ``data`` was one series.

    A ``list`` or ``tuple`` is a list of series; anything else is one series.
    """
    if isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ValueError(f"`{name}` must hold at least one series. Received: {name}=[]")
        if all(isinstance(d, numbers.Number) for d in data):
            raise TypeError(
                f"`{name}` must be one array, or a list of arrays with one series each. "
                f"Received: a {type(data).__name__} of {len(data)} numbers (for one series, "
                f"pass np.asarray({name}))"
            )
        series = [open_series(d, f"{name}[{i}]") for i, d in enumerate(data)]
        single = False
    else:
        series = [open_series(data, name)]
        single = True
    first = series[0]
    for i, s in enumerate(series):
        if tuple(s.shape[1:]) != tuple(first.shape[1:]):
            raise ValueError(
                f"All series in `{name}` must have the same feature shape. Received: "
                f"{name}[0] with shape {tuple(first.shape)} and {name}[{i}] with shape "
                f"{tuple(s.shape)}"
            )
        if np.dtype(s.dtype) != np.dtype(first.dtype):
            raise TypeError(
                f"All series in `{name}` must have the same dtype (it is kept, never cast). "
                f"Received: {name}[0] with dtype {first.dtype} and {name}[{i}] with dtype "
                f"{s.dtype}"
            )
    return series, single


class ShiftedTargets(NamedTuple):
    """Target arrays read ``steps`` ahead of the inputs: ``y[t]`` is ``data[t + steps]``.

    What a table's ``targets=seqbatch.tables.ahead("y")`` becomes: other columns than the
    inputs, the next step of them; the last ``steps`` steps of each series have no target.
    """

    steps: int
    data: Any


def parse_targets(targets: Any) -> tuple[int, Any]:
    """Split ``targets`` into (steps ahead, target data or None)."""
    if targets is None:
        return 0, None
    if isinstance(targets, ShiftedTargets):
        return targets.steps, targets.data
    if isinstance(targets, str):
        if targets == "next":
            return 1, None
        if targets.endswith(".npy"):
            return 0, targets
        raise ValueError(
            "`targets` must be None, 'next', a positive integer or target arrays (a path "
            f"to a .npy file ends in '.npy'). Received: targets={targets!r}"
        )
    if isinstance(targets, numbers.Integral) and not isinstance(targets, bool):
        if targets < 1:
            raise ValueError(
                "`targets` must be at least 1 when given as steps ahead. "
                f"Received: targets={targets!r}"
            )
        return int(targets), None
    if isinstance(targets, numbers.Number):
        # A bool, a float, a complex: never a count of steps, and never an array.
        raise TypeError(
            "`targets` must be None, 'next', a positive integer or target arrays. "
            f"Received: targets={targets!r}"
        )
    return 0, targets


def open_targets(targets: Any, series: list[Any], single: bool) -> list[Any]:
    """Open target arrays given for ``series`` (``single``: one array was given as data).

    They must have the structure of the data and as many steps as their series.
    """
    target_series, target_single = open_series_list(targets, "targets")
    if target_single != single or len(target_series) != len(series):
        raise ValueError(
            "`targets` must have the structure of `data`: one array for one series, "
            "a list of as many arrays for a list. Received: "
            f"{_structure(single, len(series))} as data and "
            f"{_structure(target_single, len(target_series))} as targets"
        )
    for i, (s, t) in enumerate(zip(series, target_series, strict=True)):
        if t.shape[0] != s.shape[0]:
            raise ValueError(
                "Every target array must have as many steps as its series. "
                f"Received: series {i} with {s.shape[0]} steps and targets {i} with "
                f"{t.shape[0]} steps"
            )
    return target_series


def _structure(single: bool, count: int) -> str:
    return "one array" if single else f"a list of {count} array{'s' if count != 1 else ''}"


def portable(series: Any) -> Any:
    """``series`` as it should be pickled: a memory map as a reference to its file.

    Pickling an ``np.memmap`` copies its data (and loads as an array in memory); the
    reference is a few hundred bytes and loads as a read-only memory map of the same
    elements of the same file. Other series are returned as they are.

    Examples:
        >>> import pickle, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "series.npy")
        >>> np.save(path, np.arange(1000.0))
        >>> series = np.load(path, mmap_mode="r")[10:20:3]
        >>> len(pickle.dumps(series)) > 8000, len(pickle.dumps(portable(series))) < 1000
        (False, True)
        >>> again = pickle.loads(pickle.dumps(portable(series)))
        >>> type(again).__name__, again.tolist()
        ('memmap', [10.0, 13.0, 16.0, 19.0])
    """
    # A memmap's name is a str, or a Path for one made from a Path; None for a file object.
    mapped = isinstance(series, np.memmap) and getattr(series, "_mmap", None) is not None
    if mapped and isinstance(series.filename, (str, os.PathLike)):
        return _MappedFile(series)
    return series


def portable_list(sources: Sequence[Any]) -> Any:
    """A list of series (or a :class:`Ragged`) as it should be pickled; see :func:`portable`."""
    if isinstance(sources, Ragged):
        return Ragged(portable(sources.values), sources.offsets)
    return [portable(s) for s in sources]


class _MappedFile:
    """Where the elements of a memory map lie in its file; pickles as a call that maps them."""

    def __init__(self, array: np.memmap) -> None:
        # np.memmap maps its file from `offset` rounded down to the allocation granularity,
        # and views of it (slices, strides) keep that `offset` and the same mapping.
        mapped_at = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
        mapping = np.frombuffer(array._mmap, dtype=np.uint8)  # type: ignore[attr-defined]
        first = array.__array_interface__["data"][0]
        reach = [s * (n - 1) for s, n in zip(array.strides, array.shape, strict=True)]
        low = first + sum(r for r in reach if r < 0)
        high = first + sum(r for r in reach if r > 0)
        self.args = (
            os.fspath(array.filename or ""),
            mapped_at + low - mapping.__array_interface__["data"][0],
            high - low + array.itemsize,
            array.dtype,
            array.shape,
            array.strides,
            first - low,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _map_file, self.args


def _map_file(
    filename: str,
    offset: int,
    size: int,
    dtype: np.dtype,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    first: int,
) -> np.memmap:
    """Map bytes ``[offset, offset + size)`` of ``filename`` and view them as the array was."""
    raw = np.memmap(filename, dtype=np.uint8, mode="r", offset=offset, shape=(size,))
    return _as_strided(raw[first : first + dtype.itemsize].view(dtype), shape, strides)


def _as_strided(array: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """A read-only strided view of ``array``'s memory, of any dtype, keeping its subclass."""
    # as_strided rebuilds the dtype from its array-interface string, which fails for some
    # ml_dtypes types (float8_e5m2 reads as '<f1'): stride bytes of the same size instead.
    raw = array.view(np.dtype((np.void, array.itemsize)))
    view = np.lib.stride_tricks.as_strided(
        raw, shape=shape, strides=strides, subok=True, writeable=False
    )
    return view.view(array.dtype)


class Joined:
    """Several series read as one, end to end, without copying them.

    Args:
        parts: the series, each sliceable along its first axis, sharing feature shape and dtype.

    Examples:
        >>> j = Joined([np.arange(3), np.arange(10, 14)])
        >>> j.shape
        (7,)
        >>> j[2:5].tolist()
        [2, 10, 11]
    """

    def __init__(self, parts: Sequence[Any]) -> None:
        # Series already end to end in one array are kept so: a slice is a slice of it.
        self.parts = parts if isinstance(parts, Ragged) else list(parts)
        self.ends = np.cumsum(lengths_of(self.parts))
        self.shape = (int(self.ends[-1]), *self.parts[0].shape[1:])
        self.dtype = np.dtype(self.parts[0].dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "parts": portable_list(self.parts)}

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.shape[0])
        if isinstance(self.parts, Ragged):
            return np.asarray(self.parts.values[start:stop])
        first = int(np.searchsorted(self.ends, start, side="right"))
        pieces = []
        while start < stop:
            begin = int(self.ends[first - 1]) if first else 0
            end = min(stop, int(self.ends[first]))
            pieces.append(np.asarray(self.parts[first][start - begin : end - begin]))
            start = end
            first += 1
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty((0, *self.shape[1:]), self.dtype)


def strided_windows(
    array: np.ndarray,
    first: int,
    shape: tuple[int, int, int],
    stream_step: int,
    batch_step: int,
) -> np.ndarray:
    """A read-only view of shape ``(*shape, *features)`` over ``array``, copying nothing.

    Element ``[k, i, j]`` is ``array[first + k * batch_step + i * stream_step + j]``: window
    ``k`` of stream ``i`` when a series is cut into contiguous streams of ``stream_step``
    steps. The caller keeps every element inside ``array``.

    Examples:
        >>> view = strided_windows(np.arange(12), 0, (2, 2, 3), stream_step=6, batch_step=3)
        >>> view[1].tolist()
        [[3, 4, 5], [9, 10, 11]]
    """
    step, *rest = array.strides
    return _as_strided(
        array[first:],
        (*shape, *array.shape[1:]),
        (batch_step * step, stream_step * step, step, *rest),
    )
