"""Reading checkpoint files as they were released, and loading them strictly.

Every family adapter starts from the same flat ``{name: tensor}`` dictionary, whatever the
container: a torch pickle (``.pth``/``.pyth``/``.pt``/``.bin``) whose weights sit under
``model``/``module``/``model_state``/``state_dict``/``teacher``; a safetensors file; a
Hugging Face directory (``config.json`` + weights, possibly sharded); a MindSpore
``.ckpt`` (read by :mod:`.mindspore_ckpt`, no MindSpore needed); or a TorchScript archive
(OpenAI's CLIP releases; read by :mod:`.torchscript_ckpt` without running its code). A pickle
that holds anything but weights is refused, naming what it holds: unpickling it would run code.
Loading is strict because a silently half-loaded backbone produces plausible-looking but meaningless features: any
missing, unexpected or mis-shaped key is a :class:`~vssl.errors.CheckpointError` that names
the first offending keys and the ``--key-map`` escape hatch.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from vssl.errors import CheckpointError, VsslError

StateDict = dict[str, torch.Tensor]
KeyMap = list[tuple[str, str]]

# Containers seen in official releases, in order of preference: DINO-style self-distillation
# (SVT) evaluates the teacher; pySlowFast saves ``model_state``; MCG-NJU/MAE save ``model``;
# V-JEPA saves ``encoder`` and its EMA ``target_encoder``, which the authors' evaluations load.
CONTAINER_KEYS = ("teacher", "model_state", "model", "module", "state_dict", "model_ema", "target_encoder",
                  "encoder")
SHOW_KEYS = 5  # how many offending keys an error message lists


@dataclass
class LoadedCheckpoint:
    """A checkpoint as read from disk: flat tensors plus what the container told us."""

    path: Path
    tensors: StateDict
    format: str  # "torch", "safetensors", "huggingface", "mindspore", "torchscript"
    config: dict[str, Any] = field(default_factory=dict)  # Hugging Face config.json, if any
    container: str = ""  # the key the state dict was found under ("model", "teacher", ...)


# --------------------------------------------------------------------- reading files


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read ``path`` (file or Hugging Face directory) into a flat state dict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        return _read_hf_dir(path)
    suffix = path.suffix.lower()
    if suffix == ".ckpt" and _looks_like_mindspore(path):
        from .mindspore_ckpt import read_mindspore_checkpoint

        return LoadedCheckpoint(path, read_mindspore_checkpoint(path), "mindspore")
    if suffix == ".safetensors":
        return LoadedCheckpoint(path, _read_safetensors(path), "safetensors")
    from .torchscript_ckpt import is_torchscript_archive, read_torchscript_checkpoint

    if is_torchscript_archive(path):
        return LoadedCheckpoint(path, read_torchscript_checkpoint(path), "torchscript")
    obj = _torch_load(path)
    tensors, container = unwrap_state_dict(obj, path)
    return LoadedCheckpoint(path, tensors, "torch", container=container)


def _looks_like_mindspore(path: Path) -> bool:
    # A torch file is a zip ("PK") or an old-style pickle (0x80); MindSpore starts with a
    # protobuf tag for field 1, length-delimited (0x0a).
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x0a"


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: truncated or not a safetensors file ({_first_line(exc)});"
                              " download it again") from None


def _torch_load(path: Path) -> Any:
    # weights_only=True never executes code from the file; the few harmless classes that
    # official releases pickle next to the weights (MCG-NJU/MAE store their argparse
    # Namespace) are allowed explicitly.
    safe: list[Any] = [argparse.Namespace]
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        safe += [np.dtype, np.ndarray, core.multiarray.scalar, core.multiarray._reconstruct]
        safe += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32")]
    except (ImportError, AttributeError):
        pass
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_name(str(exc)) or _foreign_global(path)
        if refused:
            raise refused_global(path, refused) from None
        raise CheckpointError(f"cannot read {path}: truncated or not a PyTorch checkpoint ({_first_line(exc)[:160]});"
                              " download it again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: truncated or not a PyTorch checkpoint"
                              f" ({_first_line(exc)[:160]}); download it again") from None


def refused_global(path: Path | str, name: str) -> CheckpointError:
    """The error for a pickle that names ``name``, a global that is not part of a weights file.

    Unpickling calls what a pickle names (an ``os.system`` in a ``__reduce__``, a training
    script's class), so such a file is refused before anything in it runs. It is not damaged:
    saying "download it again" would send the user after a new copy of the same file.
    """
    return CheckpointError(f"refused {path}: its pickle names {name}, which is not a tensor or a container of"
                           f" tensors (unpickling it would import and call {name}); nothing from the file was run."
                           " If you trust its source, re-save its state_dict() with torch.save")


# torch.load(weights_only=True) names the global it refused: "Unsupported global: GLOBAL
# __main__.Evil was not an allowed global ..." or "unsupported GLOBAL posix.system whose module ...".
_REFUSED_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL ([\w.]+)", re.I)
# Modules whose globals a weights pickle may name (tensor rebuilding, storages, containers, dtypes).
_WEIGHT_MODULES = ("torch", "collections", "numpy", "argparse", "_codecs")


def _refused_name(message: str) -> str:
    match = _REFUSED_GLOBAL.search(message)
    return match.group(1) if match else ""


def _foreign_global(path: Path) -> str:
    """The first global outside torch's and numpy's that a plain (not zip) pickle names, if any.

    torch's safe unpickler stops on opcodes it does not know (a ``pickle.dump`` stream's frames)
    before it meets the globals, so it cannot say what it refused; the opcodes are listed here
    with :func:`pickletools.genops`, which parses without loading anything.
    """
    import pickletools

    if zipfile.is_zipfile(path):
        return ""
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if isinstance(arg, str) and "UNICODE" in op.name:
                    strings.append(arg)
                name = ""
                if op.name in ("GLOBAL", "INST"):
                    name = str(arg).replace(" ", ".")
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    name = f"{strings[-2]}.{strings[-1]}"
                if name and name.split(".")[0] not in _WEIGHT_MODULES:
                    return name
    except (ValueError, EOFError, OSError, pickle.UnpicklingError):
        pass  # not a pickle, or truncated: the caller says so
    return ""


def _read_hf_dir(path: Path) -> LoadedCheckpoint:
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{path} is a directory without config.json; pass a Hugging Face model"
                              " directory or a checkpoint file")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from None
    tensors: StateDict = {}
    for index_name, reader in (("model.safetensors.index.json", _read_safetensors),
                               ("pytorch_model.bin.index.json", _torch_load)):
        index = path / index_name
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            for shard in shards:
                tensors.update(reader(path / shard))
            return LoadedCheckpoint(path, tensors, "huggingface", config=config)
    if (path / "model.safetensors").exists():
        tensors = _read_safetensors(path / "model.safetensors")
    elif (path / "pytorch_model.bin").exists():
        tensors, _ = unwrap_state_dict(_torch_load(path / "pytorch_model.bin"), path)
    else:
        raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin next to config.json")
    return LoadedCheckpoint(path, tensors, "huggingface", config=config)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, path: Path | str = "checkpoint") -> tuple[StateDict, str]:
    """Find the state dict inside a training checkpoint and drop a DDP ``module.`` prefix."""
    container = ""
    for _ in range(4):  # nested containers, e.g. {"model": {"module": {...}}}
        if _is_state_dict(obj):
            break
        if not isinstance(obj, dict):
            raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            # A state dict with a few non-tensor entries (e.g. an int step counter) still counts.
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and len(tensors) >= 0.9 * len(obj):
                obj = tensors
                break
            raise CheckpointError(f"{path}: no state dict found; top-level keys: {_short(obj)}"
                                  f" (expected one of {', '.join(CONTAINER_KEYS)})")
        container = f"{container}.{key}" if container else key
        obj = obj[key]
    else:
        raise CheckpointError(f"{path}: no state dict found in nested containers")
    return strip_prefix(dict(obj), "module."), container


# --------------------------------------------------------------------- key helpers


def strip_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Remove ``prefix`` when every key carries it (a DDP wrapper, a training wrapper)."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def select_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Keys under ``prefix`` with the prefix removed (others dropped)."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def drop_keys(sd: StateDict, patterns: Iterable[str]) -> StateDict:
    """Remove keys matching any regex in ``patterns`` (training-only heads, queues, decoders)."""
    rx = re.compile("|".join(f"(?:{p})" for p in patterns))
    return {k: v for k, v in sd.items() if not rx.match(k)}


def rename_keys(sd: StateDict, rules: Iterable[tuple[str, str]]) -> StateDict:
    """Apply ordered regex renames; every rule is applied to every key (``re.sub``)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for key, value in sd.items():
        for rx, repl in compiled:
            key = rx.sub(repl, key)
        out[key] = value
    return out


