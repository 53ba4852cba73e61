"""PyTorch checkpoints and the field's pickles, read without torch and without running anything from the file.

`torch.save` writes either a zip archive (torch >= 1.6: `<name>/data.pkl` whose persistent ids name the storage files
`<name>/data/<key>`) or the legacy stream the 2018-2019 releases use (a magic number, a protocol number, system info,
the object, the list of storage keys, then each storage as an 8-byte element count and its raw bytes). Both are read
with an unpickler that resolves only the globals in ALLOWED: tensors become NumPy arrays, OrderedDicts stay
OrderedDicts, and anything else in the file (a class, a function, numpy's reconstructor) is refused with one clear
error. The captions pickles (Python 2, protocol 2) are read the same way, their byte strings as latin-1.

A TorchScript archive (`torch.jit.save`, e.g. OpenAI's CLIP `ViT-B-32.pt`) is a zip of the same kind whose data.pkl
pickles the module tree as objects of `__torch__.*` classes; `read_torchscript_state` takes those objects as plain
attribute holders and returns the tensors by their state-dict names. The archive's code is never read.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from t2ictl.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


@dataclass(frozen=True)
class StorageType:
    """A torch storage class named in the file (torch.FloatStorage, ...), standing for its element type."""
    dtype: str


STORAGE_TYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "BFloat16Storage": "bfloat16",  # NumPy has none: read as float32 (the upper half of its bits)
}


def storage_array(data: bytes, kind, path: Path) -> np.ndarray:
    if not isinstance(kind, StorageType):
        raise UserError(f"{path}: a storage of unknown type {kind!r}")
    if kind.dtype == "bfloat16":
        return (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, kind.dtype)


def item_size(kind, path: Path) -> int:
    return 2 if getattr(kind, "dtype", None) == "bfloat16" else np.dtype(storage_array(b"", kind, path).dtype).itemsize


class LazyStorage:
    """A legacy storage whose bytes follow the pickle; tensors built on it are finished by _resolve."""

    def __init__(self, holder: list, view):
        self.holder, self.view = holder, view

    def array(self) -> np.ndarray:
        data = self.holder[0]
        if self.view is not None:
            _, offset, size = self.view
            data = data[offset:offset + size]
        return data


@dataclass
class PendingTensor:
    storage: LazyStorage
    args: tuple

    def array(self) -> np.ndarray:
        return rebuild_tensor(self.storage.array(), *self.args)


def rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_ignored) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 (and _rebuild_tensor): a strided view of the storage, copied to C order."""
    if isinstance(storage, LazyStorage):  # a legacy file: the storage's bytes come after the pickle
        return PendingTensor(storage, (offset, size, stride))
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if extent > len(storage):
        raise UserError(f"a tensor of shape {size} reaches past its storage of {len(storage)} elements")
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, [s * storage.itemsize for s in stride])
    return np.ascontiguousarray(view)


def rebuild_parameter(data: np.ndarray, *_ignored) -> np.ndarray:
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("_codecs", "encode"): lambda text, encoding="latin-1": text.encode(encoding),  # bytes pickled by Python 3
    **{("torch", name): StorageType(dtype) for name, dtype in STORAGE_TYPES.items()},
}


class ScriptModule:
    """A TorchScript module's attributes (submodules, tensors, flags) as data; none of its methods exist here."""

    def __setstate__(self, state):
        self.attributes = state if isinstance(state, dict) else {}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ALLOWED (and, for TorchScript archives, `__torch__.*` classes as ScriptModule);
    storages come from `storage(persistent_id)`."""

    def __init__(self, file, path: Path, storage=None, scripted: bool = False):
        super().__init__(file, encoding="latin1")
        self.path, self.storage, self.scripted = path, storage, scripted

    def find_class(self, module: str, name: str):
        if self.scripted and module.startswith("__torch__."):
            return ScriptModule
        if (module, name) not in ALLOWED:
            raise UserError(f"{self.path}: refused {module}.{name}: t2ictl reads only tensors, OrderedDicts and "
                            "builtin containers from checkpoints and pickles, so that a file cannot run code")
        return ALLOWED[(module, name)]

    def persistent_load(self, pid):
        if self.storage is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UserError(f"{self.path}: an unexpected persistent id {str(pid)[:60]}; not a PyTorch checkpoint?")
        return self.storage(pid)


def read_pickle(path: Path) -> Any:
    """A pickle of builtin containers (the DAMSM captions pickle), byte strings read as latin-1."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such pickle: {path}")
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UserError(f"{path}: not a readable pickle ({exc})") from None


