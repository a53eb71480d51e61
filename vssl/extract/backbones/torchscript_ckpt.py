"""Read the weights of a TorchScript archive (``torch.jit.save``) without running its code.

OpenAI released CLIP as TorchScript ``.pt`` archives: a zip with ``<name>/data.pkl`` (the module
tree, pickled), ``<name>/data/<key>`` (tensor storages), ``<name>/code/`` (the modules' compiled
Python) and ``<name>/constants.pkl``. ``torch.jit.load`` would compile and run that code, and
``torch.load(weights_only=True)`` refuses such archives, so ``data.pkl`` is read here with an
allow-list unpickler (the "Restricting Globals" recipe of Python's ``pickle`` documentation):

- ``__torch__.*`` classes (the scripted modules) become inert attribute holders; nothing is imported;
- tensors are rebuilt from the archive's raw storages by this module's own code, never by a
  function the file names;
- every other global is refused, naming it (:func:`~.checkpoints.refused_global`).

The module tree is then walked into ``nn.Module.state_dict()``'s names (``visual.conv1.weight``,
``visual.transformer.resblocks.0.attn.in_proj_weight``, ...). Which tensor attributes are weights is
read, as text, from each class's ``__parameters__`` / ``__buffers__`` lines in ``code/``: a scripted
module's other tensor attributes (a text tower's attention mask) are not in a state dict.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from vssl.errors import CheckpointError

from .checkpoints import StateDict, refused_global

# Storage classes as pickled by torch (legacy typed names, still written by torch.jit.save).
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# A class body in code/: ``class Name(Module):`` then its parameter and buffer name lists.
_CLASS_WEIGHTS = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = \[([^\]]*)\]\n"
                            r"(?:  __buffers__ = \[([^\]]*)\]\n)?", re.M)
_MAX_DEPTH = 64  # module nesting; a deeper "tree" is a crafted file, not a model


class _ScriptObject:
    """An instance of a pickled ``__torch__.*`` class: its state, nothing else (no methods run)."""

    qualname = ""

    def __init__(self, *args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:
    """The dtype a pickled ``torch.<X>Storage`` global stands for."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                    *_hooks_and_metadata: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``'s result, from the storage alone (hooks and metadata dropped)."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _first(value: Any, *_type_tag: Any) -> Any:
    return value


# torch.jit._pickle's list builders and type tags take the value and return it (typed).
_JIT_PICKLE = {name: _first for name in ("build_intlist", "build_doublelist", "build_boollist",
                                         "build_tensorlist", "build_genericlist", "restore_type_tag")}
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _first,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch.jit._pickle", name): fn for name, fn in _JIT_PICKLE.items()},
}


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl``: script classes as holders, storages from the archive, nothing else."""

    def __init__(self, archive: zipfile.ZipFile, root: str, path: Path) -> None:
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self.archive, self.root, self.path = archive, root, path
        self.classes: dict[str, type[_ScriptObject]] = {}
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise refused_global(self.path, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """``("storage", <X>Storage, key, location, numel)`` -> the flat tensor over ``data/<key>``."""
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"cannot read {self.path}: unknown persistent record {str(pid)[:80]} in its"
                                  " TorchScript data.pkl; download it again")
        key, dtype = str(pid[2]), pid[1].dtype
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def is_torchscript_archive(path: Path) -> bool:
    """A zip whose top folder holds ``constants.pkl`` or ``code/``: what ``torch.jit.save`` writes.

    ``torch.save``'s zips have ``data.pkl`` and ``data/`` too, but never compiled code.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        inner = [n.split("/", 1)[1] for n in archive.namelist() if "/" in n]
    return any(n == "constants.pkl" or n.startswith("code/") for n in inner)


def read_torchscript_checkpoint(path: Path) -> StateDict:
    """The archive's ``state_dict()``, read without importing or running anything from it."""
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(archive, path)
            _check_byteorder(archive, root, path)
            tree = _WeightsUnpickler(archive, root, path).load()
            weights = _declared_weights(archive, root)
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: truncated or not a TorchScript archive"
                              f" ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__});"
                              " download it again") from None
    if not isinstance(tree, _ScriptObject):
        raise CheckpointError(f"cannot read {path}: its TorchScript data.pkl holds a {type(tree).__name__},"
                              " not a module")
    return _state_dict(tree, weights, "", 0)


def _archive_root(archive: zipfile.ZipFile, path: Path) -> str:
    roots = sorted(n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
    if not roots:
        raise CheckpointError(f"cannot read {path}: a TorchScript archive without data.pkl; download it again")
    return roots[0]


def _check_byteorder(archive: zipfile.ZipFile, root: str, path: Path) -> None:
    """Storages are raw bytes in the writer's byte order (recorded since torch 1.13; before, little)."""
    name = f"{root}/byteorder"
    order = archive.read(name).decode().strip() if name in archive.namelist() else "little"
    if order != sys.byteorder:
        raise CheckpointError(f"cannot read {path}: its tensors are {order}-endian and this machine is"
                              f" {sys.byteorder}-endian; re-save its state_dict() with torch.save")


def _declared_weights(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """``{qualified class name: parameter and buffer names}`` from the ``code/`` files' class headers.

    Only read as text. A class whose header lists no ``__buffers__`` (archives older than that line)
    is left out: all its tensor attributes are taken as weights.
    """
    declared: dict[str, set[str]] = {}
    code = f"{root}/code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        module = name[len(code):-len(".py")].replace("/", ".")
        for match in _CLASS_WEIGHTS.finditer(archive.read(name).decode("utf-8", "replace")):
            if match.group(3) is not None:
                names = re.findall(r'"([^"]+)"', match.group(2) + match.group(3))
                declared[f"{module}.{match.group(1)}"] = set(names)
    return declared


def _state_dict(obj: _ScriptObject, weights: dict[str, set[str]], prefix: str, depth: int) -> StateDict:
    """Walk the module tree: ``prefix + attribute`` for weights, recursing into submodules."""
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"a TorchScript module tree deeper than {_MAX_DEPTH} at {prefix!r}; not a model")
    attrs = obj.state if isinstance(obj.state, dict) else {}
    own = weights.get(obj.qualname)
    out: StateDict = {}
    for name, value in attrs.items():
        if isinstance(value, _ScriptObject):
            out.update(_state_dict(value, weights, f"{prefix}{name}.", depth + 1))
        elif isinstance(value, torch.Tensor) and (own is None or name in own):
            out[f"{prefix}{name}"] = value
    return out
