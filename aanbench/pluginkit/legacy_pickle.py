"""Read legacy (pre-1.6, non-zip) ``torch.save`` files without running
anything from them.

A legacy file is a sequence of pickles followed by raw storage bytes::

    pickle 1  magic number (0x1950a86a20f9469cfc6c)
    pickle 2  protocol version (1001)
    pickle 3  sys info {"protocol_version", "little_endian", "type_sizes"}
    pickle 4  the saved object; tensors refer to storages through persistent
              ids ("storage", <torch.XStorage>, key, location, numel, view);
              a whole ``nn.Module`` names its class through a persistent id
              ("module", <class>, source file, source text)
    pickle 5  list of storage keys, in the order their bytes follow
    then, per key: int64 little-endian element count, then the raw
              little-endian element bytes

:func:`load_legacy` unpickles all of it with a restricted unpickler:

- tensors are rebuilt by our own code (never ``torch._utils``) from the
  storage bytes, with bounds checked;
- ``collections.OrderedDict``, ``set`` and ``frozenset`` are rebuilt as themselves;
- every class the file declares as a pickled module (a "module" persistent
  id carrying its source text), and the few torch globals that such modules
  reference (``torch.nn.backends.thnn._get_thnn_function_backend``), become
  inert :class:`Record` objects: a type name, the constructor arguments and
  the attribute dict, nothing callable;
- every other global (``os.system``, ``builtins.eval``, ``subprocess.*``,
  anything not on the allow-list) is refused with
  :class:`~aanbench.contracts.AanbenchError` naming the file and the global,
  before anything from the file is called.

The reader knows nothing about any particular model: it returns a tree of
records, containers, numbers, strings and ``torch.Tensor``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aanbench.contracts import AanbenchError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: torch storage class names (as pickled) -> dtype.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}

#: Plain containers newer torch versions pickle (``_non_persistent_buffers_set``).
_PLAIN_BUILTINS: dict[str, type] = {"set": set, "frozenset": frozenset}

#: Plain (non-module) globals that become inert records when called.
RECORD_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch.nn.backends.thnn", "_get_thnn_function_backend"),
    }
)

#: Top-level packages whose classes are never accepted as pickled-module
#: records, even when a file declares them with source text (only
#: ``torch.nn.modules.*`` is allowed from torch).
_FORBIDDEN_MODULE_ROOTS = frozenset(sys.stdlib_module_names) | {
    "torch", "numpy", "aanbench", "aanbench_plugins", "pickle", "dill", "joblib",
}

_SIZE_CAP_ELEMENTS = 1 << 34  # never allocate beyond the file size anyway


class LegacyCheckpointError(AanbenchError):
    """The file is not a legacy torch checkpoint, or asks for something outside
    the allowed set."""


# --------------------------------------------------------------------------
# Inert records


class Record:
    """An inert stand-in for one pickled object of a class we do not import.

    ``type_name`` is ``"module.QualName"`` as pickled; ``args`` the arguments
    the pickle passed to its constructor; ``state`` what the pickle set as
    its attribute dict (``BUILD``). For a pickled ``nn.Module``, ``source``
    and ``source_file`` hold the class's source text as stored in the file
    (data only: never executed).
    """

    type_name: str = "?"
    source: str | None = None
    source_file: str | None = None

    def __new__(cls, *args: Any) -> "Record":
        obj = object.__new__(cls)
        object.__setattr__(obj, "args", tuple(args))
        object.__setattr__(obj, "state", None)
        return obj

    def __init__(self, *args: Any) -> None:  # REDUCE on a record type calls cls(*args)
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "state", state)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("records are read-only")

    def __reduce__(self):  # never re-pickle a record into something callable
        raise TypeError("records cannot be pickled")

    # -- convenience for pickled nn.Module records --------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The attribute dict (``{}`` when the pickle set none)."""
        return self.state if isinstance(self.state, dict) else {}

    @property
    def class_name(self) -> str:
        return self.type_name.rsplit(".", 1)[-1]

    @property
    def modules(self) -> "OrderedDict[str, Any]":
        """``_modules`` of a pickled ``nn.Module`` (children by name)."""
        m = self.attrs.get("_modules")
        return m if isinstance(m, dict) else OrderedDict()

    @property
    def parameters(self) -> "OrderedDict[str, Any]":
        p = self.attrs.get("_parameters")
        return p if isinstance(p, dict) else OrderedDict()

    @property
    def buffers(self) -> "OrderedDict[str, Any]":
        b = self.attrs.get("_buffers")
        return b if isinstance(b, dict) else OrderedDict()

    def child(self, name: str) -> Any:
        """The child module ``name`` (KeyError when absent)."""
        return self.modules[name]

    def get(self, name: str, default: Any = None) -> Any:
        """A plain attribute (``eps``, ``h``, ``p``...), else ``default``."""
        return self.attrs.get(name, default)

    def __repr__(self) -> str:
        return f"<Record {self.type_name}>"