def apply_key_map(sd: StateDict, key_map: KeyMap | None) -> StateDict:
    """The user's ``--key-map`` renames: each (pattern, replacement) is a full-key regex match."""
    if not key_map:
        return sd
    compiled = []
    for pattern, repl in key_map:
        try:
            compiled.append((re.compile(pattern), repl))
        except re.error as exc:
            raise VsslError(f"--key-map pattern {pattern!r} is not a valid regex ({exc})") from None
    out: StateDict = {}
    for key, value in sd.items():
        for rx, repl in compiled:  # the first pattern that matches the whole key wins
            match = rx.fullmatch(key)
            if match:
                key = match.expand(repl)
                break
        if not key:  # renamed to "": dropped
            continue
        if key in out:
            raise CheckpointError(f"--key-map maps two checkpoint keys onto {key!r}; make the patterns more specific")
        out[key] = value
    return out


def parse_key_map(specs: Iterable[str] | None) -> KeyMap:
    r"""Parse ``--key-map`` strings ``PATTERN=REPLACEMENT`` (e.g. ``encoder\.(.*)=\1``).

    The pattern must match a whole key; ``\1`` etc. refer to its groups. An empty
    replacement (``head\..*=``) drops the matching keys. The split is on the last ``=`` so
    patterns may contain ``=`` inside groups only if the replacement has none.
    """
    result: KeyMap = []
    for spec in specs or []:
        if "=" not in spec:
            raise VsslError(f"--key-map {spec!r}: expected PATTERN=REPLACEMENT, e.g. 'encoder\\.(.*)=\\1'")
        pattern, _, repl = spec.rpartition("=")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise VsslError(f"--key-map {spec!r}: invalid regex ({exc})") from None
        result.append((pattern, repl))
    return result


