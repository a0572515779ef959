"""Write ``torch.save``-format files without torch, for tests that need checkpoints the
fixtures do not have (hostile sizes, missing keys, ...).

numpy arrays in the object become tensors (``torch._utils._rebuild_tensor_v2`` over a
storage referenced by persistent id), exactly as torch lays them out. Module names are
faked in ``sys.modules`` only while pickling.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from contextlib import contextmanager

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage"}


@contextmanager
def _fake_torch():
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _STORAGE_NAMES.values():
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, tuple(shape), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class _StorageRef:
    def __init__(self, key, array, numel=None):
        self.key, self.array = key, array
        self.numel = array.size if numel is None else numel


class Strided:
    """A tensor over ``array``'s storage with an explicit size, stride and offset (to
    write views torch.save would produce, or hostile ones)."""

    def __init__(self, array, shape, stride, offset=0):
        self.array, self.shape, self.stride, self.offset = np.asarray(array), shape, stride, offset


def _tensorize(obj, storages):
    if isinstance(obj, Strided):
        st = _StorageRef(str(len(storages)), np.ascontiguousarray(obj.array).reshape(-1))
        storages.append(st)
        return _Tensor(st, obj.offset, obj.shape, obj.stride)
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        st = _StorageRef(str(len(storages)), arr.reshape(-1))
        storages.append(st)
        stride = [int(np.prod(arr.shape[i + 1:], dtype=np.int64)) for i in range(arr.ndim)]
        return _Tensor(st, 0, arr.shape, stride)
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _tensorize(v, storages)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _tensorize(v, storages) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensorize(v, storages) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_tensorize(v, storages) for v in obj)
    return obj


class _Pickler(pickle.Pickler):
    def __init__(self, f, torch, legacy):
        super().__init__(f, protocol=2)
        self.torch, self.legacy = torch, legacy

    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            cls = getattr(self.torch, _STORAGE_NAMES[obj.array.dtype])
            pid = ("storage", cls, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None


def dumps(obj, fmt: str = "zip", name: str = "archive", numel_override: dict | None = None) -> bytes:
    """Bytes of ``torch.save(obj)`` in the ``zip`` or ``legacy`` format.
    ``numel_override`` {storage key: numel} declares other sizes than the data holds."""
    storages: list[_StorageRef] = []
    obj = _tensorize(obj, storages)
    for st in storages:
        if numel_override and st.key in numel_override:
            st.numel = numel_override[st.key]
    with _fake_torch() as torch:
        buf = io.BytesIO()
        _Pickler(buf, torch, fmt == "legacy").dump(obj)
    payload = buf.getvalue()
    if fmt == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr(f"{name}/data.pkl", payload)
            zf.writestr(f"{name}/byteorder", "little")
            for st in storages:
                zf.writestr(f"{name}/data/{st.key}", st.array.astype(st.array.dtype.newbyteorder("<")).tobytes())
            zf.writestr(f"{name}/version", "3\n")
        return out.getvalue()
    if fmt == "legacy":
        parts = [pickle.dumps(x, protocol=2) for x in
                 (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})]
        parts.append(payload)
        parts.append(pickle.dumps([st.key for st in storages], protocol=2))
        for st in storages:
            parts.append(struct.pack("<q", st.numel) + st.array.tobytes())
        return b"".join(parts)
    raise ValueError(fmt)
