"""The quickstart's transfer comparison with a GPT: pre-train gpt-mini (causal LM) on the
embedded corpus, then fine-tune it with GPT-1's recipe on the label-free passage-source task
(which of the 8 longest documents a sentence comes from), from the pre-trained decoder and
from a random one of the same size and vocabulary with the same budget.

    python launch.py --config experiments/gpt/transfer.py --workdir runs/quickstart_gpt

Writes pretrain/, finetune_pretrained/, finetune_random_init/, report.md and transfer.json
(ssl_jax/transfer.py). The stages are experiments/gpt/pretrain.py's defaults and
experiments/finetune/passage_source.py's (lm_coef 0.5); --config.pretrain.* and
--config.finetune.* override either.
"""
import ml_collections

from experiments.finetune import passage_source
from experiments.gpt import pretrain
from ssl_jax.config import stage_fields


def derived_fields(config, explicit=frozenset()) -> dict:
    return {**stage_fields("pretrain", pretrain.derived_fields, config, explicit),
            **stage_fields("finetune", passage_source.derived_fields, config, explicit)}


def get_config():
    return ml_collections.ConfigDict(dict(task="transfer", pretrain=pretrain.get_config(),
                                          finetune=passage_source.get_config()))
