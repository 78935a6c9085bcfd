"""Logical axis names: every parameter and block-boundary activation says what its axes
mean; a rule set (ssl_jax.train.sharding) maps the names onto a device mesh.

Parameters carry `nn.LogicallyPartitioned` metadata from their initialisers (`axes`), so
`init` returns boxed leaves and `nn.get_partition_spec` reads their names; callers that only
want arrays use `init_unboxed`. Activations go through `constrain`, which is a no-op unless a
rule set and a mesh are active (`nn.logical_axis_rules` + `jax.set_mesh`), as under pmap or
in a plain `apply`.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

# The names a model may use. A rule set may map each to mesh axes; a name it does not map is
# replicated. `layers` is the leading axis of scanned stacks (nn.scan's metadata_params).
LOGICAL_AXES = (
    "batch", "length",  # activations
    "embed",  # the model width (residual stream, LayerNorm scales, embedding rows' width)
    "mlp",  # the MLP's inner width (and the output width of hidden->hidden denses)
    "heads", "kv",  # attention heads, and each head's width
    "vocab", "position", "segment",  # embedding tables' rows
    "classes",  # a head's outputs (few: never worth sharding)
    "pixels",  # a patch's flattened pixels (ViT/MAE patch embedding and prediction)
    "channels", "channels_in",  # conv kernels' output and input channels
    "layers",
)


def axes(init: Callable, *names: str | None) -> Callable:
    """`init` with logical axis names for the parameter it creates."""
    return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
    """Pins an activation's layout by logical names (no-op without active rules)."""
    return nn.with_logical_constraint(x, tuple(names))


def unbox(tree: Any) -> Any:
    """Parameters without their partitioning metadata (plain arrays)."""
    return nn.meta.unbox(tree)


def init_unboxed(module: nn.Module, *args, **kwargs) -> dict:
    """`module.init(...)` as plain arrays: what checkpoint converters and tools want."""
    return unbox(module.init(*args, **kwargs))


def dense_init(kernel_init: Callable, inputs: str | None, outputs: str | None) -> dict:
    """nn.Dense keyword arguments: `kernel_init` and a zero bias, with logical axes."""
    return dict(kernel_init=axes(kernel_init, inputs, outputs),
                bias_init=axes(nn.initializers.zeros, outputs))


def conv_init(kernel_init: Callable = nn.initializers.lecun_normal()) -> dict:
    """nn.Conv keyword arguments for 2-D convolutions: [height, width, in, out] kernels and a
    zero bias, with axes (the window's axes are never sharded)."""
    return dict(kernel_init=axes(kernel_init, None, None, "channels_in", "channels"),
                bias_init=axes(nn.initializers.zeros, "channels"))
