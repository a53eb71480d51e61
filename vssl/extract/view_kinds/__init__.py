"""View kinds: one module per kind, a registry, and third-party kinds through entry points.

A kind is a :class:`~.base.SamplerSpec` subclass registered with :func:`~.base.view_kind`
(``KIND:ARGS[:key=value...]`` in ``--views`` then builds it). Built in, one module each (DESIGN.md,
SCALE §3.3 and §4): ``random:K`` (:mod:`.random`), ``uniform:TxS`` (:mod:`.uniform`),
``segment:TxS`` (:mod:`.segment`, with :mod:`.grid`, the grid it shares with ``uniform``) and
``dense:S`` (:mod:`.dense`; a variable count: the ragged layout).

A package adds a kind without editing vssl, as it adds a backbone (``vssl.backbones``): an entry
point in the ``vssl.view_kinds`` group, named as the kind, pointing at the class::

    [project.entry-points."vssl.view_kinds"]
    every = "mypkg.kinds:EveryClips"

It is loaded the first time its name is asked for (:func:`kind_named`), so a broken plugin costs
nothing to runs that do not use it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from vssl.errors import VsslError

# each registers its kind; in this order, the order `--views` help and errors list them in
from . import random  # noqa: F401,I001
from . import uniform  # noqa: F401
from . import segment  # noqa: F401
from . import dense  # noqa: F401
from .base import VIEW_KINDS, Clip, SamplerSpec, VideoGeometry, view_kind

#: the entry-point group third-party view kinds register in
ENTRY_POINT_GROUP = "vssl.view_kinds"

__all__ = ["Clip", "ENTRY_POINT_GROUP", "SamplerSpec", "VIEW_KINDS", "VideoGeometry", "kind_named", "view_kind"]


def kind_named(name: str) -> type[SamplerSpec] | None:
    """The kind called ``name``: a registered one, else an installed ``vssl.view_kinds`` plugin (then
    registered), else None."""
    if name in VIEW_KINDS:
        return VIEW_KINDS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _register_plugin(ep.name, ep.load())
    return None


def _register_plugin(name: str, cls: object) -> type[SamplerSpec]:
    """Register a plugin's class, refusing what is not a view kind of that name (one clear line)."""
    if not (isinstance(cls, type) and issubclass(cls, SamplerSpec)):
        raise VsslError(f"view kind plugin {name!r} ({ENTRY_POINT_GROUP}) is not a SamplerSpec subclass")
    if cls.kind != name:
        raise VsslError(f"view kind plugin {name!r} ({ENTRY_POINT_GROUP}) names its kind {cls.kind!r}; "
                        "the entry point and the class's `kind` must agree")
    return view_kind(cls)