def read_checkpoint(path: Path) -> Any:
    """The object `torch.save` wrote to `path` (zip or legacy format), with NumPy arrays for tensors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such checkpoint: {path}")
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with path.open("rb") as handle:
            if handle.read(4) == b"PK\x03\x04":
                raise zipfile.BadZipFile("a zip archive without its directory at the end: cut short or damaged")
        return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def read_torchscript_state(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a TorchScript archive by their state-dict names ("visual.conv1.weight", ...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such TorchScript archive: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a TorchScript archive (not a zip file)")
    try:
        root = _read_zip(path, scripted=True)
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"{path}: not a readable TorchScript archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(root, ScriptModule):
        raise UserError(f"{path}: a zip of torch.save, not a TorchScript module; read it as a checkpoint")
    return _script_tensors(root, "")


def _script_tensors(module: ScriptModule, prefix: str) -> dict[str, np.ndarray]:
    tensors = {}
    for name, value in getattr(module, "attributes", {}).items():
        if isinstance(value, ScriptModule):
            tensors.update(_script_tensors(value, f"{prefix}{name}."))
        elif isinstance(value, np.ndarray):
            tensors[f"{prefix}{name}"] = value
    return tensors


def _read_zip(path: Path, scripted: bool = False) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise UserError(f"{path}: a zip file without one data.pkl; not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if byteorder != "little":
            raise UserError(f"{path}: written on a {byteorder}-endian machine, which t2ictl does not read")

        loaded: dict[str, np.ndarray] = {}  # views of one tensor share its storage: read it once

        def storage(pid):
            _, kind, key, _location, _numel = pid
            if key not in loaded:
                loaded[key] = storage_array(archive.read(f"{prefix}data/{key}"), kind, path)
            return loaded[key]

        return RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, storage, scripted).load()


def _read_legacy(path: Path) -> Any:
    with path.open("rb") as handle:
        if RestrictedUnpickler(handle, path).load() != LEGACY_MAGIC:
            raise UserError(f"{path}: neither a zip nor a legacy PyTorch checkpoint (no torch.save magic number)")
        if RestrictedUnpickler(handle, path).load() != LEGACY_PROTOCOL:
            raise UserError(f"{path}: a legacy PyTorch checkpoint of an unknown protocol version")
        if not RestrictedUnpickler(handle, path).load().get("little_endian", True):
            raise UserError(f"{path}: written on a big-endian machine, which t2ictl does not read")
        wanted: dict[str, tuple[StorageType, list]] = {}

        def storage(pid):
            _, kind, key, _location, _size, view = pid
            holder = wanted.setdefault(key, (kind, []))[1]
            return LazyStorage(holder, view)

        result = RestrictedUnpickler(handle, path, storage).load()
        keys = RestrictedUnpickler(handle, path).load()
        for key in keys:
            (count,) = struct.unpack("<q", handle.read(8))
            kind = wanted[key][0] if key in wanted else StorageType("u1")
            size = count * item_size(kind, path)
            data = handle.read(size)
            if len(data) != size:
                raise UserError(f"{path}: truncated (storage {key} has {len(data)} of {size} bytes)")
            if key in wanted:
                wanted[key][1].append(storage_array(data, kind, path))
    return _resolve(result)


def _resolve(value):
    if isinstance(value, PendingTensor):
        return value.array()
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v) for v in value)
    return value


def strip_module_prefix(state: dict) -> dict:
    """A state dict without the `module.` prefix of nn.DataParallel saves (keys without it are kept as they are)."""
    return collections.OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())


class StateDict:
    """A checkpoint's parameters by name. Taking one checks its shape (in torch's layout) and names the file and the
    parameter in any error; `unused` lists what nothing took."""

    def __init__(self, arrays: dict, path: Path, what: str = ""):
        bad = [k for k, v in arrays.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
        if bad:
            raise UserError(f"{path}: {what or 'the file'} is not a state dict of tensors (entry {bad[0]!r})")
        self.arrays, self.path, self.what, self.taken = strip_module_prefix(arrays), Path(path), what, set()

    def __call__(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.arrays:
            raise UserError(f"{self.path}: parameter {key} is missing; is this the right file?")
        array = self.arrays[key]
        if array.shape != tuple(shape):
            raise UserError(f"{self.path}: parameter {key} has shape {list(array.shape)}, the model needs "
                            f"{list(shape)}; the file was trained with other sizes than the recipe's")
        self.taken.add(key)
        return array.astype(np.float32)

    def unused(self) -> list[str]:
        return sorted(k for k in self.arrays if k not in self.taken and not k.endswith("num_batches_tracked"))
