"""Loading `experiments/...py[:arg]` configs, command-line overrides, and sweeps."""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import sys
from types import ModuleType

import ml_collections


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
                 overrides: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    config = module.get_config(arg) if arg is not None else module.get_config()
    config = ml_collections.ConfigDict(config)
    config.lock()
    apply_overrides(config, overrides)
    return config


def load_config(spec: str, overrides: list[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    path, arg = split_spec(spec)
    return build_config(load_module(path), arg, overrides)


def all_keys(config, prefix="") -> list[str]:
    keys = []
    for k, v in config.items():
        keys.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys += all_keys(v, prefix + k + ".")
    return keys


def _parse_value(raw: str, current):
    if isinstance(current, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {raw!r}")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, str):
        return raw
    if raw in ("None", "none", "null"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
    """overrides: [("data.mask_rate", "0.2"), ...]. Unknown keys and bad types fail loudly."""
    known = all_keys(config)
    for key, raw in overrides:
        parent, _, leaf = key.rpartition(".")
        node = config
        try:
            for part in filter(None, parent.split(".")):
                node = node[part]
            current = node[leaf]
        except (KeyError, AttributeError, TypeError):
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown config key {key!r}{hint}") from None
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"config key {key!r} is a group; set one of its fields")
        try:
            value = _parse_value(raw, current)
            node[leaf] = value
        except (ValueError, TypeError) as e:
            raise ValueError(f"bad value for config key {key!r}: {raw!r} ({e})") from None


def parse_override_args(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Pulls `--config.a.b=value` (or `--config.a.b value`) out of argv."""
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key, eq, value = arg[len("--config."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value")
                value = argv[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def read_config(workdir: str, task: str | None = None) -> ml_collections.ConfigDict:
    """The config a run wrote to `workdir/config.json` (for tools that work on a run); with
    `task`, a workdir of another kind is refused, naming what it holds."""
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
    return config
