"""Every probe in one table: adding a probe is one :class:`Probe` entry (:func:`register_probe`).

An entry says what the report calls the probe, which request option (``--knn``, ``--linear``, ...)
switches it on and holds its config, which feature sources it runs on, what it needs loaded,
and how it turns the loaded data into per-video class scores; and what the runner must know of
it: the interval its headline gets, whether it depends on the seed, how its config expands into
rows (a grid reported row by row), how it takes a SCALE run's architecture, and the per-video
vector it reads instead of clips. The runner (:mod:`.run`) only loops over the entries and asks
them; scoring is :func:`~vssl.probe.metrics.row_metrics` for every probe of class scores (a ranking
probe, ``ranks``, reports its own numbers: the retrieval rows, :mod:`.retrieval`).

A probe from outside vssl is an entry point in the ``vssl.probes`` group (as backbones plug in
through ``vssl.backbones``) naming a :class:`Probe` or a function returning one: :func:`load_plugins`
registers it before the command line is built, so its config's fields are ``vssl probe`` flags
and a ``[probe.NAME]`` table (:mod:`.config`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

import numpy as np

from vssl.errors import VsslError

from vssl.progress import ProgressBar

from .common import resolve_device
from .attentive import AttentiveConfig, TokenInputs, chosen_head, evaluate_released, heads_for, train_attentive
from .data import TrainView
from .inputs import ClipInputs
from .knn import KnnConfig, knn_rows, knn_scores, resolve_backend, search_k
from .linear import LinearConfig, train_linear
from .mlp import MlpConfig, train_mlp
from .retrieval import RetrievalConfig, retrieval_rows, run_retrieval, set_token_rows
from .sources import FeatureSource, ProbeData
from .train import FitResult, TrainConfig
from .transformer import (FinetuneConfig, TransformerConfig, box_encoding_of, encoded_boxes, encoded_view,
                          head_input, match_architecture, train_finetune, train_transformer)

#: what a probe can need: every clip in memory (not only each video's k-NN embedding), the
#: clips' boxes, from a SCALE run (so on the "scale" source only) its SET token or its
#: pretrained predictor; "train_view": it fits on ``--train-view``'s clips when one is given;
#: "tokens": it reads a token view's clips (a grid of tokens each) as well as one vector per clip
NEEDS = ("clips", "boxes", "set_token", "scale_model", "train_view", "tokens")
#: the 95% interval of a row's headline (:func:`~vssl.probe.metrics.row_metrics`): a bootstrap over
#: the test videos, or Wilson's score interval of a top-1 proportion (a training-free row: its
#: scores are one fixed function of the test video, so its hits are independent trials)
INTERVALS = ("bootstrap", "wilson")
log = logging.getLogger("vssl.probe")
SCALE_ONLY = frozenset({"set_token", "scale_model"})


@dataclass
class ProbeScores:
    """A probe's output: class scores ``[n_test, C]`` of the test videos, and the row's params
    (its settings and, for trained probes, what model selection chose)."""

    scores: np.ndarray
    params: dict[str, Any]


@dataclass
class ProbeCall:
    """One row to compute: this probe's config on the data, through one feature source."""

    probe: str
    source: FeatureSource
    data: ProbeData
    config: Any
    quiet: bool = False

    def progress(self, what: str, total: int, unit: str = ""):
        """The row's progress bar, e.g. "linear (scale) epochs"."""
        return ProgressBar(f"{what} ({self.source.name}){unit}", total, self.quiet, transient=True)


#: a probe's rows from its config: (config, variant) pairs, the variant naming a row of a grid
#: reported row by row (``k20``), None for a single row; given the config and the request
Expand = Callable[[Any, Any], list[tuple[Any, "str | None"]]]


def one_row(config: Any, request: Any) -> list[tuple[Any, str | None]]:
    """The rows of a probe without a grid reported row by row: its config, once."""
    return [(config, None)]


