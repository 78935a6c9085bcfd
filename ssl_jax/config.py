"""Loading `experiments/...py[:arg]` configs: typed args, command-line overrides, derived
fields.

A config module declares its args with `Args` (name -> typed default) and parses its `arg`
once in `get_config(arg)`. `build_config` then applies the overrides (`--config.a.b=v`, or a
sweep point's, with the same parser) and last the module's `derived_fields(config,
explicit)` (e.g. the log/eval/checkpoint intervals from num_train_steps), so derived values
follow the overrides and an explicit override of a derived field wins. Last, a field the
overrides or the arg set that the run would ignore (data.files without data.corpus='files',
...) is refused, naming the field that decides (ssl_jax/ignored.py).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Callable, Iterable

import ml_collections

from ssl_jax.ignored import refuse_ignored

_NONE = ("None", "none", "null")


class optional:
    """An arg whose default is None; `kind` is the type of the values it accepts."""

    def __init__(self, kind: type):
        self.kind = kind


def parse_typed(raw: str, kind: type, allow_none: bool) -> Any:
    """The command-line text `raw` as a `kind` value; ValueError("expected ...") if it is not.
    Ints are accepted for float fields; bools are only true/false."""
    if allow_none and raw in _NONE:
        return None
    if kind is bool:
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
    elif kind is int:
        try:
            return int(raw)
        except ValueError:
            pass
    elif kind is float:
        try:
            return float(raw)
        except ValueError:
            pass
    elif kind is str:
        return raw
    elif kind in (list, tuple):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, (list, tuple)):
            return kind(value)
    elif kind is object:  # a field that takes a name or a structure: a literal, else the text
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    else:
        raise TypeError(f"no command-line parser for type {kind.__name__}")
    expected = "true or false" if kind is bool else kind.__name__
    raise ValueError(f"expected {expected}{' or None' if allow_none else ''}")


def format_value(value: Any) -> str:
    """`value` as command-line text that parse_typed reads back (a sweep point's values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Args:
    """A config's args: `Args(bare="variant", steps=10000, files=optional(str))`; each
    default's type is the arg's type. `parse("mini,steps=30")` -> {"variant": "mini",
    "steps": 30, ...}; a bare word sets `bare`; unknown keys and bad values fail."""

    def __init__(self, bare: str | None = None, **declared):
        self.bare = bare
        self.kinds: dict[str, tuple[type, bool]] = {}
        self.defaults: dict[str, Any] = {}
        for name, default in declared.items():
            if isinstance(default, optional):
                self.kinds[name], self.defaults[name] = (default.kind, True), None
            else:
                self.kinds[name], self.defaults[name] = (type(default), False), default

    def updated(self, **declared) -> "Args":
        """These args with other defaults (same type) or extra args."""
        merged = Args(self.bare)
        merged.kinds, merged.defaults = dict(self.kinds), dict(self.defaults)
        for name, default in declared.items():
            extra = Args(**{name: default})
            if name in self.kinds and self.kinds[name][0] is not extra.kinds[name][0]:
                raise TypeError(f"arg {name}: default {default!r} is not a "
                                f"{self.kinds[name][0].__name__}")
            merged.kinds[name], merged.defaults[name] = extra.kinds[name], extra.defaults[name]
        return merged

    def parse(self, arg: str | None) -> dict[str, Any]:
        values = dict(self.defaults)
        for part in filter(None, (p.strip() for p in (arg or "").split(","))):
            key, eq, raw = part.partition("=")
            if not eq:
                if self.bare is None:
                    raise ValueError(f"config arg {part!r} needs a key (key=value); expected "
                                     f"one of {sorted(values)}")
                key, raw = self.bare, part
            if key not in self.kinds:
                raise ValueError(f"unknown config arg {key!r}; expected one of {sorted(values)}")
            kind, allow_none = self.kinds[key]
            try:
                values[key] = parse_typed(raw, kind, allow_none)
            except ValueError as e:
                raise ValueError(f"config arg {key}={raw!r}: {e}") from None
        return values


def arg_keys(arg: str | None) -> set[str]:
    """The keys an arg string sets by key=value ('tiny,steps=3' -> {'steps'})."""
    return {p.partition("=")[0].strip() for p in (arg or "").split(",") if "=" in p}


def join_arg(arg: str | None, values: dict[str, Any]) -> str | None:
    """`arg` with key=value appended for each of `values` (a sweep point's args)."""
    parts = [p for p in (arg or "").split(",") if p.strip()]
    parts += [f"{k}={format_value(v)}" for k, v in values.items()]
    return ",".join(parts) if parts else arg


def load_module(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    name = "ssl_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    for d in (os.getcwd(), root, os.path.dirname(root)):  # so `from experiments import common` works
        if d not in sys.path:
            sys.path.insert(0, d)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config(arg)")
    return module


def split_spec(spec: str) -> tuple[str, str | None]:
    """'experiments/bert/pretrain.py:mini,nsp=False' -> (path, 'mini,nsp=False')."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def build_config(module: ModuleType, arg: str | None,
                 overrides: Iterable[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """get_config(arg), then the overrides, then the module's derived fields (those not
    overridden): the config a run uses and records. A field the overrides or the config arg
    set that the run would ignore is refused (ssl_jax.ignored), naming the deciding field."""
    overrides = list(overrides)
    config = module.get_config(arg) if arg is not None else module.get_config()
    config = ml_collections.ConfigDict(config)
    by_arg = arg_fields(module, arg, config)
    config.lock()
    apply_overrides(config, overrides)
    derive = getattr(module, "derived_fields", None)
    if derive is not None:
        explicit = frozenset(key for key, _ in overrides)
        for key, value in derive(config, explicit).items():
            if key not in explicit:
                node, leaf = _field(config, key)
                node[leaf] = value
    set_by = {key: f"config arg {part} (sets {key})" for key, part in by_arg.items()}
    set_by.update((key, f"--config.{key}={raw}") for key, raw in overrides)
    refuse_ignored(config, set_by)
    return config


def arg_fields(module: ModuleType, arg: str | None, config) -> dict[str, str]:
    """field -> the part of the config arg that set it ('tiny,window=64' -> {
    'model.attention_window': 'window=64', ...}): the fields of `config` (get_config(arg))
    whose value differs when that part is left out. A part the config cannot do without
    (glue's task=) and fields only one of the two configs has are not counted."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    values = _leaves(config)
    found: dict[str, str] = {}
    for i, part in enumerate(parts):
        try:
            without = _leaves(ml_collections.ConfigDict(
                module.get_config(",".join(parts[:i] + parts[i + 1:]))))
        except (ValueError, TypeError, KeyError):
            continue
        for key, value in values.items():
            if key in without and without[key] != value:
                found.setdefault(key, part)
    return found


def _leaves(config, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every non-group field."""
    out = {}
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            out.update(_leaves(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def load_config(spec: str, overrides: Iterable[tuple[str, str]] = ()
                ) -> ml_collections.ConfigDict:
    path, arg = split_spec(spec)
    return build_config(load_module(path), arg, overrides)


def stage_fields(prefix: str, derive: Callable, config, explicit: frozenset[str]) -> dict:
    """A sub-config's derived fields (e.g. a transfer config's `pretrain`), keyed
    `prefix.field`, from that sub-config and the overrides under `prefix.`."""
    inner = frozenset(k[len(prefix) + 1:] for k in explicit if k.startswith(prefix + "."))
    return {f"{prefix}.{k}": v for k, v in derive(config[prefix], inner).items()}


def all_keys(config, prefix="") -> list[str]:
    keys = []
    for k, v in config.items():
        keys.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys += all_keys(v, prefix + k + ".")
    return keys


def _field(config, key: str):
    """(the ConfigDict holding `key`, its leaf name); ValueError naming close keys."""
    parent, _, leaf = key.rpartition(".")
    node = config
    try:
        for part in filter(None, parent.split(".")):
            node = node[part]
        current = node[leaf]
    except (KeyError, AttributeError, TypeError):
        close = difflib.get_close_matches(key, all_keys(config), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown config key {key!r}{hint}") from None
    if isinstance(current, ml_collections.ConfigDict):
        raise ValueError(f"config key {key!r} is a group; set one of its fields")
    return node, leaf


def _parse_value(raw: str, node, leaf: str):
    kind = node.get_type(leaf)
    if kind is type(None):  # an untyped None field: a Python literal, else the text
        if raw in _NONE:
            return None
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw
    return parse_typed(raw, kind, allow_none=node[leaf] is None)  # a typed None field


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
    """overrides: [("data.mask_rate", "0.2"), ...] as command-line text, parsed to each
    field's type. Unknown keys and bad values fail, naming the key and the expected type."""
    for key, raw in overrides:
        node, leaf = _field(config, key)
        try:
            node[leaf] = _parse_value(raw, node, leaf)
        except (ValueError, TypeError) as e:
            raise ValueError(f"bad value for config key {key!r}: {raw!r} ({e})") from None


def pull_prefixed_args(argv: list[str], prefix: str,
                       missing: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Pulls `PREFIXkey=value` (or `PREFIXkey value`) out of argv -> ([(key, value)], rest);
    `missing` (formatted with `arg` and `key`) is the error for one without a value."""
    pulled, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(prefix):
            key, eq, value = arg[len(prefix):].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise ValueError(missing.format(arg=arg, key=key))
                value = argv[i + 1]
                i += 1
            pulled.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return pulled, rest


def parse_override_args(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pulls `--config.a.b=value` (or `--config.a.b value`) out of argv."""
    return pull_prefixed_args(argv, "--config.", "{arg} needs a value: {arg}=VALUE")


def read_config(workdir: str, task: str | None = None) -> ml_collections.ConfigDict:
    """The config a run wrote to `workdir/config.json` (for tools that work on a run); with
    `task`, a workdir of another kind is refused, naming what it holds. A run's
    model.attention_impl='cudnn' reads as 'auto': its weights do not depend on the attention
    implementation, and a tool may run where cuDNN does not (a GPU run read on a CPU)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist: is {workdir!r} a training workdir?")
    from ssl_jax.files import read_json

    config = ml_collections.ConfigDict(read_json(path, "the workdir's config"))
    found = config.get("task")
    if task is not None and found != task:
        what = (f"is a {found!r} run" if found else
                "has a config.json without a 'task' field (not a training run's config)")
        raise ValueError(f"workdir {workdir!r} {what}; expected a {task!r} run's workdir")
    if config.get("model", {}).get("attention_impl") == "cudnn":
        config.model.attention_impl = "auto"
    return config
