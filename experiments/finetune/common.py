"""The BERT fine-tuning recipe shared by every experiments/finetune/<task>.py.

arg keys (a bare word is `init`):
  init          a pre-training workdir or an HF-format BERT directory ("" = random encoder)
  path          the task's released files (a directory); unset = the prepared TFDS dataset
  data_dir      TFDS data dir
  lr, batch, epochs, steps (steps > 0 replaces epochs), seq_len, seed
  variant       the random encoder's size when init is "" (tiny mini small medium base large)
  random_init   True: init's size and vocabulary, fresh weights (the no-pre-training baseline)
  freeze_embeddings, freeze_layers, linear_probe, layer_decay, pooling
get_sweep: the paper's learning rates 5e-5, 4e-5, 3e-5, 2e-5 (batch 32, 3 epochs); the sweep
table names the best point by the task's dev metric.
"""
from experiments import common

DEFAULTS = dict(variant="base", init="", path=None, data_dir=None, lr=2e-5, batch=32,
                epochs=3.0, steps=0, seq_len=128, seed=0, random_init=False,
                freeze_embeddings=False, freeze_layers=0, linear_probe=False, layer_decay=1.0,
                pooling="pooler")
LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)


def config(dataset: str, arg: str | None, **defaults):
    a = dict(DEFAULTS, **defaults)
    parts = [p for p in (arg or "").split(",") if p.strip()]
    parts = [p if "=" in p else f"init={p}" for p in parts]
    a = common.parse_arg(",".join(parts), a)
    steps = int(a["steps"])
    c = common.finetune(dataset, model=common.bert_model(a["variant"]),
                        batch_size=int(a["batch"]), max_seq_len=int(a["seq_len"]),
                        num_train_epochs=0.0 if steps else float(a["epochs"]),
                        num_train_steps=steps or 1, seed=int(a["seed"]))
    c.optimizer.learning_rate = float(a["lr"])
    ft = c.finetune
    ft.init = str(a["init"] or "")
    for key in ("path", "data_dir"):
        if a[key]:
            ft[key] = str(a[key])
    for key in ("random_init", "freeze_embeddings", "linear_probe"):
        ft[key] = bool(a[key])
    ft.freeze_layers = int(a["freeze_layers"])
    ft.layer_decay = float(a["layer_decay"])
    ft.pooling = str(a["pooling"])
    if steps:
        c.eval_every_steps = c.checkpoint_every_steps = max(1, steps // 3)
    return c


def sweep(arg: str | None) -> dict[str, str]:
    """name -> config arg: the base arg with each of the paper's learning rates."""
    base = ",".join(p for p in (arg or "").split(",") if p.strip() and not p.startswith("lr="))
    return {f"lr={lr:g}": ",".join(p for p in (base, f"lr={lr:g}") if p)
            for lr in LEARNING_RATES}
