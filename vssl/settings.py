"""One declaration per setting: a dataclass field gives the config key, the TOML key and the CLI flag.

A stage's settings are a dataclass (``ExtractConfig``, ``ScaleConfig``, ...) whose fields are
declared with :func:`setting` (default, help text, optional flag spelling). From that one
declaration:

- :class:`Settings` gives the dict/TOML round trip with unknown keys refused by name and
  types checked (a typo in a config file must not pass silently or surface later as a traceback);
- :func:`settings_options` adds one ``--flag`` per field to a typer command and hands the
  command the flags the user actually gave, as a dict of overrides.

So adding a setting is one edit: the field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import tomllib
from pathlib import Path
from types import UnionType
from typing import (Any, Callable, ClassVar, Mapping, Optional, TypeVar, Union, get_args, get_origin,
                    get_type_hints)

from vssl.errors import VsslError


S = TypeVar("S", bound="Settings")

_HELP, _FLAG, _CLI = "vssl_help", "vssl_flag", "vssl_cli"


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
            cli: bool = True, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a config key and (unless ``cli=False``) a command-line flag.

    ``flag``: the option's spelling when it is not ``--field-name`` (booleans get
    ``--name/--no-name`` unless given, e.g. ``"--mcm/--no-mcm"``).
    """
    meta = {_HELP: help, _FLAG: flag, _CLI: cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_help(f: dataclasses.Field) -> str:
    """The help text :func:`setting` gave field ``f`` ("" for a plain dataclass field)."""
    return f.metadata.get(_HELP) or ""


def is_flag(f: dataclasses.Field) -> bool:
    """Whether field ``f`` is a command-line flag (a plain dataclass field is; ``cli=False`` is not)."""
    return f.metadata.get(_CLI, True)


def _base_type(hint: Any) -> Any:
    """``int | None`` -> int, ``tuple[float, float]`` -> tuple: the type a value is checked against."""
    args = [a for a in get_args(hint) if a is not type(None)]
    origin = get_origin(hint)
    if origin in (Union, UnionType) and len(args) == 1:
        return _base_type(args[0])
    if origin is not None:
        return origin
    return hint


class Settings:
    """Mixin for a dataclass of settings: validation of types, dict and TOML round trip."""

    #: name of the config (in messages) and of the TOML table that may hold its keys
    SECTION: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        self.coerce()
        self.check_types()
        self.derive()
        self.validate()

    def coerce(self) -> None:
        """Turn values the Python API accepts into the declared types (before the type check)."""

    def derive(self) -> None:
        """Fill settings whose default depends on others (after the type check)."""

    def validate(self) -> None:
        """Range checks of the subclass; types are already checked."""

    def bad(self, key: str, why: str) -> None:
        """Raise the one-line error for setting ``key``."""
        raise VsslError(f"{self.SECTION} config: {key}={getattr(self, key)!r} {why}")

    def check_types(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, hint = getattr(self, f.name), hints[f.name]
            optional = type(None) in getattr(hint, "__args__", ())
            if value is None:
                if not optional:
                    self.bad(f.name, "must be set")
                continue
            kind = _base_type(hint)
            if kind is bool and not isinstance(value, bool):
                self.bad(f.name, "must be true or false")
            elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                self.bad(f.name, "must be an integer")
            elif kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                self.bad(f.name, "must be a number")
            elif kind is str and not isinstance(value, str):
                self.bad(f.name, "must be a string")
            elif kind is tuple:
                if isinstance(value, list):
                    value = tuple(value)  # TOML and JSON give lists
                    object.__setattr__(self, f.name, value)
                if not isinstance(value, tuple):
                    self.bad(f.name, "must be a list")
                item = _element_type(hint)
                if item in (int, float, str) and not all(
                        isinstance(v, item) and not isinstance(v, bool) or item is float and isinstance(v, int)
                        and not isinstance(v, bool) for v in value):
                    self.bad(f.name, f"must be a list of {item.__name__}s")

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/TOML friendly) of every setting."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    def values(self) -> dict[str, Any]:
        """Every setting's value in effect (derived ones resolved), for comparing two configs."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def keys(cls) -> list[str]:
        """Every key a dict, a TOML file or a keyword may give: the stored settings, then the
        init-only ones (:func:`init_only_fields`)."""
        return [f.name for f in (*dataclasses.fields(cls), *init_only_fields(cls))]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any]) -> S:
        """Build from a dict; unknown keys are an error naming them."""
        names = set(cls.keys())
        unknown = sorted(set(data) - names)
        if unknown:
            raise VsslError(f"{cls.SECTION} config: unknown key(s) {', '.join(unknown)}; "
                            f"known keys: {', '.join(sorted(names))}")
        return cls(**dict(data))

    @classmethod
    def from_toml(cls: type[S], path: str | Path, overrides: Mapping[str, Any] | None = None,
                  base: S | None = None) -> S:
        """Load a TOML file (top-level keys or a ``[SECTION]`` table) over ``base``, then apply ``overrides``.

        Dashes are accepted in keys (``set-size``) to match the CLI flags.
        """
        return cls.from_table(read_toml(path, cls.SECTION), overrides, base)

    @classmethod
    def from_table(cls: type[S], data: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   base: S | None = None) -> S:
        """Build from a TOML table's keys (dashes accepted) over ``base``, then apply ``overrides``."""
        merged = base.to_dict() if base is not None else {}
        merged.update({k.replace("-", "_"): v for k, v in data.items()})
        merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(merged)

    @classmethod
    def load(cls: type[S], config: str | Path | None, overrides: Mapping[str, Any] | None = None,
             base: S | None = None) -> S:
        """``overrides`` over the ``config`` file (if any) over ``base`` (a recipe; default: the defaults)."""
        if config is not None:
            return cls.from_toml(config, overrides, base)
        return (base if base is not None else cls()).replace(**(overrides or {}))

    def replace(self: S, **changes: Any) -> S:
        """Copy with some settings changed (``None`` values, as left-out CLI flags, are ignored)."""
        return type(self).from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})


