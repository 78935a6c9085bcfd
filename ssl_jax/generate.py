"""Sample text from a GPT: a trained gpt_pretrain run or an HF GPT-2 directory.

    python -m ssl_jax.generate --model runs/gpt_mini --prompt "The for statement"
    python -m ssl_jax.generate --model gpt2/ --prompts prompts.txt --top-k 40

--model: a gpt_pretrain workdir or a local HF GPT-2 directory (config.json, model.safetensors,
vocab.json + merges.txt or tokenizer.json); --workdir is the same argument.

Prints each prompt's continuation, then one line of JSON with all of them. Greedy unless a
sampling flag (--temperature, --top-k, --top-p) is given.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

from ssl_jax.data.model_dir import add_model_argument


def _prompts(args) -> list[str]:
    if args.prompt is not None:
        return [args.prompt]
    try:
        with open(args.prompts, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    except OSError as e:
        raise ValueError(f"cannot read --prompts {args.prompts!r}: {e}") from None
    if args.prompts.endswith(".jsonl"):  # one JSON string per line (prompts with newlines)
        out = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                value = json.loads(line) if line.strip().startswith('"') else None
                if not isinstance(value, str):
                    raise ValueError(f"{args.prompts} line {n}: expected a JSON string")
                out.append(value)
        lines = out
    prompts = [p for p in lines if p]
    if not prompts:
        raise ValueError(f"--prompts {args.prompts!r} holds no prompt")
    return prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_argument(parser, "the GPT (a gpt_pretrain run or an HF GPT-2 directory)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--prompts", help="a file: one prompt per line (.jsonl: JSON strings)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--stop", help="stop at this text (default: the end-of-text token)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int,
                        help="a run's checkpoint step (default: the best)")
    args = parser.parse_args(argv)
    try:
        prompts = _prompts(args)
        from ssl_jax.eval.generation import LanguageModel, Sampling
        sampling = None
        if any(v is not None for v in (args.temperature, args.top_k, args.top_p)):
            sampling = Sampling(temperature=1.0 if args.temperature is None else args.temperature,
                                top_k=args.top_k or 0,
                                top_p=1.0 if args.top_p is None else args.top_p)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the results
            lm = LanguageModel.from_pretrained(args.model, args.step)
            stop = args.stop if args.stop is not None else lm.tokenizer.decode(
                [lm.tokenizer.eot_id])
            outputs = lm.generate(prompts, max_new_tokens=args.max_new_tokens,
                                  sampling=sampling, stop=stop, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for prompt, text in zip(prompts, outputs):
        print(f"--- {prompt!r}\n{prompt}{text}")
    print(json.dumps({"prompts": prompts, "completions": outputs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
