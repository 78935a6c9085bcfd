"""Pinned one-step regression of every task in ssl_jax.tasks.TASKS: each task at a tiny
size, parameters initialised with a fixed seed, its held-out stats (eval mode, the last
example padded with example_weight 0) and one train step's metrics (the loop's train step)
on a fixed batch of its own held-out examples, against numbers recorded from the code before
the task contract was redesigned (issue 12). A change to a model, a loss, a data pipeline or
the contract that moves any of them fails here.

The numbers are computed by the task's compute half, built from the config with its data
pointed at nothing and the facts the loaded task gave: the compute half needs no data, and
the loop's task (a subclass) runs the very same methods."""
from __future__ import annotations

import os
import string

import jax
import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.tasks import TASKS, get_compute, get_task
from ssl_jax.train.optim import make_optimizer
from ssl_jax.train.step import TrainState, make_eval_step, make_train_step
from tests.conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TEXT = [("max_seq_len", "32"), ("batch_size", "4"), ("data_threads", "1")]
BERT_SIZE = [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
             ("model.mlp_dim", "64")]
CONVNET = [("model.channels", "[8, 16]"), ("model.kernels", "[3, 3]"),
           ("model.pool_after", "[True, True]"), ("data_threads", "1"), ("batch_size", "4")]

# case -> (task, config file:arg, overrides)
CASES = {
    "bert_pretrain": ("bert_pretrain", "bert/pretrain.py:tiny,dupe_factor=1",
                      TEXT + BERT_SIZE + [("data.max_predictions_per_seq", "5")]),
    "gpt_pretrain": ("gpt_pretrain", "gpt/pretrain.py:gpt-tiny,seq_len=32,vocab=500",
                     [("batch_size", "4"), ("data_threads", "1"), ("model.num_layers", "1"),
                      ("model.hidden_size", "32"), ("model.num_heads", "2"),
                      ("model.mlp_dim", "64")]),
    "finetune_sequence": ("finetune", "finetune/glue.py:task=mnli,variant=tiny",
                          TEXT + BERT_SIZE + [("finetune.path", f"{FIXTURES}/glue/MNLI")]),
    "finetune_token": ("finetune", "finetune/conll2003.py:variant=tiny,column=ner",
                       TEXT + BERT_SIZE + [("finetune.path", f"{FIXTURES}/conll2003")]),
    "finetune_span": ("finetune", "finetune/squad.py:variant=tiny,version=v1.1",
                      TEXT + BERT_SIZE + [("max_seq_len", "64"),
                                          ("finetune.path", f"{FIXTURES}/squad"),
                                          ("finetune.doc_stride", "16"),
                                          ("finetune.max_query_len", "16")]),
    "jigsaw": ("jigsaw", "vision/jigsaw.py:permutations=10", CONVNET),
    "inpaint": ("inpaint", "vision/inpainting.py:image_size=16,adversarial=0.001", CONVNET),
    "rotation": ("rotation", "vision/rotation.py:image_size=16", CONVNET),
    "mae": ("mae", "vision/mae.py:image_size=16",
            [("model.num_layers", "1"), ("model.hidden_size", "32"), ("model.num_heads", "2"),
             ("model.mlp_dim", "64"), ("data_threads", "1"), ("batch_size", "4"),
             ("pretext.decoder_layers", "1"), ("pretext.decoder_hidden_size", "16"),
             ("pretext.decoder_heads", "2")]),
}

