"""One load sequence for every built-in family (timm's ``build_model_with_cfg``).

read the file -> the family's adapter (recognise the layout, convert names) -> infer the shape
hyper-parameters from the converted state dict -> build -> strict load -> per-frame wrapper for
image encoders. Families only supply an adapter and a model class with
``arch_from_state_dict``; containers, ``--key-map`` and the one-line errors are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vssl.errors import working_on

from .base import Backbone, InputSpec
from .checkpoints import KeyMap, LoadedCheckpoint, StateDict, apply_key_map, load_strict, read_checkpoint
from .per_frame import PerFrame


@dataclass(frozen=True)
class Adapted:
    """What every family adapter returns.

    ``state_dict`` uses the model's own names; ``arch_kwargs`` are what the file says about the
    architecture beyond its tensor shapes (a Hugging Face config's eps or head count); ``notes``
    name the layout recognised, for messages and tests.
    """

    state_dict: StateDict
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


Adapter = Callable[[LoadedCheckpoint, KeyMap | None], Adapted]


def adapt_as_is(ckpt: LoadedCheckpoint, key_map: KeyMap | None = None) -> Adapted:
    """The adapter of a family whose files already use its names (only ``--key-map`` applies)."""
    return Adapted(apply_key_map(ckpt.tensors, key_map))


def build_model_with_cfg(
    checkpoint: Path | None,
    spec: InputSpec,
    *,
    model_cls: type[Backbone],
    adapter: Adapter,
    family: str,
    per_frame: bool = False,
    keep_frames: bool = False,
    default_checkpoint: Callable[[], Path] | None = None,
    key_map: KeyMap | None = None,
    **hints: Any,
) -> Backbone:
    """Build ``model_cls`` as ``checkpoint`` implies and load it strictly.

    ``hints`` (e.g. ``num_heads``; ``None`` = not given) override what the adapter read from the
    file. Without a checkpoint (and no packaged default) the model keeps its own initialisation.
    """
    given = {k: v for k, v in hints.items() if v is not None}
    path = checkpoint or (default_checkpoint() if default_checkpoint is not None else None)
    if path is None:
        model: Backbone = model_cls(spec=spec, **given)
    else:
        with working_on("checkpoint", path):  # the packaged default file too
            ckpt = read_checkpoint(path)
            adapted = adapter(ckpt, key_map)
            sd = adapted.state_dict
            arch = model_cls.arch_from_state_dict(sd, spec, str(path), **{**adapted.arch_kwargs, **given})
            model = model_cls(spec=spec, **arch)
            load_strict(model, sd, str(path), family, file_keys=apply_key_map(ckpt.tensors, key_map).keys())
    if per_frame:
        model = PerFrame(model, keep_frames=keep_frames)
    if path is not None:
        model.checkpoint_path = Path(path)  # what was loaded (the packaged file when none was given)
    return model
