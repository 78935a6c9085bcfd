"""The pure train/eval steps, wrapped by jax.jit (sharded over a mesh) or jax.pmap.

A task reports every quantity as a (sum, count) pair so that a mean over a batch split
across devices (or microbatches) equals the mean over the whole batch: the objective is
    sum_t  sum_t / psum(count_t)         for t in task.loss_terms
and gradients are psum'ed. With jit the psums are no-ops (the arrays are global).

Gradient accumulation (`accumulate` = k > 1) splits the batch into k microbatches inside the
one jitted step and scans over them, carrying the summed gradients; one optimizer update
follows. The counts of the whole batch are taken first (a scan that reads only the counts:
they depend on the batch, not the parameters, so XLA drops the model from it), so each
microbatch's gradient is of sum_t / count_t(whole batch) and the result equals one pass
over the whole batch, whatever the microbatches' shares of masked tokens or padding.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from ssl_jax.models.partitioning import constrain

Stats = dict[str, tuple[jax.Array, jax.Array]]


class TrainState(train_state.TrainState):
    """step, params, opt_state (apply_fn and tx are static)."""


def _reduce(x, axis_name):
    return jax.lax.psum(x, axis_name) if axis_name else x


def _means(stats: Stats, axis_name) -> dict[str, jax.Array]:
    return {k: _reduce(s, axis_name) / jnp.maximum(_reduce(c, axis_name), 1e-9)
            for k, (s, c) in stats.items()}


def microbatches(batch: dict[str, Any], k: int) -> dict[str, Any]:
    """[B, ...] -> [k, B/k, ...]; microbatch i holds rows i, i+k, i+2k, ... so that each
    device's block of the (batch-sharded) rows holds a share of every microbatch."""
    def split(x):
        x = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
        return constrain(x, None, "batch", *([None] * (x.ndim - 2)))
    return jax.tree_util.tree_map(split, batch)


def make_train_step(task, seed: int, schedule: optax.Schedule,
                    axis_name: str | None = None, accumulate: int = 1) -> Callable:
    if accumulate < 1:
        raise ValueError(f"grad_accum_steps={accumulate} must be >= 1")

    def grads_and_stats(params, batch, rng, counts):
        """d/dparams of sum_t sum_t / counts_t, and the stats."""
        def objective(p):
            stats = task.stats(p, batch, rng, train=True)
            loss = 0.0
            for term in task.loss_terms:
                loss = loss + stats[term][0] / jnp.maximum(counts[term], 1e-9)
            return loss, stats
        (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return loss, stats, grads

    def train_step(state: TrainState, batch: dict[str, Any]):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
        if accumulate == 1:
            # the counts of the whole batch come out of the same forward pass
            def objective(p):
                stats = task.stats(p, batch, rng, train=True)
                loss = 0.0
                for term in task.loss_terms:
                    total, count = stats[term]
                    count = _reduce(jax.lax.stop_gradient(count), axis_name)
                    loss = loss + total / jnp.maximum(count, 1e-9)
                return loss, stats
            (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        else:
            micro = microbatches(batch, accumulate)
            rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(accumulate))

            def count_one(_, xs):
                mb, r = xs
                stats = task.stats(state.params, mb, r, train=True)
                return None, {t: jax.lax.stop_gradient(stats[t][1]) for t in task.loss_terms}

            _, per_micro = jax.lax.scan(count_one, None, (micro, rngs))
            counts = {t: _reduce(jnp.sum(c), axis_name) for t, c in per_micro.items()}

            def accumulate_one(carry, xs):
                mb, r = xs
                loss_sum, stat_sums, grad_sum = carry
                loss, stats, grads = grads_and_stats(state.params, mb, r, counts)
                stat_sums = jax.tree_util.tree_map(jnp.add, stat_sums, stats)
                grad_sum = jax.tree_util.tree_map(jnp.add, grad_sum, grads)
                return (loss_sum + loss, stat_sums, grad_sum), None

            first = jax.tree_util.tree_map(lambda x: x[0], micro)
            stat_zeros = jax.tree_util.tree_map(
                jnp.zeros_like, jax.eval_shape(lambda: task.stats(state.params, first, rng,
                                                                  train=True)))
            grad_zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
            (loss, stats, grads), _ = jax.lax.scan(
                accumulate_one, (jnp.zeros((), jnp.float32), stat_zeros, grad_zeros),
                (micro, rngs))
        grads = _reduce(grads, axis_name)
        metrics = _means(stats, axis_name)
        metrics["loss"] = _reduce(loss, axis_name)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["learning_rate"] = schedule(state.step)
        return state.apply_gradients(grads=grads), metrics

    return train_step


def make_eval_step(task, axis_name: str | None = None) -> Callable:
    def eval_step(params, batch):
        stats = task.stats(params, batch, None, train=False)
        return {k: (_reduce(s, axis_name), _reduce(c, axis_name)) for k, (s, c) in stats.items()}

    return eval_step
