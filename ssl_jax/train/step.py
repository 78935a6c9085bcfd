"""The pure train/eval steps, wrapped by jax.jit (sharded over a mesh) or jax.pmap.

A task reports every quantity as a (sum, count) pair so that a mean over a batch split
across devices equals the mean over the whole batch: the objective is
    sum_t  sum_t / psum(count_t)         for t in task.loss_terms
and gradients are psum'ed. With jit the psums are no-ops (the arrays are global).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

Stats = dict[str, tuple[jax.Array, jax.Array]]


class TrainState(train_state.TrainState):
    """step, params, opt_state (apply_fn and tx are static)."""


def _reduce(x, axis_name):
    return jax.lax.psum(x, axis_name) if axis_name else x


def _means(stats: Stats, axis_name) -> dict[str, jax.Array]:
    return {k: _reduce(s, axis_name) / jnp.maximum(_reduce(c, axis_name), 1e-9)
            for k, (s, c) in stats.items()}


def make_train_step(task, seed: int, schedule: optax.Schedule,
                    axis_name: str | None = None) -> Callable:
    def train_step(state: TrainState, batch: dict[str, Any]):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
        if axis_name:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

        def objective(params):
            stats = task.stats(params, batch, rng, train=True)
            loss = 0.0
            for term in task.loss_terms:
                total, count = stats[term]
                count = _reduce(jax.lax.stop_gradient(count), axis_name)
                loss = loss + total / jnp.maximum(count, 1e-9)
            return loss, stats

        (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
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
