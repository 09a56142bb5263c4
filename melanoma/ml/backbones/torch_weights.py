"""Read a PyTorch state dict saved in the legacy (pre-zip) format with numpy alone, no torch.

The format: three small pickles (magic number, protocol version, system info), then the state
dict's pickle, whose tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` calls with the storages as persistent ids, then a pickled list of storage keys, then for
each key an int64 element count and the raw little-endian data.

Reading a pickle runs code: the unpickler here resolves only ``collections.OrderedDict``, the
tensor rebuild and the storage types, and refuses every other global. Tensors honour their saved
strides (many are permuted views of their storage).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightsError(ValueError):
    """A weights file that cannot be read safely or is not what it claims to be."""


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass(frozen=True)
class _Tensor:
    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: str, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[Any, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise WeightsError(f"refusing to load {module}.{name} from a weights file (only tensors are allowed)")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsError(f"unexpected persistent id in a weights file: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise WeightsError("a storage of an unknown type in a weights file")
        self.storages.setdefault(str(key), (storage_type.dtype, int(numel)))
        return str(key)


def _load_one(f: IO[bytes]) -> Any:
    return _RestrictedUnpickler(f).load()


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The named tensors of a legacy-format ``.pth`` file, as numpy arrays in their logical layout."""
    data = Path(path).read_bytes()
    f = io.BytesIO(data)
    try:
        if _load_one(f) != MAGIC_NUMBER:
            raise WeightsError(f"{path}: not a legacy PyTorch file (bad magic number)")
        if _load_one(f) != PROTOCOL_VERSION:
            raise WeightsError(f"{path}: unsupported PyTorch protocol version")
        info = _load_one(f)
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise WeightsError(f"{path}: only little-endian files are supported")
        unpickler = _RestrictedUnpickler(f)
        state = unpickler.load()
        keys = _load_one(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as exc:
        raise WeightsError(f"{path}: not a readable weights file: {exc}") from None
    buffers: dict[str, np.ndarray] = {}
    for key in keys:
        dtype, numel = unpickler.storages[str(key)]
        (count,) = struct.unpack("<q", f.read(8))
        if count != numel:
            raise WeightsError(f"{path}: storage {key} holds {count} elements, its header says {numel}")
        nbytes = count * np.dtype(dtype).itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise WeightsError(f"{path}: truncated (storage {key})")
        buffers[str(key)] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: the file holds a {type(state).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        if not isinstance(t, _Tensor):
            raise WeightsError(f"{path}: entry {name!r} is not a tensor")
        buf = buffers[t.key]
        item = buf.itemsize
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) if all(t.shape) else t.offset
        if t.offset < 0 or (last >= len(buf) and np.prod(t.shape) > 0):
            raise WeightsError(f"{path}: tensor {name!r} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            buf[t.offset :], shape=t.shape, strides=tuple(s * item for s in t.stride), writeable=False
        )
        out[name] = np.ascontiguousarray(view, dtype=buf.dtype.newbyteorder("="))
    return out


def sha256_urlsafe(path: str | Path) -> str:
    """The file's SHA-256 as a wheel's RECORD writes it (urlsafe base64, no padding)."""
    import base64

    digest = hashlib.sha256(Path(path).read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