@dataclass(frozen=True)
class StorageKind:
    """What a pickled ``torch.XStorage`` global turns into: its dtype only."""

    name: str
    dtype: torch.dtype


@dataclass
class LegacyCheckpoint:
    """What :func:`load_legacy` returns.

    ``obj``: the saved object as a tree (records, containers, tensors).
    ``sources``: ``{type_name: source text}`` of every pickled module class.
    ``sys_info``: the writer's sys info dict.
    """

    path: Path
    obj: Any
    sources: dict[str, str]
    source_files: dict[str, str]
    sys_info: dict[str, Any]


# --------------------------------------------------------------------------
# Pre-scan: which globals does the file declare as pickled module classes?


_STRING_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8", "STRING",
               "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _declared_module_classes(data: bytes) -> set[tuple[str, str]]:
    """Globals that appear right after ``MARK 'module'`` (a "module" persistent
    id) in the pickle ``data``. Reads opcodes only; runs nothing."""
    declared: set[tuple[str, str]] = set()
    memo: dict[int, Any] = {}
    last: Any = None  # value of the most recent push, when it is a string
    prev: list[tuple[str, Any]] = []  # (opname, value) of significant ops
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in _PUT_OPS:
            memo[arg] = last
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = last
            continue
        if name in _STRING_OPS:
            val = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            last = val
            prev.append(("STR", val))
        elif name in _GET_OPS:
            last = memo.get(arg)
            prev.append(("STR" if isinstance(last, str) else "GET", last))
        elif name == "GLOBAL":
            module, _, qual = str(arg).partition(" ")
            if len(prev) >= 2 and prev[-1] == ("STR", "module") and prev[-2][0] == "MARK":
                declared.add((module, qual))
            last = None
            prev.append(("GLOBAL", None))
        else:
            last = None
            prev.append((name, None))
        if len(prev) > 4:
            del prev[:-4]
    return declared


def _forbidden_module_class(module: str, name: str) -> bool:
    root = module.split(".", 1)[0]
    if module.startswith("torch.nn.modules.") and name.isidentifier():
        return False
    if root in _FORBIDDEN_MODULE_ROOTS or root.startswith("_"):
        return True
    return not (name.isidentifier() and all(p.isidentifier() for p in module.split(".")))


# --------------------------------------------------------------------------
# The restricted unpickler


