"""The main job: pre-train BERT-mini (MLM + NSP) on the embedded corpus, then fine-tune it on a
label-free task from the same corpus (which of its 8 longest documents a sentence comes
from), from the pre-trained encoder and from a random one with the same budget.

    python launch.py --config experiments/quickstart.py --workdir runs/quickstart

Writes pretrain/, finetune_pretrained/, finetune_random_init/ (each a full run: metrics,
checkpoints, report), and report.md + transfer.json comparing the two fine-tuning runs.
"""
import ml_collections

from experiments import common
from experiments.finetune import passage_source
from ssl_jax.config import stage_fields


def pretrain_config():
    data = common.text_data("embedded")
    data.update(dict(vocab_size=8000, nsp=True, mask_rate=0.15, mask_token_prob=0.8,
                     random_token_prob=0.1, max_predictions_per_seq=None,
                     whole_word_masking=False, masking="dynamic", dupe_factor=2,
                     short_seq_prob=0.1, random_next_prob=0.5))
    return common.training(
        task="bert_pretrain", model=common.bert_model("mini"), data=data,
        batch_size=32, max_seq_len=128, num_train_steps=300,
        # lr 5e-4 leaves the unigram plateau within 300 steps; 1e-3 and 2e-3 stay on it.
        optimizer=dict(name="adamw", learning_rate=5e-4, end_learning_rate=0.0,
                       warmup_steps=0.1, decay="linear", b1=0.9, b2=0.999, eps=1e-6,
                       weight_decay=0.01, grad_clip_norm=1.0))


def pretrain_intervals(config, explicit=frozenset()) -> dict:
    """30 metrics lines, 3 evaluations and 3 checkpoints (10/100/100 at the 300 steps)."""
    steps = config.num_train_steps
    return dict(log_every_steps=max(1, steps // 30), eval_every_steps=max(1, steps // 3),
                checkpoint_every_steps=max(1, steps // 3))


def finetune_config():
    """experiments/finetune/passage_source.py's defaults (8 documents, 120 steps at lr 3e-4:
    the best of 1e-4/2e-4/3e-4 for the random encoder, which at 1e-4 stays at the majority
    class); finetune.init is set to the pre-training run, for both encoders."""
    return passage_source.get_config()


def derived_fields(config, explicit=frozenset()) -> dict:
    """Each stage's, from its fields after the overrides (--config.pretrain.num_train_steps)."""
    return {**stage_fields("pretrain", pretrain_intervals, config, explicit),
            **stage_fields("finetune", passage_source.derived_fields, config, explicit)}


def get_config():
    return ml_collections.ConfigDict(dict(task="transfer", pretrain=pretrain_config(),
                                          finetune=finetune_config()))
