"""Export a training run (BERT or GPT) as a Hugging Face-format directory.

    python -m ssl_jax.interop.export --workdir runs/quickstart/pretrain --output exported/bert
    python -m ssl_jax.interop.export --workdir runs/gpt_mini --output exported/gpt_mini

BERT runs become BertForPreTraining (BertForMaskedLM when trained without NSP) with
vocab.txt; fine-tuned BERT runs (`finetune`) BertForSequenceClassification (STS-B:
problem_type regression), BertForTokenClassification or BertForQuestionAnswering, with
id2label in the task's label names (a mean-pooled classifier has no transformers form: an
error); GPT runs GPT2LMHeadModel with vocab.json + merges.txt (post-LN and sparse-attention
GPTs have no GPT-2 form: an error). transformers' from_pretrained(OUT) loads the result,
and so does ssl_jax.interop.pretrained.load_pretrained (bit for bit). OUT must not exist yet
(or be empty); it appears whole or not at all.
"""
from __future__ import annotations

import argparse
import sys


def export(workdir: str, output: str, step: int | None = None) -> str:
    """Writes `workdir`'s best (or `step`) checkpoint to `output`; returns what was written."""
    from ssl_jax.interop import hf_bert, hf_gpt2
    from ssl_jax.interop.hf_format import check_new_directory
    from ssl_jax.interop.pretrained import load_pretrained

    check_new_directory(output)  # before the checkpoint is read
    pretrained = load_pretrained(workdir, step=step)
    if pretrained.kind == "gpt":
        hf_gpt2.save(output, pretrained.config, pretrained.params, pretrained.tokenizer)
    else:
        hf_bert.save(output, pretrained.config, pretrained.params, pretrained.tokenizer,
                     head=pretrained.head)
    return pretrained.description


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True,
                        help="a bert_pretrain or gpt_pretrain run (or an HF directory)")
    parser.add_argument("--output", required=True, help="the HF directory to create")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    args = parser.parse_args(argv)
    try:
        description = export(args.workdir, args.output, args.step)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} from {description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
