"""The terms of the stage-two objective (SCALE eq. 8), one module each (:mod:`.base` says what a
term declares). Adding a term: its module, and one line in :data:`BUILTIN_TERMS`, or (outside vssl)
an entry point in the ``vssl.loss_terms`` group naming a :class:`LossTerm` subclass or instance, as
backbones plug in through ``vssl.backbones``. A plugin term's settings become settings of every run;
a run recorded before it was installed reads its weight as 0 (the term is off there).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from vssl.aggregate.terms.base import Encoded, LossTerm, make_head
from vssl.aggregate.terms.mcm import MaskedClipModelling
from vssl.aggregate.terms.set_contrast import SetContrast
from vssl.errors import VsslError

#: the released objective's terms, in the order their settings, parameters, metrics and summary appear
BUILTIN_TERMS: tuple[LossTerm, ...] = (MaskedClipModelling(), SetContrast())

ENTRY_POINT_GROUP = "vssl.loss_terms"


def _plugin_terms() -> tuple[LossTerm, ...]:
    """The terms installed packages declare in :data:`ENTRY_POINT_GROUP`, sorted by entry-point name."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        term = ep.load()
        term = term() if isinstance(term, type) and issubclass(term, LossTerm) else term
        if not isinstance(term, LossTerm):
            raise VsslError(f"entry point {ep.name!r} of {ENTRY_POINT_GROUP} ({ep.value}) is not a LossTerm; "
                            "point it at a vssl.aggregate.terms.LossTerm subclass")
        found.append(term)
    names = [t.name for t in (*BUILTIN_TERMS, *found)]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise VsslError(f"loss term name(s) {', '.join(clash)} registered twice in {ENTRY_POINT_GROUP}; "
                        "give each term its own name")
    return tuple(found)


#: every term: the built-in ones, then the installed plugins
TERMS: tuple[LossTerm, ...] = BUILTIN_TERMS + _plugin_terms()


def term_settings() -> tuple[type, ...]:
    """The terms' settings dataclasses, as bases of :class:`~vssl.aggregate.config.ScaleConfig`
    (the first term's keys first: a dataclass lists its bases' fields in reverse order)."""
    return tuple(reversed([term.Settings for term in TERMS]))


def metric_keys() -> tuple[str, ...]:
    """``loss`` then every term's loss, then every term's top-1: the per-epoch metrics."""
    return ("loss", *(t.metric_keys[0] for t in TERMS), *(t.metric_keys[1] for t in TERMS))


def pretraining_parts() -> tuple[str, ...]:
    """Attribute names of every parameter a term adds to the model: pre-training only."""
    return tuple(name for term in TERMS for name in term.parts)


def absent_from_old_runs() -> dict[str, float]:
    """Weight 0 for every plugin term: how a run recorded without its key read it (it was off)."""
    return {term.weight_key: 0.0 for term in TERMS if term not in BUILTIN_TERMS}


__all__ = ["TERMS", "BUILTIN_TERMS", "ENTRY_POINT_GROUP", "LossTerm", "Encoded", "make_head", "term_settings",
           "metric_keys", "pretraining_parts", "absent_from_old_runs"]
