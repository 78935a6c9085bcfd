"""BERT pre-training (MLM + NSP) and the paper's ablations.

    python launch.py --config experiments/bert/pretrain.py:mini --workdir runs/bert_mini
    python launch.py --config experiments/bert/pretrain.py:mini,mask_rate=0.2,nsp=False ...
    python launch.py --config experiments/bert/pretrain.py:tiny,steps=300 --workdir runs/abl --sweep
    # a large corpus: prepare it once into shards, then train on them
    python -m ssl_jax.data.prepare --config experiments/bert/pretrain.py:mini,files='corpus/*.txt' --output data/bert_mini
    python launch.py --config experiments/bert/pretrain.py:mini,files='corpus/*.txt' --workdir runs/bert_mini \\
        --config.data.prepared=data/bert_mini

arg: a size (tiny mini small medium base large) and key=value ablations:
  mask_rate   fraction of non-special tokens selected (0.15)
  mask_mix    "[MASK]-random-kept" percentages of the selected tokens ("80-10-10")
  nsp         next-sentence prediction on/off (True); off = single segments, MLM only
  wwm         whole-word masking (False)
  masking     "static" (dupe_factor pre-masked copies) or "dynamic" (re-masked each epoch)
  files       a glob of your own .txt/.jsonl files: trains on them (corpus=files)
  corpus      "embedded" (the default) or a prepared TFDS text dataset
  steps, batch, seq_len, lr   the usual run knobs
"""
from experiments import common
from ssl_jax.config import Args, optional

ARGS = Args(bare="variant", variant="mini", mask_rate=0.15, mask_mix="80-10-10", nsp=True,
            wwm=False, masking="static", dupe_factor=10, steps=10000, batch=32, seq_len=128,
            lr=1e-4, corpus=optional(str), files=optional(str))


def _mix(mix: str) -> tuple[float, float]:
    try:
        mask, random, kept = (float(x) / 100 for x in mix.split("-"))
    except ValueError:
        raise ValueError(f"mask_mix={mix!r}; expected three percentages like '80-10-10'") from None
    if abs(mask + random + kept - 1.0) > 1e-6:
        raise ValueError(f"mask_mix={mix!r} does not add up to 100")
    return mask, random


def get_config(arg: str | None = None):
    a = ARGS.parse(arg)
    mask_prob, random_prob = _mix(a["mask_mix"])
    data = common.corpus_data(a["corpus"], a["files"])
    data.update(dict(nsp=a["nsp"], mask_rate=a["mask_rate"], mask_token_prob=mask_prob,
                     random_token_prob=random_prob, whole_word_masking=a["wwm"],
                     masking=a["masking"], dupe_factor=a["dupe_factor"], short_seq_prob=0.1,
                     random_next_prob=0.5))
    data.max_predictions_per_seq = None  # ceil(mask_rate * max_seq_len)
    return common.training(
        task="bert_pretrain", model=common.bert_model(a["variant"]), data=data,
        batch_size=a["batch"], max_seq_len=a["seq_len"], num_train_steps=a["steps"],
        optimizer=dict(name="adamw", learning_rate=a["lr"], end_learning_rate=0.0,
                       warmup_steps=0.1, decay="linear", b1=0.9, b2=0.999, eps=1e-6,
                       weight_decay=0.01, grad_clip_norm=1.0))


derived_fields = common.step_intervals

# BERT paper Table 8 rows (MASK/SAME/RND) as [MASK]-random-kept, plus sizes and NSP.
MASK_MIXES = ("80-10-10", "100-0-0", "80-20-0", "80-0-20", "0-80-20", "0-100-0")
MASK_RATES = (0.10, 0.15, 0.20, 0.40)
SIZES = ("tiny", "mini", "small", "medium")


def get_sweep() -> dict[str, dict]:
    """name -> overrides of the base config (the arg, e.g. 'tiny,steps=300'): mask rates,
    mask mixes (the two data fields a mix sets), NSP off, sizes (the model's size fields)."""
    points = {f"mask_rate={rate:.2f}": {"data.mask_rate": rate} for rate in MASK_RATES}
    for mix in MASK_MIXES:
        mask_prob, random_prob = _mix(mix)
        points[f"mask_mix={mix}"] = {"data.mask_token_prob": mask_prob,
                                     "data.random_token_prob": random_prob}
    points["nsp=False"] = {"data.nsp": False}
    points.update({f"size={s}": common.bert_size(s) for s in SIZES})
    return points
