"""What the HF formats (hf_bert.py, hf_gpt2.py) share.

An HF-format directory holds config.json, model.safetensors and the tokenizer files. This
module holds: the tensor mapping rules (one HF tensor <-> one or
more of our parameters, both directions side by side), the checked reading of a
safetensors file, the per-layer/stacked (scan_layers) layouts and the atomic publication
of a directory. hf_bert.py and hf_gpt2.py only list their rules and config fields.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.files import publish_dir, write_atomic

Path = tuple[str, ...]  # a parameter's keys in our tree, e.g. ("encoder", "pooler", "kernel")
WEIGHTS = "model.safetensors"
LAYOUT_KEY = "ssl_jax"  # config.json entry with what HF configs cannot say (layout, dtypes)
DTYPES = ("float32", "bfloat16", "float16")  # the names tasks.base.DTYPES knows
REQUIRED = object()  # config_field's default: the field must be there


@dataclasses.dataclass(frozen=True)
class Rule:
    """One HF tensor <-> our parameters at `paths`.

    to_hf(*leaves) builds the HF tensor (array methods / jnp only, so it also runs under
    jax.eval_shape to give the expected HF shape); from_hf(tensor, *shapes) inverts it."""

    name: str
    paths: tuple[Path, ...]
    to_hf: Callable[..., Any]
    from_hf: Callable[..., tuple[np.ndarray, ...]]


def copy(name: str, path: Path) -> Rule:
    """The same array (embedding tables, LayerNorm scale/bias, dense biases)."""
    return Rule(name, (path,), lambda x: x, lambda t, s: (t.reshape(s),))


def flat(name: str, path: Path) -> Rule:
    """A per-head bias [heads, head_dim] <-> HF's flat [hidden]."""
    return Rule(name, (path,), lambda x: x.reshape(-1), lambda t, s: (t.reshape(s),))


def linear(name: str, path: Path, in_axes: int = 1) -> Rule:
    """Our kernel [in..., out...] (`in_axes` input axes) <-> PyTorch nn.Linear [out, in]."""
    def to_hf(kernel):
        return kernel.reshape(math.prod(kernel.shape[:in_axes]), -1).T

    return Rule(name, (path,), to_hf, lambda t, s: (t.T.reshape(s),))


def conv1d(name: str, path: Path, in_axes: int = 1) -> Rule:
    """Our kernel [in..., out...] <-> GPT-2's Conv1D weight [in, out] (no transpose)."""
    def to_hf(kernel):
        return kernel.reshape(math.prod(kernel.shape[:in_axes]), -1)

    return Rule(name, (path,), to_hf, lambda t, s: (t.reshape(s),))


def fused(name: str, paths: Sequence[Path], *, bias: bool) -> Rule:
    """Several of our arrays in one HF tensor (GPT-2's c_attn: q | k | v): kernels
    [hidden, heads, head_dim] side by side as [hidden, n * hidden]; biases end to end."""
    axis = 0 if bias else 1

    def to_hf(*leaves):
        return jnp.concatenate([x.reshape(-1) if bias else x.reshape(x.shape[0], -1)
                                for x in leaves], axis=axis)

    def from_hf(t, *shapes):
        return tuple(p.reshape(s) for p, s in zip(np.split(t, len(shapes), axis=axis), shapes))

    return Rule(name, tuple(paths), to_hf, from_hf)


# --- our parameter trees ------------------------------------------------------------------

