"""Where arrays live: the device mesh and sharding rules from the config, and the two ways
to run a step function over them (jit with shardings, or pmap).

`config.mesh` = {data, fsdp, tensor} (one may be -1: the rest of the devices) names a 3-D
mesh over every device of every process. `config.sharding_rules` maps the models' logical
axis names (ssl_jax.models.partitioning) onto mesh axes: a preset (RULES) or an explicit
list of (logical name, mesh axes) pairs. Batches always shard over (data, fsdp).

    dp       parameters and optimizer state replicated (the default)
    fsdp     the model width (`embed`, conv `channels`) sharded over fsdp: ZeRO-3 style
    fsdp_tp  fsdp, plus the MLP width and the attention heads over tensor (Megatron-style
             column/row splits; the vocabulary is not split: 30,522 and 50,257 do not
             divide)
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import jax_utils
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ssl_jax.models.dropout import global_dropout_positions
from ssl_jax.models.partitioning import LOGICAL_AXES

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
DATA_AXIS = "data"  # pmap's axis name
PARALLEL_MODES = ("jit", "pmap")

_BATCH_RULE = (("batch", BATCH_AXES),)
RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "dp": _BATCH_RULE,
    "fsdp": _BATCH_RULE + (("embed", "fsdp"), ("channels", "fsdp")),
    "fsdp_tp": _BATCH_RULE + (("embed", "fsdp"), ("channels", "fsdp"), ("mlp", "tensor"),
                              ("heads", "tensor")),
}


# --- the config's mesh and rules ------------------------------------------------------------
def mesh_shape(mesh_config, devices: int) -> dict[str, int]:
    """config.mesh -> {axis: size} multiplying to `devices` (-1: the rest)."""
    sizes = {}
    for axis in MESH_AXES:
        size = mesh_config.get(axis, 1)
        if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
            raise ValueError(f"config.mesh.{axis}={size!r}: expected a positive integer or -1 "
                             f"(the rest of the devices)")
        sizes[axis] = size
    unknown = set(mesh_config) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; expected {MESH_AXES}")
    rest = [a for a, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError(f"config.mesh: only one axis may be -1, got {rest}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if rest:
        if devices % fixed:
            raise ValueError(f"config.mesh={_show(sizes)}: {fixed} devices in the fixed axes do "
                             f"not divide the {devices} devices")
        sizes[rest[0]] = devices // fixed
    elif fixed != devices:
        raise ValueError(f"config.mesh={_show(sizes)} has {fixed} devices; there are {devices} "
                         f"(set one axis to -1 for the rest)")
    return sizes


def _show(sizes: dict) -> str:
    return ",".join(f"{a}={s}" for a, s in sizes.items())


def resolve_rules(rules) -> tuple[tuple[str, Any], ...]:
    """config.sharding_rules (a preset name or [(logical, mesh axes), ...]) -> rules, checked:
    logical names from LOGICAL_AXES, mesh axes from MESH_AXES."""
    if isinstance(rules, str):
        if rules not in RULES:
            raise ValueError(f"config.sharding_rules={rules!r}; expected one of {list(RULES)} "
                             f"or a list of (logical axis, mesh axes) pairs")
        return RULES[rules]
    if not isinstance(rules, (list, tuple)) or not all(
            isinstance(r, (list, tuple)) and len(r) == 2 for r in rules):
        raise ValueError(f"config.sharding_rules={rules!r}; expected a preset name "
                         f"{list(RULES)} or a list of (logical axis, mesh axes) pairs")
    out = []
    for logical, mesh_axes in rules:
        if logical not in LOGICAL_AXES:
            raise ValueError(f"config.sharding_rules: unknown logical axis {logical!r}; "
                             f"expected one of {list(LOGICAL_AXES)}")
        names = (mesh_axes,) if isinstance(mesh_axes, str) or mesh_axes is None else mesh_axes
        for name in names:
            if name is not None and name not in MESH_AXES:
                raise ValueError(f"config.sharding_rules: {logical!r} -> unknown mesh axis "
                                 f"{name!r}; expected one of {MESH_AXES}")
        out.append((logical, tuple(names) if len(names) > 1 else names[0]))
    if not any(logical == "batch" for logical, _ in out):
        out.insert(0, _BATCH_RULE[0])
    return tuple(out)


def make_mesh(mesh_config=None) -> Mesh:
    """The (data, fsdp, tensor) mesh over every device of every process; each process's
    devices hold a contiguous block of the batch (what process-local batches need)."""
    devices = jax.devices()
    sizes = mesh_shape(mesh_config or {"data": -1}, len(devices))
    grid = mesh_utils.create_device_mesh(tuple(sizes.values()), devices,
                                         allow_split_physical_axes=True)
    return Mesh(grid, MESH_AXES)


def check_batch_size(batch_size: int, accumulate: int = 1, mesh: Mesh | None = None) -> None:
    """The global batch splits over the processes, the batch-sharded devices and the
    microbatches of gradient accumulation."""
    processes = jax.process_count()
    shards = (mesh.shape["data"] * mesh.shape["fsdp"]) if mesh is not None else jax.device_count()
    if batch_size % processes:
        raise ValueError(f"batch_size={batch_size} is not divisible by {processes} processes")
    if batch_size % (shards * accumulate):
        per = f" x grad_accum_steps={accumulate}" if accumulate > 1 else ""
        raise ValueError(f"batch_size={batch_size} is not divisible by the {shards} batch "
                         f"shards (mesh data x fsdp){per}")


def logical_names(leaf) -> tuple:
    """A parameter's logical axis names (None per axis where it has none)."""
    if isinstance(leaf, nn.LogicallyPartitioned):
        return tuple(leaf.names)
    return (None,) * len(np.shape(leaf))


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


