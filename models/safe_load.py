"""Read a ``torch.save`` or TorchScript file without running any code from it.

A PyTorch file is a zip of one pickle (``data.pkl``) and the raw tensor storages. An
ordinary unpickler imports and calls whatever the pickle names, so a file can run
``os.system``; ``torch.load(weights_only=True)`` is safe but refuses the files people
actually have (PitVQA pickles its whole model object; OpenAI's CLIP is TorchScript).

Here every name the pickle asks for is one of three things:
- a tensor rebuilder or a plain container (``_rebuild_tensor_v2``, ``OrderedDict``, ``set``,
  dtypes, ...): the real one, since it only assembles data;
- a name that exists to run code (``os.system``, ``builtins.eval``, ``subprocess.*``,
  ``torch.load``, ...): a pickle that calls it is refused with :class:`UnsafeFile`, and
  the real one is never imported, so nothing has run;
- anything else (model classes, configs, tokenizers, ``re._compile``): an inert
  :class:`Record` that keeps the arguments and state it was given and does nothing else.

``state_dict`` then walks the records of a pickled ``nn.Module`` (eager or TorchScript)
to the ``name -> tensor`` mapping ``module.state_dict()`` would have given.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import zipfile
from pathlib import Path

import torch


class UnsafeFile(ValueError):
    """The file names something that runs code; nothing from it was run."""


class Record:
    """An inert stand-in for an object of a class the pickle named: it keeps the
    constructor arguments, the ``__setstate__`` state and any items, and runs nothing."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        record = object.__new__(cls)
        record.args, record.state, record.items = args, None, {}
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.items[len(self.items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def __repr__(self):
        return f"<inert {self.qualname}>"


class _Refused(Record):
    """A name that exists to run code: referencing it is inert, calling it refuses the file."""

    def __new__(cls, *args, **kwargs):
        raise UnsafeFile(f"it asks to call {cls.qualname}")


class _StorageType:
    """What a pickle's ``torch.FloatStorage`` (etc.) turns into: just its dtype."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, for plain text codecs only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in (
        "latin1",
        "utf8",
        "ascii",
    ):
        raise UnsafeFile(f"it asks to encode with {encoding!r:.40}")
    return text.encode(encoding)


def _rebuild_from_type_v2(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2`` without the subclass: a plain tensor."""
    return func(*args)


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("_codecs", "encode"): _encode,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # TorchScript's list and type-tag builders: each returns its data argument.
    **{
        ("torch.jit._pickle", name): (lambda data, *_: data)
        for name in (
            "build_intlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
            "build_complexlist",
            "restore_type_tag",
        )
    },
    **{
        ("builtins", t.__name__): t
        for t in (
            set,
            frozenset,
            list,
            dict,
            tuple,
            slice,
            complex,
            bytearray,
            bytes,
            int,
            float,
            str,
            bool,
            range,
        )
    },
}
# Modules whose names exist to run code, touch files or processes, or load more pickles.
_REFUSED_MODULES = {
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "builtins",
    "__builtin__",
    "importlib",
    "runpy",
    "shutil",
    "socket",
    "pty",
    "code",
    "codeop",
    "ctypes",
    "marshal",
    "pickle",
    "_pickle",
    "dill",
    "webbrowser",
    "multiprocessing",
    "signal",
    "types",
    "tempfile",
    "asyncio",
    "platform",
    "pathlib",
    "io",
    "_io",
    "commands",
    "popen2",
    "timeit",
    "pdb",
    "bdb",
    "inspect",
    "operator",
    "functools",
    "torch.hub",
    "torch.jit",
    "torch._C",
    "torch.ops",
    "torch.serialization",
    "numpy.lib.npyio",
    "numpy.testing",
}
_REFUSED_NAMES = {
    ("torch", "load"),
    ("torch", "save"),
    ("numpy", "load"),
    ("torch", "_load_global_deps"),
}


def _refused(module: str, name: str) -> bool:
    top = module.split(".")
    return (module, name) in _REFUSED_NAMES or any(
        ".".join(top[:i]) in _REFUSED_MODULES for i in range(1, len(top) + 1)
    )


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages):
        super().__init__(io.BytesIO(data))
        self._storages = storages  # key -> bytes of one storage record
        self._records: dict[str, type] = {}

    def find_class(self, module, name):
        # Protocol-2 pickles use Python 2's names (__builtin__.set): map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        qualname = f"{module}.{name}"
        if qualname not in self._records:
            # A name that runs code may still be referenced as a value (HF models keep
            # torch._C._nn.gelu as an attribute); calling it is what gets the file refused.
            base = _Refused if _refused(module, name) else Record
            self._records[qualname] = type(
                name, (base,), {"qualname": qualname, "__module__": "inert"}
            )
        return self._records[qualname]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeFile(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else storage_type
        if not isinstance(dtype, torch.dtype):
            raise UnsafeFile(f"storage of unknown type {storage_type!r:.80}")
        raw = self._storages(str(key))
        untyped = (
            torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage()
            if raw
            else torch.UntypedStorage(0)
        )
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def load(path: str | Path):
    """The object a ``torch.save`` / TorchScript zip file holds, with tensors rebuilt and
    every other class an inert :class:`Record`. Raises :class:`UnsafeFile` for a file that
    names code to run, ``ValueError`` for one that is not a PyTorch zip archive."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a PyTorch zip archive (torch.save since 1.6, or TorchScript)"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise ValueError(f"{path} holds no data.pkl: not a PyTorch archive")
        root = pickles[0][: -len("data.pkl")]
        byteorder = (
            archive.read(root + "byteorder").decode() if root + "byteorder" in names else "little"
        )
        if byteorder != "little":
            raise ValueError(f"{path}: big-endian archives are not supported")

        def storage(key: str) -> bytes:
            return archive.read(f"{root}data/{key}")

        try:
            return _Unpickler(archive.read(pickles[0]), storage).load()
        except UnsafeFile:
            raise
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: unreadable pickle ({type(err).__name__}: {err})") from None


def _module_state(record, prefix: str, out: dict) -> None:
    """Collect one pickled module's tensors into ``out`` as ``state_dict`` would."""
    state = record.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]  # (dict, slots)
    if not isinstance(state, dict):
        return
    if "_parameters" in state or "_modules" in state:  # an eager nn.Module's __dict__
        skipped = set(state.get("_non_persistent_buffers_set") or ())
        for name, tensor in (state.get("_parameters") or {}).items():
            if isinstance(tensor, torch.Tensor):
                out[prefix + name] = tensor.detach()
        for name, tensor in (state.get("_buffers") or {}).items():
            if isinstance(tensor, torch.Tensor) and name not in skipped:
                out[prefix + name] = tensor
        for name, child in (state.get("_modules") or {}).items():
            if isinstance(child, Record):
                _module_state(child, f"{prefix}{name}.", out)
        return
    for name, value in state.items():  # a TorchScript module: attributes by name
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
        elif isinstance(value, Record):
            _module_state(value, f"{prefix}{name}.", out)


def state_dict(obj) -> dict[str, torch.Tensor]:
    """``name -> tensor`` of a loaded object: a plain state dict as it is, or the state of
    a pickled module (eager or TorchScript) as ``module.state_dict()`` would give it."""
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Record):
        out: dict[str, torch.Tensor] = {}
        _module_state(obj, "", out)
        return out
    raise ValueError(f"expected a state dict or a pickled module, found {type(obj).__name__}")


def record_attrs(record) -> dict:
    """The attribute dict of an inert record (``{}`` when it has none)."""
    state = record.state if isinstance(record, Record) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    return state if isinstance(state, dict) else {}


def read(path: str | Path):
    """The object in a PyTorch file: a zip archive through :func:`load`, the pre-1.6 format
    through torch's own weights-only reader (safe for it). Nothing in the file runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return load(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: not a file torch can read safely
        raise ValueError(
            f"{path}: not a PyTorch file that can be read without running code "
            f"({type(err).__name__})"
        ) from None