@dataclass(frozen=True)
class Probe:
    """One probe: its report name, the option that enables it, its sources, needs and runner,
    and what the runner asks of it (see the module docstring)."""

    name: str
    option: str                         # ProbeRequest field (and CLI flag) holding its config
    sources: tuple[str, ...]            # feature sources it runs on: "backbone", "scale"
    config: type                        # its config dataclass
    run: Callable[[ProbeCall], ProbeScores] = field(repr=False)
    needs: frozenset[str] = frozenset()
    interval: str = "bootstrap"         # INTERVALS: what the 95% interval of its headline is
    seeded: bool = True                 # False: the same scores for every seed (computed once); True:
                                        # the config has a ``seed`` field, set per seed of ``--seeds``
    expand: Expand = field(default=one_row, repr=False)
    # (config, the SCALE run's ScaleConfig) -> config, for a probe whose model takes the run's shape
    match_run: Callable[[Any, Any], Any] | None = field(default=None, repr=False)
    # config -> the rule (:data:`~vssl.probe.knn.KNN_RULES`) of the per-video vector the probe reads
    # when it does not need clips: the splits are then reduced to it while reading
    video_rule: Callable[[Any], str] | None = field(default=None, repr=False)
    # a ranking probe (retrieval): its run returns a RetrievalResult, not class scores; the report
    # keeps it apart from the class rows (Report.retrieval) and it is computed once (no seed)
    ranks: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"probe {self.name}: unknown needs {sorted(unknown)}; use {NEEDS}")
        if self.needs & SCALE_ONLY and self.sources != ("scale",):
            raise ValueError(f"probe {self.name}: {sorted(self.needs & SCALE_ONLY)} come from a SCALE run; "
                             "such a probe runs on the 'scale' source only")
        if self.interval not in INTERVALS:
            raise ValueError(f"probe {self.name}: interval {self.interval!r} is unknown; use {INTERVALS}")
        if self.seeded and "seed" not in {f.name for f in fields(self.config)}:
            raise ValueError(f"probe {self.name}: a seeded probe's config needs a 'seed' field")
        if self.ranks and self.seeded:
            raise ValueError(f"probe {self.name}: a ranking probe is computed once; declare seeded=False")
        if "clips" not in self.needs and self.video_rule is None:
            raise ValueError(f"probe {self.name}: a probe that does not need clips reads a per-video vector; "
                             "declare its video_rule")

    def with_seed(self, config: Any, seed: int) -> Any:
        """The config one seed of ``--seeds`` runs (a probe that does not depend on it: unchanged)."""
        return replace(config, seed=seed) if self.seeded else config


# ---------------------------------------------------------------------- how each kind of probe runs


def run_knn(call: ProbeCall) -> ProbeScores:
    """DINO's weighted k-NN on each video's embedding from the source (training-free)."""
    cfg: KnnConfig = call.config
    tr, te, what = call.source.knn_embeddings(call.data, cfg)
    with call.progress("k-NN", len(te)) as advance:
        scores = knn_scores(tr, call.data.train.labels, te, call.data.num_classes, cfg, advance)
    backend = resolve_backend(cfg, resolve_device(cfg.device), search_k(cfg, len(tr)))
    return ProbeScores(scores, {**cfg.params(), "backend": backend, **what})


def clip_head(train_fn: Callable) -> Callable[[ProbeCall], ProbeScores]:
    """A probe that fits a per-clip head (``train_fn``: linear or MLP) on the source's clips and
    averages its softmax over a test video's clips."""
    def run(call: ProbeCall) -> ProbeScores:
        train, test = call.data.train, call.data.test
        (train_x, what), (test_x, _) = call.source.clips(train, call.config), call.source.clips(test, call.config)
        view = fit_view(call, what)
        with call.progress(call.probe, *work(call.config)) as advance:
            result, _ = train_fn(train_x, train.labels, np.arange(len(train_x)), call.data.num_classes,
                                 call.config, advance, train_view=view)
        extra = {} if what is None else {"input": what}
        extra.update(train_view_params(view))
        return scored_fit(result, ClipInputs(test_x, test.labels), call.config, extra)
    return run


def set_probe(train_fn: Callable) -> Callable[[ProbeCall], ProbeScores]:
    """A probe that fits a set model over all clips of a video with their boxes; ``train_fn(call)``
    returns the function that trains it (it may need the source's pretrained predictor). Every
    split's boxes reach the model in the config's box encoding (the run's), each video's
    encoded over its clips in the view they come from."""
    def run(call: ProbeCall) -> ProbeScores:
        train, test, cfg = call.data.train, call.data.test, call.config
        fn = train_fn(call)
        view = encoded_view(train.train_view, cfg)  # set models read the raw clips: any view serves
        with call.progress(call.probe, *work(cfg)) as advance:
            result, inputs = fn(train.features, encoded_boxes(train.boxes, cfg), train.labels,
                                np.arange(len(train.labels)), call.data.num_classes, cfg, advance, train_view=view)
        return scored_fit(result, inputs.like(test.features, encoded_boxes(test.boxes, cfg), test.labels), cfg,
                          {"input": head_input(cfg), "box_encoding": box_encoding_of(cfg),
                           **train_view_params(view)})
    return run


def fit_view(call: ProbeCall, derived: str | None) -> TrainView | None:
    """The training view a clip head fits on: ``--train-view``'s clips where the source's clip
    input is the stored clip itself (``derived`` None); a source that derives its clip inputs
    (SCALE's exported aggregates exist for the probed view only) trains on ``--view`` and says so."""
    view = call.data.train.train_view
    if view is not None and derived is not None:
        log.warning("%s (%s): trains on --view, not --train-view %s: its clip inputs (%s) are exported "
                    "for the probed view only", call.probe, call.source.name, view.name, derived)
        return None
    return view


