"""Torch-free, code-free reading of PyTorch ``.pt`` files.

``torch.save`` writes a pickle whose tensors point at raw storages, either inside a zip
archive (PyTorch >= 1.6, ``<name>/data.pkl`` plus ``<name>/data/<key>``) or appended to
the pickle stream itself (the legacy format). A pickle can name any Python callable and
have it called, so a checkpoint downloaded from a stranger is a program. This reader
never runs that program: its unpickler resolves only a short allowlist of globals
(tensor rebuilding, storage types, ``OrderedDict``, ``argparse.Namespace`` and a few
harmless builtins), each mapped to a function of ours that builds plain data, and
refuses everything else with an error that names the global. Nothing is extracted to
disk; storage sizes are checked against the bytes really present before anything is
allocated.

The reader also bounds its own work, so a hostile or corrupt file cannot make it crash,
hang or exhaust memory: every pickle stream is first walked opcode by opcode (without
building anything) and refused when its containers nest deeper than ``_MAX_DEPTH`` (a
deeply nested tuple used as a dict key would otherwise overflow the C stack while
being hashed), when a memo index jumps past the opcodes seen so far (the C unpickler
would allocate and clear a memo table of that size), or when it uses the global
extension registry (``EXT1/2/4``); objects shared by reference are converted once
(no exponential blow-up of a DAG), cycles are refused, and the arrays produced may
not exceed ``4 x file size + 256 MiB`` in all (tensors that repeat one element with
stride 0 cannot inflate a small file into gigabytes).

The result is the pickled object with every tensor replaced by a numpy array (dtype
preserved: float16 stays float16, bfloat16 becomes ``ml_dtypes.bfloat16``),
``OrderedDict`` turned into ``dict`` and ``argparse.Namespace`` into ``dict``.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import pickletools
import struct
import sys
import zipfile
import zlib
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["CheckpointError", "read_torch", "read_torch_bytes"]


class CheckpointError(Exception):
    """A checkpoint could not be read or converted. The message says which file and why."""


# torch storage class name -> numpy dtype
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MAX_DEPTH = 200  # nesting of containers accepted in a checkpoint (real ones: < 10)
_MAX_OPS = 50_000_000  # pickle opcodes per stream (a 1024 px checkpoint has ~10^5)
_EXTRA_OUTPUT_BYTES = 256 << 20  # output budget: 4 x file size + this


class _Frozen:
    """Base of the allowlisted stand-ins that a pickle can reach with ``GLOBAL``: no
    ``__dict__`` and a ``__setstate__`` that refuses, so a ``BUILD`` opcode on them
    cannot change their attributes (which are shared by every later load)."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"BUILD on {self!r} refused: it has no state")

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"attribute {name!r} of {self!r} is read-only")


class _StorageType(_Frozen):
    """Stands in for ``torch.FloatStorage`` & co.: only carries the dtype."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", _STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"

    def __call__(self, *args, **kwargs):  # a pickle may not instantiate it
        raise pickle.UnpicklingError(f"storage type torch.{self.name} called directly")


class _Callable(_Frozen):
    """An allowlisted function, wrapped so that ``BUILD`` cannot rewrite its
    ``__defaults__``/``__dict__`` (plain functions accept both)."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __repr__(self):
        return self._name

    def __call__(self, *args):
        return self._fn(*args)