# --- the layout: mesh + rules + mode --------------------------------------------------------
class Parallel:
    """Places state and batches and wraps step functions for one config's layout:
    `config.parallel` (jit | pmap), `config.mesh`, `config.sharding_rules`."""

    def __init__(self, mode: str = "jit", mesh_config=None, rules="dp"):
        if mode not in PARALLEL_MODES:
            raise ValueError(f"config.parallel={mode!r}; expected one of {PARALLEL_MODES}")
        self.mode = mode
        self.rules = resolve_rules(rules)
        self.mesh = make_mesh(mesh_config)
        if mode == "pmap":
            if self.rules != RULES["dp"]:
                raise ValueError(f"config.parallel='pmap' replicates the parameters: it takes "
                                 f"config.sharding_rules='dp', not {rules!r} (use "
                                 f"config.parallel='jit' to shard them)")
            if self.mesh.shape["tensor"] > 1:
                raise ValueError(f"config.parallel='pmap' is data-parallel only; "
                                 f"config.mesh.tensor={self.mesh.shape['tensor']} needs 'jit'")
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(BATCH_AXES))
        self.axis_name = DATA_AXIS if mode == "pmap" else None

    @classmethod
    def from_config(cls, config) -> "Parallel":
        return cls(config.parallel, config.get("mesh"), config.get("sharding_rules", "dp"))

    @contextlib.contextmanager
    def active(self):
        """The mesh and rules the models' activation constraints read while tracing."""
        if self.mode == "pmap":
            yield
            return
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    # --- parameter and state shardings -----------------------------------------------------
    def param_shardings(self, boxed_params):
        """Abstract boxed parameters (jax.eval_shape of task.init_boxed) -> a tree of
        NamedShardings like the unboxed parameters; every sharded dimension is checked to
        divide by its mesh axes, naming the parameter, its shape and the axis."""
        def one(path, leaf):
            names = logical_names(leaf)
            shape = tuple(np.shape(leaf.value if isinstance(leaf, nn.LogicallyPartitioned)
                                   else leaf))
            if len(names) != len(shape):
                raise ValueError(f"parameter {_path(path)} of shape {shape} has logical axes "
                                 f"{names}: one name per dimension expected")
            for name in names:
                if name is not None and name not in LOGICAL_AXES:
                    raise ValueError(f"parameter {_path(path)}: unknown logical axis {name!r}; "
                                     f"expected one of {list(LOGICAL_AXES)}")
            if self.mode == "pmap":
                return self.replicated
            spec = nn.logical_to_mesh_axes(names, self.rules)
            for dim, (size, axes) in enumerate(zip(shape, spec)):
                if axes is None:
                    continue
                axes = (axes,) if isinstance(axes, str) else axes
                ways = math.prod(self.mesh.shape[a] for a in axes)
                if size % ways:
                    raise ValueError(
                        f"parameter {_path(path)} of shape {shape}: dimension {dim} "
                        f"({names[dim]}={size}) does not divide over mesh axis "
                        f"{'x'.join(axes)} of size {ways} (config.sharding_rules maps "
                        f"{names[dim]!r} to {axes})")
            return NamedSharding(self.mesh, spec)

        return jax.tree_util.tree_map_with_path(
            one, boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

    def state_shardings(self, abstract_state, param_shardings, tx: optax.GradientTransformation):
        """The TrainState's shardings: params as given, every params-shaped leaf of the
        optimizer state (AdamW's moments) like its parameter, the rest replicated."""
        opt = optax.tree_map_params(
            tx, lambda _, sharding: sharding, abstract_state.opt_state, param_shardings,
            transform_non_params=lambda _: self.replicated,
            is_leaf=lambda x: isinstance(x, NamedSharding))
        return abstract_state.replace(step=self.replicated, params=param_shardings,
                                      opt_state=opt)

    # --- state -----------------------------------------------------------------------------
    def put_state(self, state, shardings=None):
        """A global state (host arrays, or arrays in these shardings) -> the step's layout."""
        if self.mode == "pmap":
            return jax_utils.replicate(state)
        return jax.device_put(state, shardings if shardings is not None else self.replicated)

    def get_state(self, state):
        """The step's layout -> global arrays (sharded under jit; for checkpoints)."""
        return jax_utils.unreplicate(state) if self.mode == "pmap" else state

    def params_on_host(self, params):
        """Every process's full copy of the parameters (numpy), for host-side measurements."""
        params = self.get_state(params)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return multihost_utils.process_allgather(params, tiled=True)
        return jax.device_get(params)

    # --- batches ---------------------------------------------------------------------------
    def put_batch(self, batch: dict[str, np.ndarray]):
        """A process-local numpy batch (this process's rows of the global batch) -> arrays
        sharded along the batch dimension."""
        if self.mode == "pmap":
            n = jax.local_device_count()
            return jax.tree_util.tree_map(
                lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

    def put_global_batch(self, batch: dict[str, np.ndarray]):
        """A global numpy batch that every process holds whole (eval) -> sharded arrays;
        each process places only the rows its devices own, so no example is counted twice."""
        if self.mode == "pmap":
            rows = batch[next(iter(batch))].shape[0] // jax.process_count()
            lo = jax.process_index() * rows
            return self.put_batch({k: v[lo:lo + rows] for k, v in batch.items()})
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_callback(x.shape, self.batch_sharding,
                                                   lambda index: x[index]), batch)

    def get_batch(self, outputs) -> dict[str, np.ndarray]:
        """Per-example outputs (split over devices and processes) -> numpy arrays of the whole
        global batch, in batch order, on every process."""
        if self.mode == "pmap":
            local = {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in outputs.items()}
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils
                return multihost_utils.process_allgather(local, tiled=True)
            return local
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            outputs = multihost_utils.process_allgather(outputs, tiled=True)
        return {k: np.asarray(jax.device_get(v)) for k, v in outputs.items()}

    # --- steps -----------------------------------------------------------------------------
    def _traced_in_layout(self, fn: Callable) -> Callable:
        """Under pmap, dropout masks are drawn at each element's position in the global
        batch (its device's offset added), so pmap draws the masks jit draws."""
        def run(*args):
            with global_dropout_positions(self.axis_name):
                return fn(*args)
        return run

    def wrap_train_step(self, step_fn: Callable, state_shardings=None) -> Callable:
        step_fn = self._traced_in_layout(step_fn)
        if self.mode == "pmap":
            fn = jax.pmap(step_fn, axis_name=DATA_AXIS, donate_argnums=(0,))
            return lambda state, batch: _first(fn(state, batch))
        shardings = state_shardings if state_shardings is not None else self.replicated
        fn = jax.jit(step_fn, in_shardings=(shardings, self.batch_sharding),
                     out_shardings=(shardings, self.replicated), donate_argnums=(0,))
        return self._call_in_layout(fn)

    def wrap_eval_step(self, eval_fn: Callable, param_shardings=None) -> Callable:
        eval_fn = self._traced_in_layout(eval_fn)
        if self.mode == "pmap":
            fn = jax.pmap(eval_fn, axis_name=DATA_AXIS)
            return lambda params, batch: jax.tree_util.tree_map(lambda x: x[0], fn(params, batch))
        shardings = param_shardings if param_shardings is not None else self.replicated
        return self._call_in_layout(jax.jit(eval_fn, in_shardings=(shardings, self.batch_sharding),
                                            out_shardings=self.replicated))

    def wrap_predict_step(self, predict_fn: Callable, param_shardings=None) -> Callable:
        """predict_fn(params, batch) -> per-example arrays, left split like the batch."""
        predict_fn = self._traced_in_layout(predict_fn)
        if self.mode == "pmap":
            return jax.pmap(predict_fn, axis_name=DATA_AXIS)
        shardings = param_shardings if param_shardings is not None else self.replicated
        return self._call_in_layout(jax.jit(
            predict_fn, in_shardings=(shardings, self.batch_sharding),
            out_shardings=self.batch_sharding))

    def _call_in_layout(self, jitted):
        """Calls (and so traces) a jitted step under the mesh and rules. The wrapper keeps
        `lower`, so the planner and tests can compile it ahead of time."""
        def call(*args):
            with self.active():
                return jitted(*args)

        def lower(*args):
            with self.active():
                return jitted.lower(*args)

        call.lower = lower
        return call


def _first(out):
    state, metrics = out
    return state, jax.tree_util.tree_map(lambda x: x[0], metrics)