def train_view_params(view: TrainView | None) -> dict[str, Any]:
    """What the row was fit on: the training view and the clips drawn per video (None: --view)."""
    return {"train_view": None if view is None else view.name, "train_clips": None if view is None else view.clips}


def scored_fit(result: FitResult, test_inputs, cfg: TrainConfig, extra: dict[str, Any]) -> ProbeScores:
    """Score the refit model on every test video, with what model selection chose."""
    scores = test_inputs.predict(result.model, np.arange(len(test_inputs.labels)), resolve_device(cfg.device),
                                 result.precision)
    return ProbeScores(scores[:, 0], {**cfg.params(), "selected": result.params(), **extra})


def run_attentive(call: ProbeCall) -> ProbeScores:
    """The attentive probe over the source's tokens of each video's clips (:mod:`.attentive`): the
    grid trained and one head chosen on held-out training videos, or, given ``checkpoint``
    (``--attentive-from``), a released probe evaluated as it is."""
    cfg: AttentiveConfig = call.config
    train, test = call.data.train, call.data.test
    (train_x, what), (test_x, _) = call.source.tokens(train), call.source.tokens(test)
    extra = {"input": what or "stored clips", "heads_used": heads_for(cfg.num_heads, int(test_x.shape[-1]))}
    if cfg.checkpoint is not None:
        return released_row(call, test_x, extra)
    view = fit_view(call, what)
    with call.progress(call.probe, *work(cfg)) as advance:
        result, inputs = train_attentive(train_x, train.labels, np.arange(len(train.labels)), call.data.num_classes,
                                         cfg, advance, train_view=view, crops=train.crops, grid=train.token_grid)
    extra.update(sample=inputs.describe(), head=chosen_head(result), **train_view_params(view))
    return scored_fit(result, inputs.like(test_x, test.labels, test.crops), cfg, extra)


def released_row(call: ProbeCall, test_x, extra: dict[str, Any]) -> ProbeScores:
    """``--attentive-from``: the released probe's scores on the test videos; nothing is trained or
    selected, so the row's params say so."""
    cfg: AttentiveConfig = call.config
    if call.source.name != "backbone":
        raise VsslError(f"--attentive-from {cfg.checkpoint}: a released probe reads the encoder's tokens; it has "
                        f"no {call.source.name} row: probe without --scale (or without --attentive-from)")
    inputs = TokenInputs(test_x, call.data.test.labels, call.data.test.crops, pos_embed=cfg.use_pos_embed)
    scores = evaluate_released(cfg, inputs, call.data.classes, resolve_device(cfg.device))
    extra.pop("heads_used")
    return ProbeScores(scores, {**cfg.params(), **extra, "trained": False, "selected": None,
                                "head": f"released probe {cfg.checkpoint}", "sample": inputs.describe()})


def work(cfg: TrainConfig) -> tuple[int, str]:
    """What a trained row's progress bar counts, and a first estimate of how many: epochs (the
    selection passes plus the refit), or L-BFGS solves for a solved linear head. The fit corrects
    the total once it knows its budget and held-out parts (``ProgressBar.expect``)."""
    if getattr(cfg, "solver", None) == "lbfgs":
        return len(cfg.l2s) + 1, " solves"
    return cfg.epochs * (2 if cfg.holdout > 0 else 1), " epochs"


def _finetune(call: ProbeCall) -> Callable:
    scale = call.source.scale
    return lambda *args, **kwargs: train_finetune(scale.model, scale.width, *args, **kwargs)


def _retrieval_rule(cfg: RetrievalConfig) -> str:
    """The k-NN rule of a retrieval row's vectors (decided for the request by its expand)."""
    return cfg.rule or "dino"


# ---------------------------------------------------------------------- the registry

_TRAINED = frozenset({"clips", "train_view"})
_SET = frozenset({"clips", "boxes", "train_view"})