def get_leaf(tree: dict, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def set_leaf(tree: dict, path: Path, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def to_numpy(tree):
    """Host numpy copies of a parameter tree (any nested mapping of arrays)."""
    return jax.tree.map(np.asarray, jax.device_get(tree))


def unstack_layers(stack: dict, num_layers: int) -> dict:
    """A Stack's params with scan_layers ({"layers": leaves [L, ...]}) -> {"layer_i": ...}."""
    if set(stack) != {"layers"}:
        raise ValueError(f"expected stacked layers {{'layers'}}, found {sorted(stack)}")
    return {f"layer_{i}": jax.tree.map(lambda x: x[i], stack["layers"])
            for i in range(num_layers)}


def stack_layers(stack: dict, num_layers: int) -> dict:
    """{"layer_i": ...} -> the scan_layers form {"layers": leaves [L, ...]}."""
    names = [f"layer_{i}" for i in range(num_layers)]
    if sorted(stack) != sorted(names):
        raise ValueError(f"expected layers {names}, found {sorted(stack)}")
    return {"layers": jax.tree.map(lambda *xs: np.stack(xs), *(stack[n] for n in names))}


def with_layout(stack: dict, num_layers: int, scan_layers: bool) -> dict:
    """A Stack's params in the per-layer (False) or stacked (True) layout, whichever it is."""
    stacked = "layers" in stack
    if stacked == scan_layers:
        return stack
    return stack_layers(stack, num_layers) if scan_layers else unstack_layers(stack, num_layers)


# --- HF tensors <-> our tree --------------------------------------------------------------

def export_tensors(rules: Iterable[Rule], params) -> dict[str, Any]:
    """Our (per-layer) params -> {HF name: tensor}; also runs under jax.eval_shape."""
    return {r.name: r.to_hf(*(get_leaf(params, p) for p in r.paths)) for r in rules}


def expected_shapes(rules: list[Rule], abstract) -> dict[str, tuple[int, ...]]:
    """{HF name: shape} the rules produce from an abstract (ShapeDtypeStruct) tree."""
    shapes = jax.eval_shape(lambda p: export_tensors(rules, p), abstract)
    return {name: tuple(s.shape) for name, s in shapes.items()}


def import_tensors(rules: list[Rule], tensors: dict[str, np.ndarray], abstract) -> dict:
    """{HF name: tensor} (already checked by `check_tensors`) -> our tree, each leaf with
    the abstract leaf's shape and dtype."""
    params: dict = {}
    for r in rules:
        targets = [get_leaf(abstract, p) for p in r.paths]
        leaves = r.from_hf(tensors[r.name], *(t.shape for t in targets))
        for path, target, leaf in zip(r.paths, targets, leaves):
            set_leaf(params, path, np.ascontiguousarray(leaf, dtype=target.dtype))
    filled = jax.tree_util.tree_structure(params)
    if filled != jax.tree_util.tree_structure(abstract):  # a rule table bug, not bad input
        raise AssertionError(f"conversion rules do not cover the model: {filled}")
    return params


def check_params(params: dict, abstract: dict) -> None:
    """`params` has exactly the model's leaves and shapes (checked before anything is
    written, so a bad tree never becomes a half-valid checkpoint)."""
    got = {jax.tree_util.keystr(p): tuple(np.shape(x))
           for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    want = {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    if got != want:
        bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise ValueError("params do not fit the config: " + _listing(
            [f"{k} {got.get(k)} (expected {want.get(k)})" for k in bad]))


def check_tensors(source: str, tensors: dict[str, np.ndarray], expected: dict[str, tuple],
                  ignored: Callable[[str], bool] = lambda name: False) -> None:
    """Every expected tensor present with its shape, floating point, nothing unknown;
    otherwise one error naming every offender. `ignored`: names to skip (buffers)."""
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(n for n in set(tensors) - set(expected) if not ignored(n))
    wrong = [f"{n} {tuple(tensors[n].shape)} (expected {expected[n]})"
             for n in sorted(set(expected) & set(tensors)) if tensors[n].shape != expected[n]]
    not_float = [f"{n} ({tensors[n].dtype})" for n in sorted(set(expected) & set(tensors))
                 if not jnp.issubdtype(tensors[n].dtype, jnp.floating)]  # bfloat16 too
    problems = [(missing, "missing tensors"), (unknown, "unexpected tensors"),
                (wrong, "tensors of the wrong shape"), (not_float, "non-float tensors")]
    lines = [f"{what} ({len(names)}): {_listing(names)}" for names, what in problems if names]
    if lines:
        raise ValueError(f"{source} does not fit the model its config.json describes:\n  "
                         + "\n  ".join(lines))


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_tied(source: str, tensors: dict[str, np.ndarray], ties: dict[str, str]) -> None:
    """Tensors HF may store for tied weights ({name: the one it equals}) must equal it: we
    keep one copy, so an untied checkpoint cannot be represented."""
    for name, same_as in ties.items():
        if name in tensors and not (tensors[name].shape == tensors[same_as].shape
                                    and np.array_equal(tensors[name], tensors[same_as])):
            raise ValueError(f"{source}: {name} differs from {same_as}; this model ties them "
                             "(one shared array), so an untied checkpoint cannot be loaded")


def strip_prefix(source: str, tensors: dict[str, np.ndarray], prefix: str) -> dict:
    """Keys with or without `prefix` (e.g. "bert.", "transformer."), without it."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        short = name[len(prefix):] if name.startswith(prefix) else name
        if short in out:
            raise ValueError(f"{source} holds {short!r} both with and without {prefix!r}")
        out[short] = tensor
    return out


# --- files --------------------------------------------------------------------------------

def read_tensors(directory: str) -> dict[str, np.ndarray]:
    """model.safetensors of an HF directory, as numpy arrays."""
    from safetensors.numpy import load_file

    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        held = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
        hint = ""
        if "pytorch_model.bin" in held:
            hint = " (it holds pytorch_model.bin: re-save it with safe_serialization=True)"
        elif f"{WEIGHTS}.index.json" in held:
            hint = " (sharded checkpoints are not supported)"
        raise FileNotFoundError(f"{path!r} does not exist{hint}")
    try:
        return load_file(path)
    except KeyError as e:  # a dtype safetensors.numpy has no numpy type for
        raise ValueError(f"{path!r} stores {e} tensors, which numpy cannot read; save the "
                         "checkpoint in float32") from None
    except Exception as e:  # safetensors raises its own SafetensorError for a bad file
        raise ValueError(f"cannot read {path!r}: {e}") from e


def safetensors_bytes(tensors: dict[str, Any]) -> bytes:
    """float32 little-endian safetensors, tagged as PyTorch layout (what HF's loader wants)."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in tensors.items()}
    return save(arrays, metadata={"format": "pt"})


def config_field(source: str, config: dict, *names: str, default: Any = REQUIRED):
    """The first of `names` set in an HF config (older files use other names), else
    `default`; a required field that is absent is an error."""
    for name in names:
        if config.get(name) is not None:
            return config[name]
    if default is REQUIRED:
        raise ValueError(f"{source} lacks {names[0]!r}")
    return default


def layout_fields(config) -> dict[str, Any]:
    """What an HF config cannot say about our config, stored under config.json's "ssl_jax"."""
    name = lambda dtype: jnp.dtype(dtype).name
    return {"scan_layers": config.scan_layers, "remat": config.remat,
            "dtype": name(config.dtype), "param_dtype": name(config.param_dtype)}


def read_layout(source: str, hf_config: dict, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The "ssl_jax" entry as config fields (empty for foreign checkpoints); `allowed`: the
    model's own extra fields beyond the shared four."""
    layout = dict(hf_config.get(LAYOUT_KEY) or {})
    unknown = sorted(set(layout) - {"scan_layers", "remat", "dtype", "param_dtype", *allowed})
    if unknown:
        raise ValueError(f"{source}: unknown {LAYOUT_KEY} fields {unknown}")
    for key in ("dtype", "param_dtype"):
        if key in layout:
            if layout[key] not in DTYPES:
                raise ValueError(f"{source}: {LAYOUT_KEY}.{key}={layout[key]!r}; expected one "
                                 f"of {list(DTYPES)}")
            layout[key] = getattr(jnp, layout[key])  # the jnp types configs use
    return layout


def check_new_directory(directory: str) -> None:
    """An output directory must not exist yet (or be empty): nothing is overwritten."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise FileExistsError(f"{directory!r} already exists and is not empty; choose a new "
                              "output directory")


def publish(directory: str, files: dict[str, str | bytes]) -> None:
    """Writes {file name: content} as a new directory, published whole (atomically)."""
    directory = os.path.abspath(directory)
    check_new_directory(directory)

    def fill(tmp: str) -> None:
        for name, content in files.items():
            if isinstance(content, str):
                write_atomic(os.path.join(tmp, name), content)
            else:
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(content)

    publish_dir(directory, fill)


def json_text(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