# recorded from the code at 266682a (before the task contract's redesign); one deliberate
# change since: inpaint's held-out adversarial stat weighted by example_weight
EXPECTED: dict[str, dict[str, float]] = {
    'bert_pretrain': {  # re-pinned in issue 15: the held-out instances are drawn keyed
        'eval_mlm_accuracy': 0.0, 'eval_mlm_accuracy_count': 16.0,
        'eval_mlm_loss': 4.9786882400512695, 'eval_mlm_loss_count': 16.0,
        'eval_nsp_accuracy': 0.6666666666666666, 'eval_nsp_accuracy_count': 3.0,
        'eval_nsp_loss': 0.6901370684305826, 'eval_nsp_loss_count': 3.0,
        'train_grad_norm': 2.5663583278656006, 'train_learning_rate': 0.0,
        'train_loss': 5.668095588684082, 'train_mlm_accuracy': 0.0,
        'train_mlm_loss': 4.976803302764893, 'train_nsp_accuracy': 0.5,
        'train_nsp_loss': 0.6912921667098999,
    },
    'finetune_sequence': {
        'eval_accuracy': 0.3333333333333333, 'eval_accuracy_count': 3.0,
        'eval_loss_ce': 1.0986357529958088, 'eval_loss_ce_count': 3.0, 'train_accuracy': 0.25,
        'train_grad_norm': 0.36014899611473083, 'train_learning_rate': 1.9999999494757503e-05,
        'train_loss': 1.095804214477539, 'train_loss_ce': 1.095804214477539,
    },
    'finetune_span': {
        'eval_loss_ce': 4.204302469889323, 'eval_loss_ce_count': 3.0, 'eval_span_accuracy': 0.0,
        'eval_span_accuracy_count': 3.0, 'train_grad_norm': 4.210789203643799,
        'train_learning_rate': 0.0, 'train_loss': 4.218108177185059,
        'train_loss_ce': 4.218108177185059, 'train_span_accuracy': 0.0,
    },
    'finetune_token': {
        'eval_accuracy': 0.14285714285714285, 'eval_accuracy_count': 7.0,
        'eval_loss_ce': 2.189745766775949, 'eval_loss_ce_count': 7.0,
        'train_accuracy': 0.23076923191547394, 'train_grad_norm': 3.690086841583252,
        'train_learning_rate': 1.9999999494757503e-05, 'train_loss': 2.157956600189209,
        'train_loss_ce': 2.157956600189209,
    },
    'gpt_pretrain': {
        'eval_lm_accuracy': 0.0, 'eval_lm_accuracy_count': 96.0,
        'eval_lm_loss': 6.221096038818359, 'eval_lm_loss_count': 96.0,
        'train_grad_norm': 0.9843181371688843, 'train_learning_rate': 0.0,
        'train_lm_accuracy': 0.0, 'train_lm_loss': 6.230223178863525,
        'train_loss': 6.230223178863525,
    },
    'inpaint': {  # the adversarial stat now leaves the padding out (was 1.29898 over 4)
        'eval_adversarial_loss': 1.248143196105957, 'eval_adversarial_loss_count': 3.0,
        'eval_inpaint_loss': 0.34690486730905523, 'eval_inpaint_loss_count': 948.0,
        'train_adversarial_loss': 1.2816518545150757, 'train_grad_norm': 2.7121150493621826,
        'train_inpaint_loss': 0.29437878727912903, 'train_learning_rate': 0.0,
        'train_loss': 1.5760306119918823,
    },
    'jigsaw': {
        'eval_jigsaw_accuracy': 0.0, 'eval_jigsaw_accuracy_count': 3.0,
        'eval_jigsaw_loss': 2.2253150939941406, 'eval_jigsaw_loss_count': 3.0,
        'train_grad_norm': 8.087186813354492, 'train_jigsaw_accuracy': 0.0,
        'train_jigsaw_loss': 2.423837900161743, 'train_learning_rate': 0.0,
        'train_loss': 2.423837900161743,
    },
    'mae': {
        'eval_mae_loss': 1.0065298080444336, 'eval_mae_loss_count': 36.0,
        'train_grad_norm': 0.3392542600631714, 'train_learning_rate': 0.0,
        'train_loss': 0.9950880408287048, 'train_mae_loss': 0.9950880408287048,
    },
    'rotation': {  # added with the task (issue 12), recorded then
        'eval_rotation_accuracy': 0.25, 'eval_rotation_accuracy_count': 12.0,
        'eval_rotation_loss': 1.4150667190551758, 'eval_rotation_loss_count': 12.0,
        'train_grad_norm': 0.3210504353046417, 'train_learning_rate': 0.0,
        'train_loss': 1.4114322662353516, 'train_rotation_accuracy': 0.25,
        'train_rotation_loss': 1.4114322662353516,
    },
}


def test_every_task_has_a_case():
    assert {task for task, _, _ in CASES.values()} == set(TASKS)


def character_vocab(path) -> str:
    """A fixed WordPiece vocabulary of single characters (HF's trainer breaks count ties in
    hash order, so a trained vocabulary may differ between sessions)."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    path.write_text("\n".join(tokens) + "\n")
    return str(path)


def build(case: str, workdir):
    task_name, spec, overrides = CASES[case]
    if task_name in ("bert_pretrain", "finetune"):
        overrides = overrides + [("data.vocab_path", character_vocab(workdir / "vocab.txt"))]
    config = config_lib.load_config(os.path.join(ROOT, "experiments", spec), overrides)
    assert config.task == task_name
    return config, get_task(task_name)(config, str(workdir / "run"))


def fixed_batch(examples, weight):
    """The first len(weight) examples, stacked, with `weight` as example_weight (what the
    loop's eval batches and training batches carry)."""
    examples = examples[:len(weight)]
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch["example_weight"] = np.asarray(weight, np.float32)
    return batch


# what each task's data is read from: pointed at nothing for the compute half
DATA_FIELDS = {"bert_pretrain": ("data.corpus", "no_such_corpus"),
               "gpt_pretrain": ("data.corpus", "no_such_corpus"),
               "finetune": ("finetune.path", "/no/such/dir"),
               "jigsaw": ("data.source", "no_such_images"), "inpaint": ("data.source", "none"),
               "mae": ("data.source", "no_such_images"),
               "rotation": ("data.source", "no_such_images")}


def compute_half(config, task):
    """The task's compute half from `task.facts`, its config's data pointed at nothing."""
    config = config.copy_and_resolve_references()
    field, nothing = DATA_FIELDS[config.task]
    config_lib.apply_overrides(config, [(field, nothing)])
    compute = get_compute(config.task)(config, **task.facts)
    assert isinstance(task, type(compute)) and type(compute) is not type(task)
    return compute


def one_step_metrics(config, task, examples) -> dict[str, float]:
    """eval_<stat> (sum / count, and count) on a batch whose last example is padding, and
    train_<metric> of one train step on the same examples, all weighted 1."""
    params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
    n = min(4, len(examples))  # CoNLL's fixture has 3 held-out sentences
    out = {}
    stats = jax.jit(make_eval_step(task))(params, fixed_batch(examples, [1] * (n - 1) + [0]))
    for k, (s, c) in stats.items():
        out[f"eval_{k}"] = float(s) / max(float(c), 1e-9)
        out[f"eval_{k}_count"] = float(c)
    tx, schedule = make_optimizer(config, task.update_multipliers(params))
    state = TrainState.create(apply_fn=None, params=params, tx=tx)
    _, metrics = jax.jit(make_train_step(task, config.seed, schedule))(
        state, fixed_batch(examples, [1] * n))
    out.update({f"train_{k}": float(v) for k, v in metrics.items()})
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_metrics_are_pinned(case, tmp_path):
    config, task = build(case, tmp_path)
    got = one_step_metrics(config, compute_half(config, task), task.eval_examples())
    expected = EXPECTED[case]
    assert sorted(got) == sorted(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-7), (k, got[k], v)