PROBES: list[Probe] = [
    # name           option         sources                 config             run                         needs
    Probe("knn",          "knn",         ("backbone", "scale"), KnnConfig,         run_knn,
          interval="wilson", seeded=False, expand=knn_rows, video_rule=lambda cfg: cfg.resolved_rule()),
    Probe("linear",       "linear",      ("backbone",),         LinearConfig,      clip_head(train_linear), _TRAINED),
    Probe("scale_linear", "linear",      ("scale",),            LinearConfig,      clip_head(train_linear),
          _TRAINED | {"set_token"}),
    Probe("mlp",          "mlp",         ("backbone", "scale"), MlpConfig,         clip_head(train_mlp), _TRAINED),
    Probe("transformer",  "transformer", ("backbone",),         TransformerConfig, set_probe(lambda call: train_transformer),
          _SET, match_run=match_architecture),
    Probe("scale_ft",     "finetune",    ("scale",),            FinetuneConfig,    set_probe(_finetune),
          _SET | {"scale_model"}, match_run=match_architecture),
    Probe("attentive",    "attentive",   ("backbone", "scale"), AttentiveConfig,   run_attentive,
          _TRAINED | {"tokens"}),
    Probe("retrieval",    "retrieval",   ("backbone", "scale"), RetrievalConfig,   run_retrieval, frozenset({"tokens"}),
          seeded=False, expand=retrieval_rows, video_rule=_retrieval_rule, ranks=True),
    Probe("retrieval_set", "retrieval",  ("scale",),            RetrievalConfig,   run_retrieval, frozenset({"tokens"}),
          seeded=False, expand=set_token_rows, video_rule=_retrieval_rule, ranks=True),
]
"""The probes in report order (per source). k-NN and MLP read whichever source a row is on: on
"scale", k-NN takes the mean over clips of [C_i ⊕ SET] and the MLP [C_i ⊕ SET] per clip;
SCALE_linear is its own entry because the report names it apart from the backbone's linear
probe. Transformer and SCALE_ft share one config class and model: they differ only in the
initialisation of the set transformer (random vs the --scale run), §4.1; with a run both take its
architecture (:func:`~vssl.probe.transformer.match_architecture`). The attentive probe (V-JEPA 2's)
attends over the backbone's tokens (or clips) of a video, or over SCALE's refined clips Ĉ_i. The
retrieval rows (:mod:`.retrieval`) rank the training videos for each test video with k-NN's vectors:
``retrieval`` on each source (SCALE: [C_i ⊕ SET]) and ``retrieval_set`` (SCALE's SET token alone)."""


def register_probe(probe: Probe) -> Probe:
    """Add ``probe`` at the end of the registry (its rows come after the built-in probes' on each
    source); its option is then a key of :attr:`ProbeRequest.configs <vssl.probe.run.ProbeRequest>`
    unless it is a built-in option. A name already registered is refused."""
    if any(p.name == probe.name for p in PROBES):
        raise VsslError(f"a probe called {probe.name!r} is already registered; choose another name")
    PROBES.append(probe)
    return probe


ENTRY_POINT_GROUP = "vssl.probes"
_plugins_loaded = False


def load_plugins() -> None:
    """Register the probes installed packages declare in :data:`ENTRY_POINT_GROUP`, sorted by
    entry-point name, once. A plugin that cannot be loaded, is not a probe or takes a registered
    name is one clear error, and then none of them is registered (the next call tries again)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    found = [_plugin_probe(ep) for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)]
    names = [p.name for p in (*PROBES, *found)]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise VsslError(f"probe name(s) {', '.join(clash)} registered twice (entry points of {ENTRY_POINT_GROUP}); "
                        "give each probe its own name")
    PROBES.extend(found)
    _plugins_loaded = True


def _plugin_probe(ep: EntryPoint) -> Probe:
    """The :class:`Probe` entry point ``ep`` names (or returns, when it names a function)."""
    where = f"probe plugin {ep.name!r} ({ep.value}, entry point of {ENTRY_POINT_GROUP})"
    try:
        probe = ep.load()
        probe = probe if isinstance(probe, Probe) or not callable(probe) else probe()
    except Exception as exc:  # noqa: BLE001 - whatever a plugin raises, the user sees one line
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise VsslError(f"{where} cannot be loaded ({why}); fix or uninstall the package that declares it") from None
    if not isinstance(probe, Probe):
        raise VsslError(f"{where} is a {type(probe).__name__}, not a vssl.probe.Probe; point it at a Probe "
                        "or a function returning one")
    return probe


def unregister_probe(name: str) -> None:
    """Remove the probe called ``name`` from the registry (e.g. one a test registered)."""
    PROBES.remove(get_probe(name))


def options() -> tuple[str, ...]:
    """The request options (ProbeRequest fields or ``configs`` keys), in the order of the registry."""
    return tuple(dict.fromkeys(p.option for p in PROBES))


def option_config(option: str) -> type:
    """The config class of request option ``option`` (every probe it enables shares it)."""
    classes = {p.config for p in PROBES if p.option == option}
    if len(classes) != 1:
        raise VsslError(f"probe option {option!r} is unknown; options: {', '.join(options())}")
    return classes.pop()


def get_probe(name: str) -> Probe:
    """The registered probe called ``name``; an unknown name is one clear error."""
    for probe in PROBES:
        if probe.name == name:
            return probe
    raise VsslError(f"unknown probe {name!r}; registered probes: {', '.join(p.name for p in PROBES)}")
