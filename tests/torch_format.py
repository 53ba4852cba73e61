"""A small writer of the files `torch.save` makes (zip and legacy), and of Python 2 pickles, for tests without torch.

Tensors are given as `Tensor(array)` (optionally a strided view of a larger storage); everything else is pickled as it
is. The torch globals the files name (torch._utils._rebuild_tensor_v2, torch.FloatStorage, ...) are stand-ins that
exist only while a file is written.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STORAGE_NAMES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                 "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
                 "uint8": "ByteStorage", "bool": "BoolStorage", "bfloat16": "BFloat16Storage"}


@dataclass
class Tensor:
    """`storage` (1-D) seen with `shape`, `stride` (in elements) and `offset`; by default a C-order array."""
    array: np.ndarray
    offset: int = 0
    shape: tuple | None = None
    stride: tuple | None = None
    bfloat16: bool = False  # store the float32 array's upper 16 bits as a BFloat16Storage
    key: str = field(default="", compare=False)

    def layout(self) -> tuple[tuple, tuple]:
        if self.shape is not None:
            return tuple(self.shape), tuple(self.stride)
        shape = self.array.shape
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        return shape, stride


@dataclass
class ScriptObject:
    """A TorchScript module as `torch.jit.save` pickles it: an object of class `__torch__.<qualname>` built with
    NEWOBJ and given its attributes (submodules, tensors, flags) by BUILD."""
    qualname: str  # e.g. "clip.model.VisionTransformer"
    attributes: dict


def script_modules(state: dict, root: str = "clip.model.CLIP", training: bool = False) -> ScriptObject:
    """The module tree of a flat state dict ("visual.conv1.weight": array, ...), its tensors as Tensor(array)."""
    top = ScriptObject(root, {"training": training})
    for key, array in state.items():
        node = top
        *path, name = key.split(".")
        for part in path:
            node = node.attributes.setdefault(part, ScriptObject(f"torch.nn.modules.module.{part.title()}",
                                                                 {"training": training}))
        node.attributes[name] = Tensor(array)
    return top


class StorageStub:
    def __init__(self, tensor: Tensor):
        self.tensor = tensor


def rebuild_stub(*args):  # never called: only its name is written
    raise AssertionError


def script_instances(obj):
    """ScriptObjects as instances of their stand-in classes, which pickle writes with NEWOBJ and BUILD."""
    if isinstance(obj, ScriptObject):
        instance = object.__new__(script_class(obj.qualname))
        instance.__dict__.update({k: script_instances(v) for k, v in obj.attributes.items()})
        return instance
    return obj


def script_class(qualname: str) -> type:
    """A stand-in class `__torch__.<qualname>`, registered so that pickle can name it."""
    module_name, _, name = f"__torch__.{qualname}".rpartition(".")
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):  # pickle imports the module, its parents first
        sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
    module = sys.modules[module_name]
    if not hasattr(module, name):
        setattr(module, name, type(name, (), {"__module__": module_name, "__qualname__": name}))
    return getattr(module, name)


@contextlib.contextmanager
def torch_names():
    """Stand-in modules `torch` and `torch._utils`, so that pickle can name their globals."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    rebuild_stub.__module__, rebuild_stub.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = rebuild_stub
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def storage_bytes(tensor: Tensor) -> tuple[str, bytes, int]:
    flat = np.ascontiguousarray(tensor.array).reshape(-1)
    if tensor.bfloat16:
        return "bfloat16", (flat.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes(), flat.size
    return str(flat.dtype), flat.astype(flat.dtype.newbyteorder("<")).tobytes(), flat.size


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch, legacy: bool, storages: list):
        super().__init__(file, protocol=2)
        self.torch, self.legacy, self.storages = torch, legacy, storages

    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            shape, stride = obj.layout()
            return rebuild_stub, (StorageStub(obj), obj.offset, shape, stride, False, collections.OrderedDict())
        return NotImplemented

    def persistent_id(self, obj):
        if not isinstance(obj, StorageStub):
            return None
        dtype, data, count = storage_bytes(obj.tensor)
        key = str(len(self.storages))
        self.storages.append((key, data, count))
        kind = getattr(self.torch, STORAGE_NAMES[dtype])
        return ("storage", kind, key, "cpu", count, None) if self.legacy else ("storage", kind, key, "cpu", count)


def write_zip(path: Path, obj, name: str = "archive") -> Path:
    storages: list = []
    buffer = io.BytesIO()
    with torch_names() as torch:
        _Pickler(buffer, torch, False, storages).dump(script_instances(obj))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/data.pkl", buffer.getvalue())
        archive.writestr(f"{name}/byteorder", "little")
        for key, data, _ in storages:
            archive.writestr(f"{name}/data/{key}", data)
        archive.writestr(f"{name}/version", "3\n")
    return path


def write_legacy(path: Path, obj) -> Path:
    storages: list = []
    buffer = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buffer, protocol=2)
    with torch_names() as torch:
        _Pickler(buffer, torch, True, storages).dump(obj)
    pickle.dump([key for key, _, _ in storages], buffer, protocol=2)
    for _, data, count in storages:
        buffer.write(struct.pack("<q", count) + data)
    Path(path).write_bytes(buffer.getvalue())
    return path


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with every str written as Python 2 wrote its byte strings (SHORT_BINSTRING / BINSTRING, latin-1)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str


def write_python2_pickle(path: Path, obj) -> Path:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    Path(path).write_bytes(buffer.getvalue())
    return path