def init_only_fields(cls: type) -> list[dataclasses.Field]:
    """The ``InitVar`` settings of ``cls``: accepted as keys and flags but not stored (``to_dict``
    leaves them out), e.g. a former switch that ``__post_init__`` folds into the setting that
    replaced it, so configs and checkpoints written with the old key still load."""
    hints = get_type_hints(cls)
    return [f for name, f in getattr(cls, "__dataclass_fields__", {}).items()
            if isinstance(hints.get(name), dataclasses.InitVar)]


def read_toml(path: str | Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML file, or its top-level keys when it has no such table; a
    missing file or bad syntax is one line naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise VsslError(f"config file {path} does not exist; pass an existing TOML file to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise VsslError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from None
    return dict(data[section]) if isinstance(data.get(section), dict) else data


# ---------------------------------------------------------------------- command-line flags


def _element_type(hint: Any) -> Any:
    """``tuple[X, ...]`` (or that | None) -> X; None for any other type."""
    for arg in (hint, *get_args(hint)):
        inner = get_args(arg)
        if get_origin(arg) is tuple and len(inner) == 2 and inner[1] is Ellipsis:
            return inner[0]
    return None


def _flag_type(hint: Any) -> Any:
    """The option's type: a scalar, or ``list[X]`` (a repeatable flag) for a ``tuple[X, ...]`` setting."""
    item = _element_type(hint)
    if item is not None:
        return list[item]  # type: ignore[valid-type]
    kind = _base_type(hint)
    return kind if kind in (bool, int, float, str) else str


def cli_parameters(cls: type[Settings]) -> list[inspect.Parameter]:
    """One keyword parameter per CLI field of ``cls``, defaulting to ``None`` (= not given)."""
    import typer

    hints = get_type_hints(cls)
    params = []
    for f in (*dataclasses.fields(cls), *init_only_fields(cls)):  # type: ignore[arg-type]
        if not f.metadata.get(_CLI, True):
            continue
        hint = hints[f.name]
        kind = _flag_type(hint.type if isinstance(hint, dataclasses.InitVar) else hint)
        dashed = f.name.replace("_", "-")
        flag = f.metadata.get(_FLAG) or (f"--{dashed}/--no-{dashed}" if kind is bool else f"--{dashed}")
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default in (None, "") or kind is bool else f" (default {default})"
        option = typer.Option(None, *flag.split(" "), help=(f.metadata.get(_HELP) or "") + shown,
                              show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params


def settings_options(cls: type[Settings], into: str = "overrides") -> Callable[[Callable], Callable]:
    """Decorate a typer command: add a flag per setting of ``cls``; pass the given ones as ``into``.

    The command declares ``into: dict`` as its last parameter; it receives ``{key: value}`` for
    the flags the user gave (left-out flags are not in it), ready for ``cls.load(config, overrides)``.
    """
    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name != into]
        added = cli_parameters(cls)
        clash = {p.name for p in own} & {p.name for p in added}
        if clash:
            raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are also settings of {cls.__name__}")
        names = [p.name for p in added]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            overrides = {n: tuple(v) if isinstance(v, list) else v
                         for n in names if (v := kwargs.get(n)) is not None and v != []}
            for n in names:
                kwargs.pop(n, None)
            return command(**kwargs, **{into: overrides})

        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added)
        return wrapper

    return decorate