class _Storage:
    """A storage referenced by a persistent id; its array is filled when the bytes are read."""

    __slots__ = ("key", "dtype", "numel", "array")

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _LazyTensor:
    """A tensor whose storage bytes may not have been read yet (the legacy format)."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


class _OrderedDict(dict):
    """Stands in for ``collections.OrderedDict``; drops the ``_metadata`` that
    ``state_dict()`` attaches as instance state."""

    def __setstate__(self, state):
        pass


class _Namespace:
    """Stands in for ``argparse.Namespace``: only records its attributes."""

    def __init__(self, **kwargs):
        self.__setstate__(kwargs)

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("argparse.Namespace state is not a dict")
        self.__dict__.setdefault("_attrs", {}).update(state)

    def __setattr__(self, name, value):
        self.__dict__.setdefault("_attrs", {})[name] = value

    @property
    def attrs(self) -> dict:
        return self.__dict__.get("_attrs", {})


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not (_is_int(storage_offset) and storage_offset >= 0):
        raise pickle.UnpicklingError(f"bad storage offset {storage_offset!r}")
    size = tuple(size)
    stride = tuple(stride)
    if len(size) != len(stride) or not all(_is_int(s) and s >= 0 for s in size + stride):
        raise pickle.UnpicklingError(f"bad tensor size/stride {size!r}/{stride!r}")
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise pickle.UnpicklingError(
                f"tensor of size {size} at offset {storage_offset} reaches element {last} "
                f"of a storage with {storage.numel} elements"
            )
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode used on something other than text")
    return obj.encode(encoding, errors)


def _torch_size(*args):
    return tuple(*args)


def _torch_device(*args):
    return ":".join(str(a) for a in args)


def _safe_reduce_builtin(fn):
    def call(*args):
        for a in args:
            if not isinstance(a, (list, tuple, set, frozenset, int, float, str, bytes, type(None))):
                raise pickle.UnpicklingError(f"builtins.{fn.__name__} called on {type(a).__name__}")
        return fn(*args)

    return call


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _OrderedDict,
    ("argparse", "Namespace"): _Namespace,
}
for _key, _fn in {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _safe_reduce_builtin(set),
    ("builtins", "frozenset"): _safe_reduce_builtin(frozenset),
    ("builtins", "complex"): _safe_reduce_builtin(complex),
}.items():
    _ALLOWED_GLOBALS[_key] = _Callable(_fn, ".".join(_key))
for _name in _STORAGE_DTYPES:
    _ALLOWED_GLOBALS[("torch", _name)] = _StorageType(_name)
    _ALLOWED_GLOBALS[("torch.storage", _name)] = _ALLOWED_GLOBALS[("torch", _name)]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; storages come from ``storage_loader``."""

    def __init__(self, file, storage_loader):
        super().__init__(file, encoding="utf-8")
        self._storage_loader = storage_loader

    def find_class(self, module, name):
        # Protocol < 3 pickles use Python 2 names (``__builtin__.set``): map them as the
        # standard unpickler does, so the allowlist and error messages see Python 3 names.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        raise pickle.UnpicklingError(
            f"refused to load global '{module}.{name}': checkpoints may only contain "
            "tensors, containers and plain values (this file may try to run code)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] not in ("storage", b"storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("persistent id without a storage type")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage key/size {key!r}/{numel!r}")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise pickle.UnpicklingError("storage views (pre-1.0 checkpoints) are not supported")
        return self._storage_loader(key, storage_type.dtype, numel)


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_REFUSED_OPS = frozenset({"EXT1", "EXT2", "EXT4"})


