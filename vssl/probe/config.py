"""The settings of `vssl probe`, declared once: each field is a config key and a CLI flag.

:class:`ProbeConfig` is what a user sets; :meth:`ProbeConfig.request` turns it into the
:class:`~vssl.probe.run.ProbeRequest` the runner takes (one config per enabled probe
option, the shared training flags fixing that value in every trained probe).

A probe's own settings are its config's fields (:class:`~vssl.probe.knn.KnnConfig`,
:class:`~vssl.probe.linear.LinearConfig`, ...: declared once, with the probe), set for that
probe alone in a ``[probe.NAME]`` TOML table (NAME: its option, ``knn``, ``linear``, ... or a
registered probe's); a table enables its probe and wins over the flat ``[probe]`` keys of the
file, which set every probe that has the setting; a flag wins over both (flags > file > defaults).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, get_type_hints

from vssl.aggregate.boxes import BOX_ENCODINGS
from vssl.errors import VsslError
from vssl.settings import Settings, is_flag, setting, setting_help, settings_options

from .knn import KNN_RULES, KnnConfig
from .registry import load_plugins, option_config, options
from .retrieval import RetrievalConfig
from .run import ProbeRequest
from .train import TrainConfig, with_defaults

#: Named grids for ``--grid``. ``default`` keeps each probe's own CPU-sized grid (its config's
#: defaults). ``scale`` is SCALE's probe protocol at full size: the axes the released eval exposes
#: (Separius/SCALE src/eval.py:66-75 --lr/--wd/--batch_size/--epochs/--warmup_percentage/--adam;
#: src/train.py:158-164 AdamW or SGD with momentum 0.9, warm-up then cosine), each swept around
#: its released default: lr 3e-4 (eval.py:66), wd 0 (eval.py:67) and 1e-4 (train.py:31, the value
#: eval.py:308 really trains with), batch 512 (eval.py:69), 60 epochs (eval.py:70), 5% warm-up
#: (eval.py:71). docs/DESIGN_NOTES.md gives its measured cost, the reason it is not the default.
#: Under ``scale`` linear heads are trained by minibatch steps as released, not solved (``--solver``).
GRIDS: dict[str, dict] = {
    "default": {},
    "scale": {"lrs": (1e-4, 3e-4, 1e-3), "weight_decays": (0.0, 1e-4), "batch_sizes": (256, 512),
              "optimizers": ("adamw", "sgd"), "epochs": 60, "warmup": 0.05, "solver": "minibatch"},
}


@dataclass
class ProbeConfig(Settings):
    """What `vssl probe` runs and how; no probe flag = k-NN + linear.

    The training settings left unset (``None``) keep each trained probe's own default.
    """

    SECTION = "probe"

    view: str = setting("uniform5x3", "view of the store to probe")
    train_split: str = setting("train", "split the probes are trained on")
    train_view: str | None = setting(None, "view trained probes fit on (e.g. random16); selection and test "
                                           "read --view")
    train_clips: int = setting(8, "clips of a --train-view video drawn at random per step (released: 8 of 16)")
    test_split: str = setting("test", "split the accuracies are measured on")
    # -- probe options (each enables the registry's probes of that option)
    knn: bool = setting(False, "weighted k-NN (DINO), training-free", flag="--knn")
    linear: bool = setting(False, "linear head per clip, averaged over clips", flag="--linear")
    mlp: bool = setting(False, "MLP head per clip, averaged over clips", flag="--mlp")
    transformer: bool = setting(False, "SCALE architecture from random init, supervised", flag="--transformer")
    finetune: bool = setting(False, "SCALE_ft: fine-tune the --scale run with a linear head", flag="--finetune")
    attentive: bool = setting(False, "attentive probe (V-JEPA 2's): cross-attention over a video's tokens (a "
                                     "token view) or clips, its 20-head grid", flag="--attentive")
    attentive_from: str | None = setting(None, "evaluate a released attentive probe (vjepa2 probe checkpoint or HF "
                                               "VJEPA2ForVideoClassification dir) instead of training; implies "
                                               "--attentive")
    attentive_head: int | None = setting(None, "--attentive-from a vjepa2 checkpoint: which of its heads (default 0, "
                                               "the first)")
    retrieval: bool = setting(False, "retrieval rows: test videos query the training videos (R@k, mAP) with k-NN's "
                                     "video vectors, exact, training-free", flag="--retrieval")
    scale: str | None = setting(None, "SCALE run directory: add rows on its features")
    low_shot: float | None = setting(None, "train on a class-balanced fraction, e.g. 0.1")
    target: str | None = setting(None, "probe a numeric manifest column (regression: MSE, R²) instead of the classes")
    # -- the retrieval figure
    gallery: str | None = setting(None, "draw test queries and their top-5 neighbours (middle frames, green/red "
                                        "border: same/other class) to this PNG; implies --retrieval")
    gallery_queries: int = setting(8, "--gallery: queries drawn, spread evenly over the test split")
    video_root: str | None = setting(None, "--gallery: the folder the store's videos are under now (default: the "
                                           "one they were extracted from)")
    # -- k-NN
    k: int = setting(20, "k-NN neighbours", flag="--k")
    knn_k: str | None = setting(None, "k-NN: a row per k, comma-separated (DINO: 10,20,100,200); overrides --k")
    temperature: float = setting(0.07, "k-NN vote temperature")
    knn_rule: str | None = setting(None, "k-NN video vector, one rule for every k-NN row: dino (mean of l2-normalized "
                                         "clips, uncentred) or released (raw mean, centred; released eval.py); "
                                         "default: released with --scale, dino without")
    center: bool | None = setting(None, "k-NN: subtract the training mean first (default: the rule's: released on, "
                                        "dino off)", flag="--center/--no-center")
    knn_features: str = setting("clip_set", "k-NN on SCALE: clip_set (mean of [C_i, SET]) or set (SET token)")
    knn_backend: str = setting("auto", "k-NN search: auto, faiss or torch")
    knn_precision: str = setting("fp32", "k-NN: fp32, or bf16 shortlist + exact re-rank (torch)")
    # -- retrieval
    retrieval_k: str | None = setting(None, "retrieval: the R@k cut-offs, comma-separated (default 1,5,10,20,50)")
    # -- trained probes
    grid: str = setting("default", "named grid of trained probes: default (CPU-sized) or scale (SCALE's protocol)")
    lr: tuple[float, ...] | None = setting(None, "learning rate(s) of the grid (repeatable)", flag="--lr")
    weight_decay: tuple[float, ...] | None = setting(None, "weight decay(s) (repeatable)")
    epochs: int | None = setting(None, "training epochs (the most; the best is selected)")
    batch_size: tuple[int, ...] | None = setting(None, "minibatch size(s) of trained probes (repeatable)")
    optimizer: tuple[str, ...] | None = setting(None, "adamw or sgd (repeatable: both are searched)")
    warmup: float | None = setting(None, "fraction of the steps of linear warm-up before the cosine")
    holdout: float | None = setting(None, "fraction of the train split used for selection")
    holdout_min: int | None = setting(None, "videos selection scores on at least: disjoint held-out parts in "
                                            "turn when one --holdout part holds fewer (linear heads: 100; "
                                            "trained heads: 0, each part is one more training)")
    min_steps: int | None = setting(None, "optimizer steps a trained head takes at least, however small the "
                                          "split (default 500): the batch shrinks, then epochs are added")
    solver: str | None = setting(None, "linear heads: lbfgs (solved to convergence, the default) or minibatch "
                                       "(trained like the other heads, as the released eval)")
    l2: tuple[float, ...] | None = setting(None, "linear heads solved by lbfgs: the λ path of the penalty "
                                                 "λ/2·||W||² on the mean clip loss (repeatable; λ = 1/(C·clips))",
                                           flag="--l2")
    max_iter: int | None = setting(None, "linear heads solved by lbfgs: L-BFGS iterations per λ at most (1000)")
    tolerance: float | None = setting(None, "linear heads solved by lbfgs: converged when no gradient component "
                                            "exceeds this (1e-5)")
    batchnorm: bool = setting(False, "batch norm without affine before linear/MLP heads", flag="--batchnorm")
    append_refined: bool = setting(False, "SCALE_linear on [C_i, Ĉ_i, SET] instead of [C_i, SET]",
                                   flag="--append-refined")
    standardize: bool | None = setting(None, "Transformer/SCALE_ft: standardize the clips by the training clips' "
                                             "mean/std (default on; not in the released head)",
                                       flag="--standardize/--no-standardize")
    box_encoding: str | None = setting(None, "Transformer without --scale: absolute or released boxes (with --scale: "
                                             "the run's)")
    # -- run
    seed: int = setting(0, "seed of low-shot subsets, splits and training")
    seeds: int = setting(1, "train every trained probe (and draw low-shot subsets) with seeds --seed.. "
                            "--seed+N-1: mean, std and each seed's value")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    precision: str = setting("auto", "trained probes: auto (bf16 where fast), bf16 or fp32")
    quiet: bool = setting(False, "no progress bars", flag="--quiet")
    log_dir: str | None = setting(None, "trained probes: TensorBoard event files here, a folder per row and seed "
                                        "(each head's loss and lr per step, held-out scores; needs "
                                        "pip install 'vssl[tensorboard]')")
    # -- per probe: [probe.NAME] tables (option -> its config's fields), TOML only
    tables: dict = setting(default_factory=dict, help="per-probe settings ([probe.NAME] tables)", cli=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProbeConfig":
        """As :meth:`Settings.from_dict`, with each ``[probe.NAME]`` table (a dict value; dashes in
        its keys read as underscores) gathered into ``tables``."""
        data = dict(data)
        tables = dict(data.pop("tables", None) or {})
        for key in [k for k, v in data.items() if isinstance(v, dict)]:
            tables[key] = {name.replace("-", "_"): value for name, value in data.pop(key).items()}
        return super().from_dict({**data, "tables": tables})

    @classmethod
    def from_table(cls, data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   base: "ProbeConfig | None" = None) -> "ProbeConfig":
        """As :meth:`Settings.from_table`, with the file's ``[probe.NAME]`` tables set apart first: a
        probe's table and its flag share a name (``[probe.knn]``, ``--knn``), and the flag must enable
        the probe, not replace its table."""
        tables = {name.replace("-", "_"): {key.replace("-", "_"): value for key, value in table.items()}
                  for name, table in data.items() if isinstance(table, dict)}
        rest = {key: value for key, value in data.items() if not isinstance(value, dict)}
        if tables:
            rest["tables"] = {**(base.tables if base is not None else {}), **tables}
        return super().from_table(rest, overrides, base)

    @classmethod
    def load(cls, config: str | Path | None, overrides: Mapping[str, Any] | None = None,
             base: "ProbeConfig | None" = None) -> "ProbeConfig":
        """As :meth:`Settings.load`; a flag also wins over the ``[probe.NAME]`` tables of the file:
        it sets its field in every table of a probe that has it (flags > file > defaults). The
        flags of a probe whose option is not a setting here (:func:`probe_flags`) set its table."""
        flags = probe_flags()
        overrides = dict(overrides or {})
        own = {name: overrides.pop(name) for name in list(overrides) if name in flags}
        cfg = super().load(config, overrides, base)
        tables = {option: {**table, **cfg.flat_fields(option, overrides)} for option, table in cfg.tables.items()}
        for name, value in own.items():            # a probe's own flag: its table's key, over the flat flags
            option, key = flags[name]
            table = tables.setdefault(option, {})
            if key is not None:
                table[key] = value
        return cfg.replace(tables=tables) if tables != cfg.tables else cfg

    def coerce(self) -> None:
        """A single value (TOML ``batch-size = 64``, the Python API) is a grid of one."""
        for key in ("lr", "weight_decay", "batch_size", "optimizer", "l2"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, (tuple, list)):
                setattr(self, key, (value,))

    def derive(self) -> None:
        """A released probe to evaluate enables the attentive probe; a retrieval figure, the retrieval rows."""
        if self.attentive_from is not None:
            self.attentive = True
        if self.gallery is not None:
            self.retrieval = True

    def validate(self) -> None:
        load_plugins()
        if self.grid not in GRIDS:
            self.bad("grid", f"is unknown; use one of {', '.join(GRIDS)}")
        if self.train_clips < 1:
            self.bad("train_clips", "must be at least 1")
        if self.k < 1 or self.temperature <= 0:
            raise VsslError("--k must be at least 1 and --temperature positive (DINO: k=20, T=0.07)")
        if self.seeds < 1:
            self.bad("seeds", "must be at least 1")
        if self.gallery_queries < 1:
            self.bad("gallery_queries", "must be at least 1")
        if self.knn_rule is not None and self.knn_rule not in KNN_RULES:
            self.bad("knn_rule", f"is unknown; use one of {', '.join(KNN_RULES)}")
        if self.attentive_from is not None and self.scale is not None:
            raise VsslError(f"--attentive-from {self.attentive_from} evaluates a released probe of the encoder's "
                            "tokens; it has no SCALE row: run it without --scale")
        if self.box_encoding is not None and self.box_encoding not in BOX_ENCODINGS:
            self.bad("box_encoding", f"is unknown; use one of {', '.join(BOX_ENCODINGS)}")
        self.knn_ks()
        self.retrieval_ks()
        for option, table in self.tables.items():
            self.table_config(option, table)

    def table_config(self, option: str, table: Mapping[str, Any], base: Any = None) -> Any:
        """The config of probe ``option`` with its ``[probe.NAME]`` table over ``base`` (default: the
        config's defaults); a table of no probe, or a key its config lacks, is one clear error."""
        if option not in options():
            raise VsslError(f"probe config: table probe.{option} names no probe; the probe tables: "
                            f"{', '.join(f'probe.{o}' for o in options())}")
        config = base if base is not None else option_config(option)()
        known = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise VsslError(f"probe config: table probe.{option} has unknown key(s) {', '.join(unknown)}; "
                            f"its keys: {', '.join(sorted(known))}")
        return with_defaults(config, **typed_table(option, type(config), table))

    def knn_ks(self) -> tuple[int, ...]:
        """``--knn-k 10,20,100,200`` as a tuple of k (empty: the single ``--k``)."""
        if not self.knn_k:
            return ()
        try:
            ks = tuple(int(k) for k in str(self.knn_k).split(",") if k.strip())
        except ValueError:
            ks = ()
        if not ks or min(ks) < 1:
            raise VsslError(f"--knn-k {self.knn_k}: give positive integers separated by commas, e.g. 10,20,100,200")
        return tuple(dict.fromkeys(ks))

    def retrieval_ks(self) -> tuple[int, ...]:
        """``--retrieval-k 1,5,10`` as a tuple (empty: the config's, 1,5,10,20,50)."""
        if not self.retrieval_k:
            return ()
        try:
            ks = tuple(int(k) for k in str(self.retrieval_k).split(",") if k.strip())
        except ValueError:
            ks = ()
        if not ks or min(ks) < 1:
            raise VsslError(f"--retrieval-k {self.retrieval_k}: give positive integers separated by commas, "
                            "e.g. 1,5,10,20,50")
        return ks

    def enabled(self) -> tuple[str, ...]:
        """The probe options to run: those given, else k-NN and linear."""
        chosen = tuple(o for o in options() if getattr(self, o, False) or o in self.tables
                       or (o == "retrieval" and self.retrieval_k))      # --retrieval-k asks for retrieval rows
        return chosen or ("knn", "linear")

    def knn_config(self) -> KnnConfig:
        return KnnConfig(**self.flat_fields("knn"))

    def config_for(self, option: str) -> Any:
        """Probe option ``option``'s config: the flat settings (k-NN's, or the training ones), then its
        ``[probe.NAME]`` table; a registered probe's: its config's defaults under its table."""
        if option == "knn":
            base = self.knn_config()
        elif option == "retrieval":
            base = RetrievalConfig(**self.flat_fields("retrieval"))
        elif issubclass(option_config(option), TrainConfig):
            base = self.train_config(option)
        else:
            base = None
        return self.table_config(option, self.tables.get(option, {}), base)

    def train_config(self, option: str) -> TrainConfig:
        """Option ``option``'s config (the registry's class): its defaults, under the named
        ``--grid``, under the training settings that are set; the options only some configs have
        (``--batchnorm``, ``--solver``, ...) where the config has them. One
        ``--batch-size``/``--optimizer`` fixes it, several are searched."""
        default = option_config(option)()
        return with_defaults(default, **own_fields(default, self.flat_fields(option)))

    def flat_fields(self, option: str, given: Iterable[str] | None = None) -> dict[str, Any]:
        """The fields of probe option ``option``'s config that the flat settings set (only the
        settings named in ``given``, e.g. the flags, when given), later ones over earlier ones;
        a setting left unset (``None``) sets nothing."""
        config = option_config(option)
        if option == "knn":
            sources = self.knn_sources()
        elif option == "retrieval":
            sources = self.retrieval_sources()
        elif issubclass(config, TrainConfig):
            sources = self.train_sources()
        else:
            return {}
        fields: dict[str, Any] = {}
        for name, values in sources:
            if given is None or name in given:
                fields.update({k: v for k, v in own_fields(config, values).items() if v is not None})
        return fields

    def knn_sources(self) -> list[tuple[str, dict[str, Any]]]:
        """(setting, the :class:`KnnConfig` fields it sets) pairs."""
        return [("k", {"k": self.k}), ("temperature", {"temperature": self.temperature}),
                ("knn_rule", {"rule": self.knn_rule}), ("center", {"center": self.center}),
                ("knn_features", {"features": self.knn_features}), ("knn_backend", {"backend": self.knn_backend}),
                ("knn_precision", {"precision": self.knn_precision}), ("device", {"device": self.device})]

    def retrieval_sources(self) -> list[tuple[str, dict[str, Any]]]:
        """(setting, the :class:`RetrievalConfig` fields it sets) pairs: the k-NN rule and centring
        (one rule for k-NN and retrieval rows), the device and the cut-offs. ``--knn-features``
        stays k-NN's: on SCALE the retrieval rows are both (``retrieval`` and ``retrieval_set``)."""
        return [("knn_rule", {"rule": self.knn_rule}), ("center", {"center": self.center}),
                ("device", {"device": self.device}), ("retrieval_k", {"ks": self.retrieval_ks() or None})]

    def train_sources(self) -> list[tuple[str, dict[str, Any]]]:
        """(setting, the training config fields it sets) pairs, the named ``--grid`` first; the
        settings only some probe configs have (unset: ``None``): the batch norm of linear and MLP
        heads, the linear solver's, ``--append-refined`` (SCALE_linear's row definition), and the
        set probes' ``--standardize/--no-standardize`` and ``--box-encoding``."""
        return [("grid", GRIDS[self.grid]), ("lr", {"lrs": self.lr or None}),
                ("weight_decay", {"weight_decays": self.weight_decay or None}), ("epochs", {"epochs": self.epochs}),
                ("batch_size", _axis("batch_size", self.batch_size)), ("optimizer", _axis("optimizer", self.optimizer)),
                ("warmup", {"warmup": self.warmup}), ("holdout", {"holdout": self.holdout}),
                ("holdout_min", {"holdout_min": self.holdout_min}), ("min_steps", {"min_steps": self.min_steps}),
                ("seed", {"seed": self.seed}), ("device", {"device": self.device}),
                ("precision", {"precision": self.precision}), ("batchnorm", {"batchnorm": self.batchnorm or None}),
                ("append_refined", {"append_refined": self.append_refined or None}),
                ("solver", {"solver": self.solver}),
                ("l2", {"l2s": self.l2 or None}), ("max_iter", {"max_iter": self.max_iter}),
                ("tolerance", {"tolerance": self.tolerance}), ("standardize", {"standardize": self.standardize}),
                ("box_encoding", {"box_encoding": self.box_encoding}),
                ("attentive_from", {"checkpoint": self.attentive_from}),
                ("attentive_head", {"checkpoint_head": self.attentive_head})]

    def request(self, store: Path) -> ProbeRequest:
        """The runner's request for ``store``: one config per enabled probe option."""
        configs = {o: self.config_for(o) for o in self.enabled()}
        fields = {f.name for f in dataclasses.fields(ProbeRequest)}
        return ProbeRequest(store=Path(store), view=self.view, train_split=self.train_split,
                            test_split=self.test_split, scale_run=None if self.scale is None else Path(self.scale),
                            train_view=self.train_view, train_clips=self.train_clips,
                            low_shot=self.low_shot, seed=self.seed, seeds=self.seeds, knn_ks=self.knn_ks(),
                            target=self.target, quiet=self.quiet,
                            log_dir=None if self.log_dir is None else Path(self.log_dir),
                            configs={o: c for o, c in configs.items() if o not in fields},
                            **{o: c for o, c in configs.items() if o in fields})


def typed_table(option: str, config: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """The values of probe ``option``'s ``[probe.NAME]`` table checked against the field types of its
    ``config`` class (lists read as tuples) by the one type check of :class:`Settings`, so a wrong
    type is one line naming the table and key when the config is loaded, not a failure mid-run."""
    hints = get_type_hints(config)
    checker = dataclasses.make_dataclass("ProbeTable", [(key, hints[key], dataclasses.field(default=None))
                                                        for key in table],
                                         bases=(Settings,), namespace={"SECTION": f"probe.{option}"})
    return checker(**table).values()


def own_fields(config: object, values: dict[str, object]) -> dict[str, object]:
    """The entries of ``values`` that are fields of the dataclass ``config``."""
    names = {f.name for f in dataclasses.fields(config)}
    return {name: value for name, value in values.items() if name in names}


def _axis(name: str, values: tuple | None) -> dict:
    """``--batch-size``/``--optimizer`` as TrainConfig fields: none given keeps the config's, one
    value fixes it (and drops a named grid's search), several are searched (``batch_sizes``...)."""
    if not values:
        return {}
    if len(values) == 1:
        return {name: values[0], f"{name}s": ()}
    return {name: values[0], f"{name}s": tuple(values)}


def probe_flags(reserved: Iterable[str] = ()) -> dict[str, tuple[str, str | None]]:
    """The flags of each probe whose option is not a :class:`ProbeConfig` setting (an installed
    plugin's, :func:`~vssl.probe.registry.load_plugins`, or one registered before the command
    line is built): ``--NAME`` enables it, ``--NAME-FIELD`` sets a field of its config (its
    ``[probe.NAME]`` table's key). As parameter name -> (option, field; None for ``--NAME``); a flag
    that is already one of ``vssl probe``'s (or of ``reserved``) is one clear error."""
    load_plugins()
    taken = {f.name for f in dataclasses.fields(ProbeConfig)} | set(reserved)
    flags: dict[str, tuple[str, str | None]] = {}
    for option in (o for o in options() if o not in taken):
        own = [(option, None)] + [(f"{option}_{f.name}", f.name) for f in dataclasses.fields(option_config(option))
                                  if is_flag(f)]
        for name, key in own:
            if name in taken or name in flags:
                raise VsslError(f"probe {option}: its flag --{name.replace('_', '-')} is already a flag of "
                                "vssl probe; rename the probe's option or its config's field")
            flags[name] = (option, key)
    return flags


def probe_settings(reserved: Iterable[str] = ()) -> type:
    """:class:`ProbeConfig` with a flag per :func:`probe_flags` entry: the class whose fields become
    ``vssl probe``'s flags (ProbeConfig itself when no probe adds any)."""
    flags = probe_flags(reserved)
    if not flags:
        return ProbeConfig
    fields = []
    for name, (option, key) in flags.items():
        if key is None:
            fields.append((name, bool | None, setting(None, f"the {option} probe (TOML: table probe.{option})",
                                                      flag=f"--{name.replace('_', '-')}")))
            continue
        config = option_config(option)
        declared = {f.name: f for f in dataclasses.fields(config)}[key]
        default = getattr(config(), key) if declared.default is dataclasses.MISSING else declared.default
        what = setting_help(declared) or key.replace("_", " ")
        shown = f"{option} probe: {what} (default {default}; TOML: {key} in table probe.{option})"
        fields.append((name, get_type_hints(config)[key], setting(None, shown)))
    return dataclasses.make_dataclass("ProbeSettings", fields, bases=(ProbeConfig,))


def probe_options(command: Callable) -> Callable:
    """Add a flag per :class:`ProbeConfig` setting to ``command`` (tuple settings are repeatable),
    and each registered probe's own flags (:func:`probe_flags`). A probe plugin that cannot be
    loaded leaves the other commands working: this one then fails with its one-line error."""
    try:
        return settings_options(probe_settings(inspect.signature(command).parameters))(command)
    except VsslError as exc:
        return settings_options(ProbeConfig)(_refusing(command, exc))


def _refusing(command: Callable, error: VsslError) -> Callable:
    """``command`` (its signature) raising ``error`` when run."""
    @functools.wraps(command)
    def refuse(**kwargs: Any) -> Any:
        raise error
    return refuse