class _Refused(LegacyCheckpointError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fp: io.BytesIO, path: Path, *, module_classes: set[tuple[str, str]] | None,
                 storages: dict[str, torch.Tensor] | None, max_storage_bytes: int) -> None:
        super().__init__(fp)
        self._path = path
        self._module_classes = module_classes or set()
        self._storages = storages
        self._max_bytes = max_storage_bytes  # what the file's tail can hold, all storages together
        self._declared_bytes = 0
        self._record_types: dict[tuple[str, str], type[Record]] = {}
        self.sources: dict[str, str] = {}
        self.source_files: dict[str, str] = {}
        self.storage_dtypes: dict[str, torch.dtype] = {}

    # -- globals ------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if self._storages is not None:  # only the object pickle may name globals
            if module == "collections" and name == "OrderedDict":
                return OrderedDict
            if module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS:
                return _PLAIN_BUILTINS[name]
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return self._rebuild_tensor_v2
            if module == "torch._utils" and name == "_rebuild_tensor":
                return self._rebuild_tensor
            if module == "torch._utils" and name == "_rebuild_parameter":
                return _rebuild_parameter
            if module == "torch" and name in STORAGE_DTYPES:
                return StorageKind(name, STORAGE_DTYPES[name])
            if key in RECORD_GLOBALS or (key in self._module_classes
                                         and not _forbidden_module_class(module, name)):
                return self._record_type(module, name)
        raise _Refused(
            f"{self._path}: refused: the pickle asks for global {module}.{name}, which is not in the "
            "allowed set (tensors, storages, plain containers and pickled nn.Module classes as inert records); "
            "nothing from the file was run"
        )

    def _record_type(self, module: str, name: str) -> type[Record]:
        key = (module, name)
        rt = self._record_types.get(key)
        if rt is None:
            rt = type(f"Record[{name}]", (Record,), {"type_name": f"{module}.{name}", "__slots__": ()})
            self._record_types[key] = rt
        return rt

    # -- persistent ids -----------------------------------------------------
    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise _Refused(f"{self._path}: refused: unexpected persistent id in a header pickle")
        if not isinstance(pid, tuple) or not pid or not isinstance(pid[0], str):
            raise LegacyCheckpointError(f"{self._path}: malformed persistent id {type(pid).__name__}")
        kind = pid[0]
        if kind == "module":
            if len(pid) != 4:
                raise LegacyCheckpointError(f"{self._path}: malformed module record")
            cls, source_file, source = pid[1], pid[2], pid[3]
            if not (isinstance(cls, type) and issubclass(cls, Record)):
                raise _Refused(f"{self._path}: refused: a module record names {cls!r}, not a pickled class")
            if not isinstance(source, str) or not isinstance(source_file, (str, type(None))):
                raise LegacyCheckpointError(f"{self._path}: module record of {cls.type_name} lacks source text")
            cls.source = source
            cls.source_file = source_file
            self.sources[cls.type_name] = source
            self.source_files[cls.type_name] = source_file or ""
            return cls
        if kind == "storage":
            return self._storage(pid)
        raise _Refused(f"{self._path}: refused: unknown persistent id kind {kind!r}")

    def _storage(self, pid: tuple) -> torch.Tensor:
        if len(pid) != 6:
            raise LegacyCheckpointError(f"{self._path}: malformed storage record")
        _, kind, key, location, numel, view = pid
        if not isinstance(kind, StorageKind):
            raise _Refused(f"{self._path}: refused: storage record with type {kind!r}")
        if not isinstance(key, str) or not isinstance(location, str):
            raise LegacyCheckpointError(f"{self._path}: malformed storage record")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise LegacyCheckpointError(f"{self._path}: storage {key} has an invalid size {numel!r}")
        itemsize = torch.empty(0, dtype=kind.dtype).element_size()
        assert self._storages is not None
        root = self._storages.get(key)
        if root is None:
            self._declared_bytes += 8 + numel * itemsize  # size header + data
            if numel > _SIZE_CAP_ELEMENTS or self._declared_bytes > self._max_bytes:
                raise LegacyCheckpointError(
                    f"{self._path}: storage {key} claims {numel} elements, more than the file holds (truncated?)")
            root = torch.zeros(numel, dtype=kind.dtype)  # filled from the file's tail after unpickling
            self._storages[key] = root
            self.storage_dtypes[key] = kind.dtype
        elif root.dtype != kind.dtype or root.numel() != numel:
            raise LegacyCheckpointError(f"{self._path}: storage {key} is declared twice with different types")
        if view is None:
            return root
        if (not isinstance(view, tuple) or len(view) != 3 or not isinstance(view[1], int)
                or not isinstance(view[2], int)):
            raise LegacyCheckpointError(f"{self._path}: malformed storage view of {key}")
        _view_key, offset, size = view
        if offset < 0 or size < 0 or offset + size > numel:
            raise LegacyCheckpointError(f"{self._path}: storage view of {key} is out of bounds")
        return root[offset:offset + size]

    # -- tensor rebuilding (ours, not torch._utils) -------------------------
    def _rebuild_tensor_v2(self, storage: Any, storage_offset: Any, size: Any, stride: Any,
                           requires_grad: Any = False, backward_hooks: Any = None, *extra: Any) -> torch.Tensor:
        if extra:
            raise LegacyCheckpointError(f"{self._path}: unexpected tensor metadata {extra!r}")
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
            raise LegacyCheckpointError(f"{self._path}: tensor record without a storage")
        if not _int_tuple(size) or not _int_tuple(stride) or len(size) != len(stride):
            raise LegacyCheckpointError(f"{self._path}: tensor record with malformed size/stride")
        if not isinstance(storage_offset, int) or storage_offset < 0:
            raise LegacyCheckpointError(f"{self._path}: tensor record with a bad offset")
        if any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise LegacyCheckpointError(f"{self._path}: tensor record with negative size or stride")
        if all(s > 0 for s in size):
            last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.numel():
                raise LegacyCheckpointError(f"{self._path}: tensor record reaches beyond its storage")
        return torch.as_strided(storage, tuple(size), tuple(stride), storage_offset)


def _int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)


def _rebuild_parameter(data: Any, requires_grad: Any = True, backward_hooks: Any = None) -> torch.Tensor:
    """A pickled ``nn.Parameter`` becomes its plain data tensor."""
    if not isinstance(data, torch.Tensor):
        raise LegacyCheckpointError("parameter record without a tensor")
    return data


# --------------------------------------------------------------------------
# The file


def _header_load(buf: io.BytesIO, path: Path, what: str) -> Any:
    up = _RestrictedUnpickler(buf, path, module_classes=None, storages=None, max_storage_bytes=0)
    try:
        return up.load()
    except LegacyCheckpointError:
        raise
    except Exception as exc:
        raise LegacyCheckpointError(
            f"{path}: not a legacy torch checkpoint ({what} unreadable: {type(exc).__name__}: "
            f"{str(exc)[:120]})") from None