def _prescan(f) -> None:
    """Walk one pickle stream from ``f``'s position to its STOP without building
    anything, and refuse it when it would make the real unpickler misbehave: nesting
    deeper than ``_MAX_DEPTH`` (tracked on a symbolic stack of nesting depths), memo
    indices beyond the opcodes seen so far, the extension registry, more than
    ``_MAX_OPS`` opcodes. ``f`` is left where it was."""
    start = f.tell()
    stack: list[int] = []  # nesting depth of each object on the unpickler's stack
    marks: list[int] = []
    memo: dict[int, int] = {}
    n_ops = 0
    try:
        for op, arg, _pos in pickletools.genops(f):
            n_ops += 1
            name = op.name
            if n_ops > _MAX_OPS:
                raise pickle.UnpicklingError(f"more than {_MAX_OPS} pickle opcodes")
            if name in _REFUSED_OPS:
                raise pickle.UnpicklingError(f"pickle opcode {name} (extension registry) refused")
            if name == "STOP":
                break
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in _MEMO_PUTS or name == "MEMOIZE":
                idx = len(memo) if name == "MEMOIZE" else arg
                if not stack:
                    raise pickle.UnpicklingError(f"{name} on an empty stack")
                if idx > n_ops:
                    raise pickle.UnpicklingError(f"memo index {idx} out of range at opcode {n_ops}")
                memo[idx] = stack[-1]
                continue
            if name in _MEMO_GETS:
                stack.append(memo.get(arg, 0))
                continue
            if name == "DUP":
                if not stack:
                    raise pickle.UnpicklingError("DUP on an empty stack")
                stack.append(stack[-1])
                continue
            if name == "POP" and marks and marks[-1] == len(stack):
                marks.pop()  # POP of a mark, as the C unpickler allows
                continue
            before = op.stack_before
            items: list[int] = []
            if pickletools.markobject in before:
                if not marks:
                    raise pickle.UnpicklingError(f"{name} without a MARK")
                m = marks.pop()
                if m > len(stack):
                    raise pickle.UnpicklingError(f"{name}: stack underflow")
                items, stack[m:] = stack[m:], []
                n_below = before.index(pickletools.markobject)
            else:
                n_below = len(before)
            if len(stack) < n_below:
                raise pickle.UnpicklingError(f"{name}: stack underflow")
            below = stack[len(stack) - n_below:] if n_below else []
            del stack[len(stack) - n_below:]
            if name in _IN_PLACE and below:
                parts = below[1:] + items
                depth = max([below[0]] + [d + 1 for d in parts])
            else:
                depth = 1 + max(below + items, default=0)
            if depth > _MAX_DEPTH:
                raise pickle.UnpicklingError(f"containers nested deeper than {_MAX_DEPTH} levels")
            stack.extend([depth] * len(op.stack_after))
        else:
            raise pickle.UnpicklingError("pickle stream ends without STOP")
    except ValueError as e:  # pickletools: unknown opcode, truncated argument, ...
        raise pickle.UnpicklingError(f"malformed pickle stream: {e}") from None
    finally:
        f.seek(start)


