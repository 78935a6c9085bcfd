"""The fine-tuning recipe shared by every experiments/finetune/<task>.py: BERT's, or GPT-1's
when init is a GPT (gpt_pretrain run or HF GPT-2; ssl_jax/tasks/finetune.py).

arg keys (a bare word is `init`):
  init          a pre-training workdir or an HF-format BERT / GPT-2 directory ("" = random
                BERT encoder)
  path          the task's released files (a directory); unset = the prepared TFDS dataset
  data_dir      TFDS data dir
  lr, batch, epochs, steps (steps > 0 replaces epochs), seq_len, seed
  variant       the random encoder's size when init is "" (tiny mini small medium base large)
  random_init   True: init's size and vocabulary, fresh weights (the no-pre-training baseline)
  freeze_embeddings, freeze_layers, linear_probe, layer_decay, pooling
  lm_coef       GPT init: the auxiliary LM loss's weight (0.5, the paper's; 0 = off)
get_sweep: the paper's learning rates 5e-5, 4e-5, 3e-5, 2e-5 (batch 32, 3 epochs); the sweep
table names the best point by the task's dev metric.
derived_fields: with epochs, the task evaluates and checkpoints once per epoch; with steps
(the arg, or --config.num_train_steps, which then replaces epochs) 3 times per run.
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="init", variant="base", init="", path=optional(str), data_dir=optional(str),
            lr=2e-5, batch=32, epochs=3.0, steps=0, seq_len=128, seed=0, random_init=False,
            freeze_embeddings=False, freeze_layers=0, linear_probe=False, layer_decay=1.0,
            pooling="pooler", lm_coef=0.5)
LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)


def config(dataset: str, a: dict):
    """The fine-tuning run of `dataset` from parsed args `a` (ARGS, or a task's ARGS.updated)."""
    steps = a["steps"]
    c = common.finetune(dataset, model=common.bert_model(a["variant"]), batch_size=a["batch"],
                        max_seq_len=a["seq_len"], num_train_epochs=0.0 if steps else a["epochs"],
                        num_train_steps=steps or 1, seed=a["seed"])
    c.optimizer.learning_rate = a["lr"]
    ft = c.finetune
    for key in ("init", "random_init", "freeze_embeddings", "linear_probe", "freeze_layers",
                "layer_decay", "pooling", "lm_coef"):
        ft[key] = a[key]
    for key in ("path", "data_dir"):
        if a[key]:
            ft[key] = a[key]
    return c


def derived_fields(c, explicit=frozenset()) -> dict:
    """An explicit num_train_steps replaces epochs; with epochs > 0 the task sets the eval and
    checkpoint intervals to one epoch (these are placeholders), so overriding them is an error;
    with steps, 3 evaluations and checkpoints per run."""
    out = {}
    epochs = c.num_train_epochs
    if "num_train_steps" in explicit:
        if "num_train_epochs" in explicit and epochs > 0:
            raise ValueError(f"num_train_steps and num_train_epochs={epochs} are both set; set "
                             f"num_train_epochs=0 to count steps")
        epochs = out["num_train_epochs"] = 0.0
    if epochs > 0:
        fixed = sorted(explicit & {"eval_every_steps", "checkpoint_every_steps"})
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot be set with num_train_epochs={epochs} "
                             f"(the run evaluates and checkpoints once per epoch); set "
                             f"num_train_epochs=0 and num_train_steps to count steps")
        return dict(out, eval_every_steps=1000, checkpoint_every_steps=1000)
    every = max(1, c.num_train_steps // 3)
    return dict(out, eval_every_steps=every, checkpoint_every_steps=every)


def sweep() -> dict[str, dict]:
    """name -> overrides: each of the paper's learning rates."""
    return {f"lr={lr:g}": {"optimizer.learning_rate": lr} for lr in LEARNING_RATES}
