"""Registry of backbone factories, by name, plus third-party plugins.

A name resolves, in order, to: a built-in registered with :func:`register_family` (by its name, or by
its family's name where the family has one built-in: ``image_vit`` is ``image-vit``, ``timesformer``
is ``svt``, :func:`canonical_name`); an entry point in the ``vssl.backbones`` group; or
``package.module:factory``. A store records the registered name, so both spellings resume it. A factory
is called as ``factory(checkpoint=Path | None, spec=InputSpec)`` and returns a
:class:`~vssl.extract.backbones.base.Backbone`. A built-in's factory is the shared
:func:`~.builder.build_model_with_cfg` bound to its family's model class and adapter, and its
entry says what the listing and the store need without building it: width, pooling, per-frame.
"""

from __future__ import annotations

import importlib
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, fields
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from vssl.errors import CheckpointError, VsslError, working_on

from .base import Backbone, InputSpec
from .builder import Adapter, build_model_with_cfg
from .hub_cache import resolve_checkpoint
from .token_encoder import TokenEncoder

BackboneFactory = Callable[..., Backbone]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: how to build it and what it produces.

    ``embed_dim`` is the published width of one embedding (per frame when ``per_frame``), or
    ``None`` where the checkpoint decides (ViT-S/B/L...); ``pooling`` names how the features are
    pooled (:mod:`.pooling`); ``per_frame`` marks an image encoder run on every frame, whose frame
    embeddings are averaged, or concatenated when ``keep_frames``. ``adapter`` is the family's
    checkpoint adapter (``None`` for plugins, whose factory does its own loading). ``tokens`` says what
    token views the family gives: ``"grid+layers"`` (a transformer: its patch tokens and its earlier
    blocks, ``--layers``), ``"grid"`` (a conv net: its last feature map), ``""`` (none, or a plugin's
    unknown until built).
    """

    name: str
    factory: BackboneFactory
    spec: InputSpec
    family: str
    description: str
    needs_checkpoint: bool
    embed_dim: int | None = None
    pooling: str = ""
    per_frame: bool = False
    keep_frames: bool = False
    adapter: Adapter | None = None
    tokens: str = ""

    def clip_dim(self, spec: InputSpec | None = None) -> int | None:
        """Width of one clip embedding under ``spec`` (default: the entry's), if known without a file."""
        if self.embed_dim is None or not self.keep_frames:
            return self.embed_dim
        return self.embed_dim * (spec or self.spec).frames


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str,
    *,
    spec: InputSpec,
    family: str,
    description: str,
    needs_checkpoint: bool = True,
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering a hand-written ``factory`` under ``name`` with its default input spec.

    Deprecated: no built-in uses it. A built-in family registers with :func:`register_family`, a
    third-party backbone through the ``vssl.backbones`` entry-point group or ``package.module:factory``.
    """
    warnings.warn("register_backbone is deprecated: register a built-in family with register_family, or a "
                  "third-party backbone through the vssl.backbones entry-point group", DeprecationWarning,
                  stacklevel=2)

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = BackboneEntry(name, factory, spec, family, description, needs_checkpoint)
        return factory

    return decorate


def register_family(
    name: str,
    *,
    model_cls: type[Backbone],
    adapter: Adapter,
    spec: InputSpec,
    family: str,
    description: str,
    embed_dim: int | None = None,
    per_frame: bool = False,
    keep_frames: bool = False,
    needs_checkpoint: bool = True,
    default_checkpoint: Callable[[], Path] | None = None,
) -> BackboneEntry:
    """Register a built-in built by :func:`build_model_with_cfg` from ``model_cls`` and ``adapter``.

    The entry's pooling is the model class's, so the listing, the store and ``forward`` agree.
    """
    factory = partial(build_model_with_cfg, model_cls=model_cls, adapter=adapter, family=family,
                      per_frame=per_frame, keep_frames=keep_frames, default_checkpoint=default_checkpoint)
    entry = BackboneEntry(name, factory, spec, family, description, needs_checkpoint, embed_dim=embed_dim,
                          pooling=model_cls.pooling, per_frame=per_frame, keep_frames=keep_frames, adapter=adapter,
                          tokens=token_support(model_cls))
    _REGISTRY[name] = entry
    return entry


def token_support(model_cls: type[Backbone]) -> str:
    """What token views a built-in class gives (:attr:`BackboneEntry.tokens`), read from the class: a
    :class:`~.token_encoder.TokenEncoder` reads its blocks, a conv net's map is the base class's default."""
    if issubclass(model_cls, TokenEncoder):
        return "grid+layers"
    return "grid" if model_cls.pooling == "avgpool" else ""


def _load_builtins() -> None:
    # Importing the family modules runs their register_family calls.
    from . import families  # noqa: F401


def _plugin_entry(name: str) -> BackboneEntry | None:
    for ep in entry_points(group="vssl.backbones"):
        if ep.name == name:
            return _entry_from_factory(name, ep.load())
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise VsslError(f"backbone '{name}': cannot import {attr!r} from {module_name!r} ({exc})") from None
        return _entry_from_factory(name, factory)
    return None


def _entry_from_factory(name: str, factory: BackboneFactory) -> BackboneEntry:
    spec = getattr(factory, "spec", InputSpec())
    return BackboneEntry(name, factory, spec, getattr(factory, "family", "plugin"),
                         (factory.__doc__ or "third-party backbone").strip().splitlines()[0], False)


def list_backbones() -> list[BackboneEntry]:
    """Built-ins and installed entry-point plugins, sorted by name."""
    _load_builtins()
    entries = dict(_REGISTRY)
    for ep in entry_points(group="vssl.backbones"):
        if ep.name not in entries:
            try:
                entries[ep.name] = _entry_from_factory(ep.name, ep.load())
            except Exception as exc:  # a broken plugin must not hide the others
                entries[ep.name] = BackboneEntry(ep.name, lambda **_: None, InputSpec(), "plugin",
                                                 f"(failed to load: {exc})", False)
    return [entries[k] for k in sorted(entries)]


def family_aliases() -> dict[str, str]:
    """Family name → built-in name, for each family that has one built-in under another name.

    Backbone names are spelled with ``-`` and families (their modules) with ``_``, and SVT's
    checkpoints are a TimeSformer: a user reading a module or a family gets the built-in it names.
    A family with several built-ins (``slowonly``: 8x8 and 16x4) names none of them.
    """
    _load_builtins()
    by_family: dict[str, list[str]] = {}
    for entry in _REGISTRY.values():
        by_family.setdefault(entry.family, []).append(entry.name)
    return {family: names[0] for family, names in by_family.items()
            if len(names) == 1 and family != names[0] and family not in _REGISTRY}


def canonical_name(name: str) -> str:
    """The registered name ``name`` stands for: itself, or the built-in its family name names
    (what a store records, so that either spelling resumes it)."""
    _load_builtins()
    return name if name in _REGISTRY else family_aliases().get(name, name)


def get_backbone_entry(name: str) -> BackboneEntry:
    _load_builtins()
    name = canonical_name(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = _plugin_entry(name)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise VsslError(f"unknown backbone '{name}'; known: {known} (or package.module:factory)")
    return entry


def create_backbone(
    name: str,
    checkpoint: str | Path | None = None,
    key_map: list[tuple[str, str]] | None = None,
    **spec_overrides,
) -> Backbone:
    """Build the frozen backbone ``name``, loading ``checkpoint`` if given.

    ``key_map`` is a list of (regex, replacement) renames applied to checkpoint keys before
    loading (``--key-map``), for files whose names match no known layout. ``checkpoint`` may be a
    Hugging Face model id (``facebook/dinov2-small``), resolved from the local cache only. ``spec_overrides``
    (frames, stride, size, mean, std; ``None`` = family default) replace the family's spec;
    other keyword arguments (e.g. ``num_heads`` for a ViT whose head count is not the usual
    one) go to the family's factory.
    """
    entry = get_backbone_entry(name)
    path = resolve_checkpoint(checkpoint) if checkpoint is not None else None
    if path is None and entry.needs_checkpoint:
        raise VsslError(f"backbone '{name}' needs --checkpoint PATH (a downloaded file or directory)")
    if path is not None and not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    spec_fields = {f.name for f in fields(InputSpec)}
    kwargs = {k: v for k, v in spec_overrides.items() if k not in spec_fields and v is not None}
    spec = entry.spec.with_overrides(**{k: v for k, v in spec_overrides.items() if k in spec_fields})
    if key_map:
        kwargs["key_map"] = key_map
    try:
        with working_on("checkpoint", path) if path is not None else nullcontext():  # plugins' loading too
            model = entry.factory(checkpoint=path, spec=spec, **kwargs)
    except TypeError as exc:
        if kwargs and "unexpected keyword argument" in str(exc):
            raise VsslError(f"backbone '{name}' does not take {exc}".rstrip()) from None
        raise
    if not isinstance(model, Backbone):
        raise VsslError(f"backbone '{name}': factory returned {type(model).__name__}, not a vssl Backbone")
    return model.freeze()
