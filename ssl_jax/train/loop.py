"""The one generic training loop: any task, jit or pmap, checkpoints, eval, pre-emption."""
from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from ssl_jax.data.batching import eval_batches, with_example_weight
from ssl_jax.files import write_atomic
from ssl_jax.train import report
from ssl_jax.train.checkpoint import Checkpointer
from ssl_jax.train.metrics import MetricWriter
from ssl_jax.train.optim import make_optimizer
from ssl_jax.train.sharding import Parallel, check_batch_size
from ssl_jax.train.step import TrainState, make_eval_step, make_train_step
from ssl_jax.train.workdir import RunDir, is_primary

_POSITIVE = ("batch_size", "max_seq_len", "log_every_steps", "eval_every_steps",
             "checkpoint_every_steps")


def check_config(config) -> Parallel:
    """Top-level checks shared by every task (task-specific ones live in the task); returns
    the run's layout (mesh and sharding rules, checked)."""
    for name in _POSITIVE:
        if not isinstance(config[name], int) or config[name] < 1:
            raise ValueError(f"config.{name}={config[name]!r} must be a positive integer")
    steps = config.num_train_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"config.num_train_steps={steps!r} must be an integer >= 0 (0: the "
                         f"initial parameters are evaluated and kept untrained)")
    accumulate = config.get("grad_accum_steps", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"config.grad_accum_steps={accumulate!r} must be a positive integer "
                         f"(1: no accumulation)")
    parallel = Parallel.from_config(config)
    check_batch_size(config.batch_size, accumulate, parallel.mesh)
    return parallel


# SIGUSR2: the pre-emption / time-limit warning of Slurm and submitit (which requeues the
# job once the loop has saved and returned, ssl_jax.cluster.job)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class _OnStopSignals:
    """A context in which STOP_SIGNALS call `self._handle`; the previous handlers are put
    back on exit."""

    def __enter__(self):
        self._previous = {}
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):
        raise NotImplementedError

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _StopRequest(_OnStopSignals):
    """SIGTERM/SIGINT/SIGUSR2 set a flag; the loop saves a checkpoint and returns at the next
    step (a multi-process run: at the next log step that every process agrees on)."""

    def __init__(self):
        self.signal: int | None = None

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def agreed(self, step: int, every: int) -> bool:
        """Whether to stop at `step`. One process: as soon as a signal came. Several: every
        `every` steps they compare flags (an all-gather), so all stop at the same step (a
        process that stopped alone would leave the others waiting in a collective)."""
        if jax.process_count() == 1:
            return self.signal is not None
        if step % every:
            return False
        flags = multihost_utils.process_allgather(np.asarray(self.signal or 0, np.int32))
        agreed = int(np.max(flags))
        if agreed and self.signal is None:
            self.signal = agreed  # another process's signal: stop under its name
        return agreed != 0


class _ReportInterrupt(BaseException):
    """A signal while a completed run measures and writes its report."""


class _GuardReport(_OnStopSignals):
    """While finish() and the report run: a stop signal aborts them (raises
    _ReportInterrupt) instead of killing the process mid-write (every file is written whole,
    so the workdir stays consistent and a re-run of the command redoes this part)."""

    def _handle(self, signum, frame):
        raise _ReportInterrupt(signum)


def _host(tree) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(tree).items()}