# --------------------------------------------------------------------- strict loading


def load_strict(model: nn.Module, sd: StateDict, source: str, family: str,
                file_keys: Iterable[str] | None = None) -> None:
    """Load ``sd`` into ``model``; any missing/unexpected/mis-shaped key is a CheckpointError.

    BatchNorm's ``num_batches_tracked`` counter is not a weight and MindSpore files lack it,
    so it is taken from the model when absent. ``file_keys`` (the file's own names, before the
    adapter) let the error name another family whose layout they match: a file can pass a
    family's adapter (mae_st's fused q/k/v look like VideoMAE's) and still be another family's.
    """
    own = model.state_dict()
    sd = dict(sd)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = own[key]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:SHOW_KEYS])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:SHOW_KEYS])})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (first: {'; '.join(mismatched[:SHOW_KEYS])})")
        hint = family_hint(file_keys if file_keys is not None else sd, family)
        raise CheckpointError(f"{source} does not fit the {family} backbone: {'; '.join(parts)}; {hint}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


# --------------------------------------------------------------------- family recognition

_RECOGNISERS: dict[str, tuple[str, Callable[[set[str]], bool], tuple[str, ...]]] = {}
KEY_MAP_HINT = "rename keys with --key-map 'PATTERN=REPLACEMENT'"


def register_recogniser(family: str, backbone_name: str, recognise: Callable[[set[str]], bool], *,
                        refines: tuple[str, ...] = ()) -> None:
    """Let a family say "this key set is mine", so a wrong-family error can suggest the right one.

    ``refines`` names families whose broader layout this one's files also match (a DINOv2 hub
    file is a timm ViT plus LayerScale): when both recognise a file, the refining family is named.
    """
    _RECOGNISERS[family] = (backbone_name, recognise, refines)


def guess_family(keys: Iterable[str], exclude: str = "") -> tuple[str, str] | None:
    """(family, backbone name) whose layout matches ``keys``, if any, other than ``exclude``.

    Every registered recogniser is tried; a match refined by another match gives way to it.
    """
    key_set = set(keys)
    matches: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family, (name, recognise, refines) in _RECOGNISERS.items():
        try:
            if recognise(key_set):
                matches[family] = (name, refines)
        except Exception:  # a recogniser must never mask the real error
            continue
    refined = {r for _, refines in matches.values() for r in refines}
    best = [f for f in matches if f not in refined] or list(matches)
    if exclude in best:  # the file is the requested family's after all: no other family to suggest
        return None
    return (best[0], matches[best[0]][0]) if best else None


def family_hint(keys: Iterable[str], family: str) -> str:
    """The end of a wrong-file error: the family whose layout ``keys`` match, else ``--key-map``."""
    guess = guess_family(keys, exclude=family)
    return f"it looks like a {guess[0]} checkpoint: use --backbone {guess[1]}" if guess else KEY_MAP_HINT


def wrong_layout(ckpt: LoadedCheckpoint, family: str, layouts: str, sd: StateDict | None = None) -> CheckpointError:
    """The error for a file none of the family's layouts recognise."""
    keys = list((sd if sd is not None else ckpt.tensors).keys())
    hint = family_hint(keys, family)
    return CheckpointError(f"{ckpt.path} is not a {family} checkpoint (known layouts: {layouts});"
                           f" first keys: {', '.join(keys[:SHOW_KEYS])}; {hint}")


# --------------------------------------------------------------------- misc


def _short(obj: dict) -> str:
    keys = list(obj.keys())
    return ", ".join(map(str, keys[:SHOW_KEYS])) + (" ..." if len(keys) > SHOW_KEYS else "")


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (library messages run on for lines)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].split(". ")[0]
