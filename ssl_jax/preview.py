"""Prints decoded pre-training examples of a config and, as the last line, their statistics.

    python -m ssl_jax.preview --config experiments/quickstart.py --num 3

    python -m ssl_jax.preview --config experiments/bert/pretrain.py:mini --config.data.prepared=DIR

The statistics cover one pass over every training sequence (as training gets them: the
static masked copies, or each sequence masked once under dynamic masking), read from the
corpus or from a prepared directory (`--config.data.prepared`); the last line is one JSON
object: num_sequences, selected_fraction (of non-special tokens), mask/random/kept_fraction
(of the selected tokens), is_next_fraction, mean_tokens_per_sequence.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile



def example_stats(examples, wordpiece) -> dict:
    selected = candidates = masked = randomised = kept = tokens = is_next = 0
    for e in examples:
        n = int(e["input_mask"].sum())
        tokens += n
        original = e["input_ids"].copy()
        w = e["masked_weights"] > 0
        positions, targets = e["masked_positions"][w], e["masked_ids"][w]
        original[positions] = targets
        candidates += int((~wordpiece.is_special[original[:n]]).sum())
        selected += len(positions)
        now = e["input_ids"][positions]
        masked += int((now == wordpiece.mask_id).sum())
        kept += int((now == targets).sum())
        randomised += int(((now != wordpiece.mask_id) & (now != targets)).sum())
        is_next += int(e["next_sentence_label"] == 0)
    count = max(len(examples), 1)
    return {"num_sequences": len(examples),
            "selected_fraction": selected / max(candidates, 1),
            "mask_fraction": masked / max(selected, 1),
            "random_fraction": randomised / max(selected, 1),
            "kept_fraction": kept / max(selected, 1),
            "is_next_fraction": is_next / count,
            "mean_tokens_per_sequence": tokens / count}


def main(argv=None) -> int:
    from ssl_jax import config as config_lib
    from ssl_jax.tasks import get_task

    try:
        overrides, rest = config_lib.parse_override_args(
            list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="FILE.py[:arg]")
    parser.add_argument("--num", type=int, default=3, help="examples to print")
    parser.add_argument("--workdir", default=None,
                        help="where the tokenizer is kept (default: a temporary folder)")
    args = parser.parse_args(rest)
    try:
        config = config_lib.load_config(args.config, overrides)
        if args.num < 0:
            raise ValueError(f"--num={args.num} must be >= 0")
        if config.task == "transfer":  # the quickstart: preview its pre-training data
            config = config.pretrain
        if config.task != "bert_pretrain":
            raise ValueError(f"--config {args.config!r} is a {config.task!r} config; the "
                             f"preview shows BERT pre-training data (task 'bert_pretrain', or "
                             f"a transfer config's pretrain)")
        with tempfile.TemporaryDirectory() as tmp:
            task = get_task(config.task)(config, args.workdir or tmp)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wp = task.wordpiece
    examples = list(task.epoch_examples())
    for i, e in enumerate(examples[:args.num]):
        n = int(e["input_mask"].sum())
        w = e["masked_weights"] > 0
        targets = dict(zip(e["masked_positions"][w].tolist(), e["masked_ids"][w].tolist()))
        shown = [wp.tokenizer.id_to_token(int(t)) + (f"<{wp.tokenizer.id_to_token(targets[j])}>"
                                                     if j in targets else "")
                 for j, t in enumerate(e["input_ids"][:n])]
        label = "is_next" if e["next_sentence_label"] == 0 else "random_next"
        print(f"--- example {i} ({label}, {n} tokens; masked tokens show <original>)")
        print(" ".join(shown))
    print(json.dumps(example_stats(examples, wp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