class _Materializer:
    """Replace lazy tensors by numpy arrays and stand-ins by plain containers. An
    object reached twice (pickle memo) is converted once and shared, as torch.load
    shares it; a cycle is an error; the bytes of the arrays made are budgeted."""

    def __init__(self, budget: int):
        self.budget = budget
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()
        self._keep: list = []  # keeps converted inputs alive so ids stay unique

    def __call__(self, obj, depth=0):
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"containers nested deeper than {_MAX_DEPTH} levels")
        if not isinstance(obj, (_LazyTensor, _Namespace, dict, list, tuple, _Storage, _StorageType)):
            return obj
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise CheckpointError("the checkpoint's containers contain themselves (a cycle)")
        self.active.add(key)
        try:
            out = self._convert(obj, depth)
        finally:
            self.active.discard(key)
        self.done[key] = out
        self._keep.append(obj)
        return out

    def _spend(self, nbytes: int, what: str):
        if nbytes > self.budget:
            raise CheckpointError(f"{what} needs {nbytes} more bytes than the reader allows for this file "
                                  f"({self.budget} left of 4 x file size + {_EXTRA_OUTPUT_BYTES})")
        self.budget -= nbytes

    def _convert(self, obj, depth):
        if isinstance(obj, _LazyTensor):
            st = obj.storage
            if st.array is None:
                raise CheckpointError(f"storage {st.key} is referenced but its data is missing")
            base = st.array
            itemsize = base.dtype.itemsize
            numel = 1
            for n in obj.size:
                numel *= n
            self._spend(numel * itemsize, f"tensor of size {obj.size}")
            if numel == 0:
                return np.zeros(obj.size, dtype=base.dtype)
            view = np.lib.stride_tricks.as_strided(
                base[obj.offset:],
                shape=obj.size,
                strides=tuple(s * itemsize for s in obj.stride),
                writeable=False,
            )
            return np.array(view, copy=True)
        if isinstance(obj, _Namespace):
            return {k: self(v, depth + 1) for k, v in obj.attrs.items()}
        if isinstance(obj, dict):
            return {k: self(v, depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self(v, depth + 1) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self(v, depth + 1) for v in obj)
        raise CheckpointError("a bare storage object is not supported in a checkpoint")


def _output_budget(file_size: int) -> int:
    return 4 * file_size + _EXTRA_OUTPUT_BYTES


def _native(dtype: np.dtype, big_endian: bool) -> np.dtype:
    return dtype.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype


def _load_pickle(f, storage_loader):
    _prescan(f)
    return _RestrictedUnpickler(f, storage_loader).load()


def _load_zip(zf: zipfile.ZipFile, file_size: int) -> Any:
    names = zf.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise CheckpointError("zip archive has no single '<name>/data.pkl': not a torch.save file")
    prefix = pkl[0][: -len("data.pkl")]
    infos = {info.filename: info for info in zf.infolist()}
    # Members are read into memory (never extracted); their declared sizes, which bound
    # what zipfile will inflate, are charged to the budget before any is read.
    budget = [_output_budget(file_size)]

    def read_member(member):
        info = infos[member]
        if info.flag_bits & 0x1:
            raise CheckpointError(f"archive member {member!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"archive member {member!r} uses compression method {info.compress_type}; "
                                  "torch.save writes uncompressed archives")
        if info.file_size > budget[0]:
            raise CheckpointError(f"archive member {member!r} declares {info.file_size} bytes, more than "
                                  f"the reader allows for a {file_size}-byte file")
        budget[0] -= info.file_size
        return zf.read(info)

    big_endian = False
    if prefix + "byteorder" in infos:
        order = read_member(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise CheckpointError(f"unknown byteorder {order[:20]!r}")
        big_endian = order == "big"
    storages: dict[str, _Storage] = {}

    def load_storage(key, dtype, numel):
        if key in storages:
            return storages[key]
        member = f"{prefix}data/{key}"
        info = infos.get(member)
        if info is None:
            raise pickle.UnpicklingError(f"storage {key[:80]!r} is missing from the archive")
        nbytes = numel * dtype.itemsize
        if nbytes > info.file_size:
            raise pickle.UnpicklingError(
                f"storage {key[:80]!r} declares {nbytes} bytes but the archive holds {info.file_size}"
            )
        raw = read_member(member)
        st = _Storage(key, dtype, numel)
        st.array = np.frombuffer(raw, dtype=_native(dtype, big_endian), count=numel).astype(dtype)
        storages[key] = st
        return st

    obj = _load_pickle(io.BytesIO(read_member(pkl[0])), load_storage)
    return _Materializer(budget[0])(obj)


def _load_legacy(f: io.BufferedIOBase, file_size: int) -> Any:
    def plain_load():
        return _load_pickle(f, _no_storage)

    magic = plain_load()
    if magic != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (no zip archive, no legacy magic number)")
    protocol = plain_load()
    if protocol != 1001:
        raise CheckpointError(f"unsupported legacy protocol version {str(protocol)[:40]}")
    sys_info = plain_load()
    little = not (isinstance(sys_info, dict) and sys_info.get("little_endian") is False)

    storages: dict[str, _Storage] = {}

    def declare_storage(key, dtype, numel):
        if key not in storages:
            if numel * dtype.itemsize > file_size:
                raise pickle.UnpicklingError(
                    f"storage {key[:80]!r} declares {numel * dtype.itemsize} bytes, more than the "
                    f"file's {file_size}"
                )
            storages[key] = _Storage(key, dtype, numel)
        return storages[key]

    obj = _load_pickle(f, declare_storage)
    keys = plain_load()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError("legacy storage key list is malformed")
    for key in keys:
        st = storages.get(key)
        if st is None:
            raise CheckpointError(f"storage {key[:80]!r} has data but is never referenced")
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"file ends before the data of storage {key[:80]!r}")
        (numel,) = struct.unpack("<q" if little else ">q", header)
        if numel != st.numel:
            raise CheckpointError(f"storage {key[:80]!r} holds {numel} elements, expected {st.numel}")
        nbytes = numel * st.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"file ends inside the data of storage {key[:80]!r}")
        st.array = np.frombuffer(raw, dtype=_native(st.dtype, not little)).astype(st.dtype)
    return _Materializer(_output_budget(file_size))(obj)