def evaluate(task, parallel: Parallel, eval_step, params, batch_size: int,
             max_batches: int | None = None, predict_step=None) -> dict[str, float]:
    """Means of every task stat over the held-out examples, plus eval_loss; with a
    `predict_step`, also the task's scores of its predictions (F1, MCC, SQuAD EM, ...)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    outputs: dict[str, list] = {}
    for batch in eval_batches(task.eval_examples(), batch_size, max_batches):
        device_batch = parallel.put_global_batch(batch)  # every process holds the whole batch
        out = jax.device_get(eval_step(params, device_batch))
        for k, (s, c) in out.items():
            sums[k] = sums.get(k, 0.0) + float(s)
            counts[k] = counts.get(k, 0.0) + float(c)
        if predict_step is not None:
            real = batch["example_weight"] > 0  # drop the last batch's padding
            for k, v in parallel.get_batch(predict_step(params, device_batch)).items():
                outputs.setdefault(k, []).append(v[real])
    if not sums:
        return {}
    means = {k: sums[k] / max(counts[k], 1e-9) for k in sums}
    means.update(task.derived_metrics(means))
    if predict_step is not None:
        means.update(task.score({k: np.concatenate(v) for k, v in outputs.items()}))
    means["loss"] = sum(means[t] for t in task.loss_terms)
    return {f"eval_{k}": v for k, v in means.items()}


def train_and_evaluate(config, workdir: str, task, *, progress: bool = True,
                       stop_after: int | None = None) -> dict[str, Any]:
    """Trains `task` into `workdir`; re-running the same call resumes (the workdir contract of
    ssl_jax.train.workdir: another run's workdir is refused, a longer num_train_steps extends
    the run, a failure before the first step leaves no trace).

    task: a built task (ssl_jax.tasks.base.Task), or a callable (config, workdir) -> task,
    e.g. the class `ssl_jax.tasks.get_task(config.task)` returns, which is called here, inside
    the workdir contract (it reads data and raises on bad input). The loop knows no task by
    name.

    stop_after: run at most this many steps in this call, then checkpoint and return (a
    time-sliced job; the next call resumes exactly where this one stopped).
    Returns the final metrics (train and eval) and how the run ended."""
    parallel = check_config(config)
    with RunDir(config, workdir) as run_dir:  # refuses another run's workdir, writing nothing
        return _train(config, workdir, run_dir, task, parallel, progress, stop_after)


def build_state(config, task, parallel: Parallel, *, fresh: bool):
    """The TrainState, created sharded (parameters initialised by one jit whose outputs
    are already in their shardings: no full copy on one device), with its shardings and
    the optimizer's schedule. fresh: a new run (task.transfer places e.g. a pre-trained
    encoder), else the initial values are overwritten by a restore."""
    rng = jax.random.PRNGKey(config.seed)
    param_shardings = parallel.param_shardings(jax.eval_shape(task.init_boxed, rng))
    abstract_params = jax.eval_shape(task.init_params, rng)
    tx, schedule = make_optimizer(config, task.update_multipliers(abstract_params))
    apply_fn = task.build_model(train=True).apply

    def create(params):
        state = TrainState.create(apply_fn=apply_fn, params=params, tx=tx)
        return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so orbax restores it

    shardings = parallel.state_shardings(jax.eval_shape(create, abstract_params),
                                         param_shardings, tx)
    if parallel.mode == "pmap":
        shardings = jax.tree_util.tree_map(lambda _: parallel.replicated, shardings)
    params = jax.jit(task.init_params, out_shardings=shardings.params)(rng)
    if fresh:
        params = jax.device_put(task.transfer(params), shardings.params)
    state = jax.jit(create, in_shardings=(shardings.params,), out_shardings=shardings,
                    donate_argnums=(0,))(params)
    return state, shardings, schedule


def _train(config, workdir: str, run_dir: RunDir, task, parallel: Parallel, progress: bool,
           stop_after: int | None) -> dict[str, Any]:
    task = task(config, workdir) if callable(task) else task  # reads data, raises on bad input

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint_keep,
                                best_metric=task.best_metric, best_mode=task.best_mode)
    resumed_from = checkpointer.latest_step()
    try:
        run_dir.record(config, resumed_from)  # config.json (+ history); refuses a shrunk run
    except ValueError:
        checkpointer.close()
        raise
    try:
        state, shardings, schedule = build_state(config, task, parallel,
                                                 fresh=resumed_from is None)
    except ValueError:  # e.g. a parameter that does not divide over its mesh axes
        checkpointer.close()
        raise
    dataset = task.train_dataset(jax.process_index(), jax.process_count())
    iterator = iter(dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=config.data_threads, prefetch_buffer_size=8)))
    if resumed_from is not None:  # onto this run's mesh, whatever mesh saved it
        abstract = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        del state
        state, data_state = checkpointer.restore(abstract)
        iterator.set_state(data_state)
    start = int(state.step)
    writer = MetricWriter(workdir, resume_step=resumed_from, primary=is_primary())
    state = parallel.put_state(state, shardings)
    train_step = parallel.wrap_train_step(
        make_train_step(task, config.seed, schedule, parallel.axis_name,
                        config.get("grad_accum_steps", 1)), shardings)
    eval_step = parallel.wrap_eval_step(make_eval_step(task, parallel.axis_name),
                                        shardings.params)
    predict_step = (parallel.wrap_predict_step(task.predict, shardings.params)
                    if task.predict_outputs else None)

    total = config.num_train_steps
    tokens_per_step = config.batch_size * task.tokens_per_example()
    bar = tqdm(total=total, initial=start, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True, mininterval=1.0, desc="train")
    pending: tuple[int, Any] | None = None
    previous = writer.previous  # a resumed (or finished) run's last record
    last: dict[str, float] = previous[-1] if previous else {}
    ended = "completed"
    window_start, window_steps = time.perf_counter(), 0

    def check(step: int, metrics) -> dict[str, float]:
        values = _host(metrics)
        if not math.isfinite(values["loss"]):
            keep = checkpointer.latest_step()
            raise FloatingPointError(
                f"loss is {values['loss']} at step {step}; stopping. The last good checkpoint "
                f"(step {keep}) is kept in {os.path.join(workdir, 'checkpoints')}")
        return values

    try:
        if total == 0 and resumed_from is None:  # an untrained (random-init) baseline
            last = writer.write(0, evaluate(task, parallel, eval_step, state.params,
                                            config.batch_size, config.get("num_eval_batches"),
                                            predict_step))
            checkpointer.save(0, parallel.get_state(state), iterator.get_state(), last)
            run_dir.started()
        with _StopRequest() as stop:
            for step in range(start + 1, total + 1):
                batch = parallel.put_batch(with_example_weight(next(iterator)))
                state, metrics = train_step(state, batch)
                run_dir.started()
                window_steps += 1
                if pending is not None:  # read the previous step's metrics: one step late
                    last = check(*pending)
                    bar.set_postfix(loss=f"{last['loss']:.3f}", refresh=False)
                pending = (step, metrics)
                stopping = (stop.agreed(step, config.log_every_steps)
                            or step - start == stop_after)
                is_eval = step % config.eval_every_steps == 0 or step == total
                is_ckpt = (step % config.checkpoint_every_steps == 0 or step == total
                           or stopping)
                if step % config.log_every_steps == 0 or is_eval or is_ckpt:
                    last = check(*pending)
                    pending = None
                    elapsed = time.perf_counter() - window_start
                    record = dict(last, tokens_per_s=tokens_per_step * window_steps / elapsed,
                                  steps_per_s=window_steps / elapsed)
                    eval_metrics = {}
                    if is_eval:
                        # state.params: replicated (jit) or one copy per device (pmap)
                        eval_metrics = evaluate(task, parallel, eval_step, state.params,
                                                config.batch_size, config.get("num_eval_batches"),
                                                predict_step)
                        record.update(eval_metrics)
                    last = writer.write(step, record)
                    bar.set_postfix(loss=f"{last['loss']:.3f}",
                                    tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                    if is_ckpt:
                        checkpointer.save(step, parallel.get_state(state), iterator.get_state(),
                                          eval_metrics or None)
                    window_start, window_steps = time.perf_counter(), 0
                bar.update(1)
                if stopping:
                    ended = (f"stopped by signal {signal.Signals(stop.signal).name} at step {step}"
                             if stop.signal is not None else f"paused at step {step}")
                    break
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
    summary = {"ended": ended, "step": int(jax.device_get(parallel.get_state(state).step)),
               # a run stopped by a signal: its name, so the command exits 128 + its number
               **({"signal": signal.Signals(stop.signal).name}
                  if ended.startswith("stopped") else {}),
               "resumed_from": resumed_from, "best_checkpoint": checkpointer.best_step(),
               "selection": f"{task.best_metric}:{task.best_mode}",
               **{k: v for k, v in last.items() if k != "step"}}
    if ended == "completed":
        params = parallel.params_on_host(state.params)  # a collective: every process takes part
    if is_primary():  # the workdir's one writer (the others return the summary without
        # what finish() measures)
        if ended == "completed":
            try:
                with _GuardReport():
                    summary.update(task.finish(params, workdir))
                    report.write_report(workdir, config, task.describe(), summary)
            except _ReportInterrupt as e:
                name = signal.Signals(e.args[0]).name
                summary.update(ended=f"trained to step {summary['step']}, then stopped by "
                                     f"signal {name} while writing the report; re-run the "
                                     f"same command to complete it", signal=name)
        write_atomic(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
    return summary