def _skip_pickle(data: bytes, start: int, path: Path, what: str) -> int:
    """End offset of the pickle starting at ``start`` (reads opcodes only)."""
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        for op, _arg, _pos in pickletools.genops(buf):
            if op.name == "STOP":
                break
    except Exception as exc:
        raise LegacyCheckpointError(
            f"{path}: not a legacy torch checkpoint ({what}: {type(exc).__name__}: {str(exc)[:120]})") from None
    return buf.tell()


def load_legacy(path: str | Path) -> LegacyCheckpoint:
    """Read a legacy ``torch.save`` file as an inert tree; runs nothing from it.

    Tensors come back as CPU ``torch.Tensor`` (whatever device they were saved
    from); pickled classes as :class:`Record`. Raises
    :class:`LegacyCheckpointError` (an ``AanbenchError``) for a file that is
    not such a checkpoint (zip-format torch file, truncated, random bytes) or
    that names a global outside the allowed set.
    """
    path = Path(path)
    if not path.is_file():
        raise LegacyCheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise LegacyCheckpointError(
            f"{path}: is a zip-format torch file (torch >= 1.6), not a legacy (pre-1.6) checkpoint; "
            "only legacy whole-module checkpoints are read here")
    if len(data) > 262 and data[257:262] == b"ustar":
        raise LegacyCheckpointError(f"{path}: is a tar-format torch file (torch < 0.4), not supported")
    if not data[:1] == b"\x80":
        raise LegacyCheckpointError(f"{path}: not a legacy torch checkpoint (does not start with a pickle)")

    buf = io.BytesIO(data)
    magic = _header_load(buf, path, "magic number")
    if magic != MAGIC_NUMBER:
        raise LegacyCheckpointError(f"{path}: not a legacy torch checkpoint (wrong magic number)")
    version = _header_load(buf, path, "protocol version")
    if version != PROTOCOL_VERSION:
        raise LegacyCheckpointError(f"{path}: unsupported legacy torch protocol version {version!r}")
    sys_info = _header_load(buf, path, "sys info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise LegacyCheckpointError(f"{path}: only little-endian legacy checkpoints are supported")

    obj_start = buf.tell()
    obj_end = _skip_pickle(data, obj_start, path, "object pickle")
    keys_buf = io.BytesIO(data)
    keys_buf.seek(obj_end)
    keys = _header_load(keys_buf, path, "storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise LegacyCheckpointError(f"{path}: not a legacy torch checkpoint (bad storage key list)")
    tail_start = keys_buf.tell()

    try:
        declared = _declared_module_classes(data[obj_start:obj_end])
    except Exception as exc:
        raise LegacyCheckpointError(f"{path}: unreadable object pickle ({type(exc).__name__})") from None
    storages: dict[str, torch.Tensor] = {}
    obj_buf = io.BytesIO(data[obj_start:obj_end])
    up = _RestrictedUnpickler(obj_buf, path, module_classes=declared, storages=storages,
                              max_storage_bytes=len(data) - tail_start)
    try:
        obj = up.load()
    except LegacyCheckpointError:
        raise
    except Exception as exc:
        raise LegacyCheckpointError(
            f"{path}: not a readable legacy torch checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from None

    # The storage bytes, in key-list order.
    if sorted(keys) != sorted(storages) or len(set(keys)) != len(keys):
        raise LegacyCheckpointError(f"{path}: storage key list does not match the storages the object uses")
    pos = tail_start
    for key in keys:
        root = storages[key]
        if pos + 8 > len(data):
            raise LegacyCheckpointError(f"{path}: truncated (storage {key} missing)")
        (numel,) = struct.unpack_from("<q", data, pos)
        pos += 8
        if numel != root.numel():
            raise LegacyCheckpointError(
                f"{path}: storage {key} holds {numel} elements, its record says {root.numel()}")
        nbytes = numel * root.element_size()
        if pos + nbytes > len(data):
            raise LegacyCheckpointError(f"{path}: truncated (storage {key} needs {nbytes} bytes)")
        if nbytes:
            raw = torch.frombuffer(bytearray(data[pos:pos + nbytes]), dtype=torch.uint8)
            root.view(torch.uint8).copy_(raw)
        pos += nbytes
    if pos != len(data):
        raise LegacyCheckpointError(f"{path}: {len(data) - pos} unexpected bytes after the last storage")
    return LegacyCheckpoint(path=path, obj=obj, sources=dict(up.sources), source_files=dict(up.source_files),
                            sys_info=sys_info)


def walk_records(obj: Any, prefix: str = "") -> list[tuple[str, Record]]:
    """``(dotted path, record)`` for every :class:`Record` reachable through
    ``_modules`` from ``obj`` (depth first, ``obj`` itself first)."""
    out: list[tuple[str, Record]] = []
    if isinstance(obj, Record):
        out.append((prefix, obj))
        for name, child in obj.modules.items():
            out.extend(walk_records(child, f"{prefix}.{name}" if prefix else str(name)))
    return out