def _no_storage(key, dtype, numel):
    raise pickle.UnpicklingError("storage reference outside the main pickle")


def read_torch_bytes(data: bytes, name: str = "<bytes>") -> Any:
    """Read a ``torch.save`` payload held in memory. See :func:`read_torch`."""
    try:
        buf = io.BytesIO(data)
        if zipfile.is_zipfile(buf):
            buf.seek(0)
            with zipfile.ZipFile(buf) as zf:
                return _load_zip(zf, len(data))
        buf.seek(0)
        if data[:1] == b"PK":
            raise CheckpointError("damaged zip archive")
        return _load_legacy(buf, len(data))
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{name}: structure nested too deeply") from None
    except MemoryError:
        raise CheckpointError(f"{name}: declares more memory than can be allocated") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as e:
        raise CheckpointError(_not_torch(data, name, str(e)) or f"{name}: cannot read checkpoint: {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            struct.error, UnicodeDecodeError, NotImplementedError, OSError) as e:
        raise CheckpointError(
            _not_torch(data, name, f"{type(e).__name__}: {e}")
            or f"{name}: corrupt or unsupported checkpoint ({type(e).__name__}: {e})"
        ) from None


def _not_torch(data: bytes, name: str, detail: str) -> str | None:
    """The message for a file that cannot be a ``torch.save`` file at all (neither a
    zip archive nor a binary pickle, e.g. a text file), the reader's detail at its
    tail; None for one that starts like a checkpoint (then it is damaged)."""
    if data[:2] == b"PK" or data[:1] == b"\x80":
        return None
    return (f"{name}: not a PyTorch checkpoint (torch.save writes a zip archive, or before PyTorch 1.6 a binary "
            f"pickle starting with byte 0x80; this file starts with {data[:16]!r}): give a .pt/.pth file written by "
            f"torch.save, or a directory sage-jax wrote; reading it as a pickle failed: {detail}")


def read_torch(path: str | os.PathLike) -> Any:
    """Read a ``.pt``/``.pth`` file written by ``torch.save``, without torch and without
    running any code from the file.

    Returns the saved object with tensors as numpy arrays: typically a nested dict such
    as ``{"g": {...}, "d": {...}, "g_ema": {...}, "args": {...}}`` for a rosinality
    checkpoint or ``{"state_dict": {...}, "opts": {...}, "latent_avg": array}`` for pSp,
    AGE and SAGE checkpoints. Raises :class:`CheckpointError` naming the file for a
    missing, truncated, corrupt or hostile file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open checkpoint: {e.strerror or e}") from None
    return read_torch_bytes(data, name=path)


if __name__ == "__main__":  # pragma: no cover - tiny inspection helper
    obj = read_torch(sys.argv[1])

    def show(o, indent=0):
        pad = "  " * indent
        if isinstance(o, dict):
            for k, v in o.items():
                if isinstance(v, (dict, list, tuple)) and not isinstance(v, np.ndarray):
                    print(f"{pad}{k}:")
                    show(v, indent + 1)
                else:
                    show_leaf(k, v, pad)
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                show_leaf(i, v, pad)

    def show_leaf(k, v, pad):
        if isinstance(v, np.ndarray):
            print(f"{pad}{k}: array{list(v.shape)} {v.dtype}")
        else:
            print(f"{pad}{k}: {v!r}"[:200])

    show(obj)
