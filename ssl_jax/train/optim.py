"""AdamW with BERT's settings, warm-up then linear/cosine decay, global-norm clipping."""
from __future__ import annotations

import jax
import numpy as np
import optax

NO_DECAY = ("bias", "scale")  # LayerNorm scales and every bias


def learning_rate_schedule(config) -> optax.Schedule:
    """Linear warm-up to `optimizer.learning_rate`, then linear or cosine decay to
    `optimizer.end_learning_rate` at `num_train_steps`."""
    opt = config.optimizer
    total = config.num_train_steps
    warmup = opt.warmup_steps if opt.warmup_steps >= 1 else int(opt.warmup_steps * total)
    if not 0 <= warmup <= total:
        raise ValueError(f"optimizer.warmup_steps={opt.warmup_steps} must be a step count in "
                         f"[0, num_train_steps={total}] or a fraction in [0, 1)")
    decay_steps = max(total - warmup, 1)
    if opt.decay == "linear":
        decay = optax.linear_schedule(opt.learning_rate, opt.end_learning_rate, decay_steps)
    elif opt.decay == "cosine":
        decay = optax.cosine_decay_schedule(opt.learning_rate, decay_steps,
                                            alpha=opt.end_learning_rate / opt.learning_rate)
    elif opt.decay == "constant":
        decay = optax.constant_schedule(opt.learning_rate)
    else:
        raise ValueError(f"optimizer.decay={opt.decay!r}; expected 'linear', 'cosine' or "
                         f"'constant'")
    if warmup == 0:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(0.0, opt.learning_rate, warmup), decay], [warmup])


def decay_mask(params):
    """True where weight decay applies: every weight matrix and embedding, no bias/LN scale."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in NO_DECAY, params)


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's multiplier (a scalar or an array that
    broadcasts to the parameter, e.g. [layers, 1, ...] for scanned layers)."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, m: (u * m).astype(u.dtype), updates,
                                      multipliers), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config, multipliers=None) -> tuple[optax.GradientTransformation,
                                                      optax.Schedule]:
    """AdamW from config.optimizer. `multipliers` (a tree like the params, or None) scales
    each parameter's learning rate: 0 freezes it (its gradient is also left out of the
    clipping norm and its update is exactly zero, weight decay included), d**k is
    layer-wise decay."""
    opt = config.optimizer
    if opt.name != "adamw":
        raise ValueError(f"optimizer.name={opt.name!r}; only 'adamw' is implemented")
    schedule = learning_rate_schedule(config)
    chain = []
    if multipliers is not None:
        chain.append(scale_by_multipliers(jax.tree_util.tree_map(
            lambda m: np.asarray(np.asarray(m) > 0, np.float32), multipliers)))
    if opt.grad_clip_norm:
        chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                             weight_decay=opt.weight_decay, mask=decay_mask))
    if multipliers is not None:
        chain.append(scale_by_multipliers(multipliers))
    return optax.chain(*chain), schedule
