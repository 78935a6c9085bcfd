"""Tokenize from the shell: one JSON string per line in, one JSON list of token ids per line out
(or the inverse with --decode), with any tokenizer `load_tokenizer` reads.

    echo '"Hello world"' | python -m ssl_jax.data.tokenize --tokenizer DIR        # [15496, 995]
    echo '[15496, 995]' | python -m ssl_jax.data.tokenize --tokenizer DIR --decode # "Hello world"
    echo '"Hello world"' | python -m ssl_jax.data.tokenize --model gpt2/          # [15496, 995]

--model PATH reads the tokenizer of a model (its weights are not read): a training workdir's
tokenizer/, an HF BERT directory's vocab.txt or an HF GPT-2 directory's vocab.json +
merges.txt or tokenizer.json.

Each output line is written (and flushed) as soon as its input line is read, so another
program can drive it line by line. A bad line stops it with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Iterable, TextIO

from ssl_jax.data import bpe, model_dir

USAGE_ERROR = 2


class _BadLine(ValueError):
    pass


def _encoder(tokenizer) -> Callable[[str], object]:
    def encode(line: str) -> object:
        text = json.loads(line)
        if not isinstance(text, str):
            raise _BadLine(f"expected a JSON string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate such as "\ud800"
            raise _BadLine(f"the string is not valid unicode: {e}") from e
        return tokenizer.encode_batch([text])[0].tolist()
    return encode


def _decoder(tokenizer) -> Callable[[str], object]:
    vocab_size = tokenizer.vocab_size

    def decode(line: str) -> object:
        ids = json.loads(line)
        if not (isinstance(ids, list) and all(type(i) is int for i in ids)):
            raise _BadLine("expected a JSON list of integer token ids")
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise _BadLine(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab_size})")
        # Both kinds wrap an HF tokenizer; keep special tokens so nothing is silently dropped.
        return tokenizer.tokenizer.decode(ids, skip_special_tokens=False)
    return decode


def run(transform: Callable[[str], object], lines: Iterable[bytes], out: TextIO) -> None:
    """Applies `transform` to every UTF-8 line of `lines`, writing one JSON value per line
    (ASCII JSON, so the output does not depend on the locale)."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
            result = transform(line)
        except (UnicodeDecodeError, json.JSONDecodeError, _BadLine) as e:
            shown = raw.rstrip()[:60].decode("utf-8", "replace")
            raise _BadLine(f"line {number}: {e} (in {shown!r})") from e
        out.write(json.dumps(result) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_jax.data.tokenize",
                                     description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer", metavar="DIR",
                        help="a directory with GPT-2's encoder.json + vocab.bpe (or vocab.json "
                             "+ merges.txt), a tokenizer.json, or a WordPiece vocab.txt")
    source.add_argument("--model", metavar="PATH",
                        help="a model's tokenizer: a training workdir or an HF directory")
    parser.add_argument("--decode", action="store_true",
                        help="read JSON lists of token ids, write JSON strings")
    args = parser.parse_args(argv)
    try:
        tokenizer = (bpe.load_tokenizer(args.tokenizer) if args.tokenizer is not None
                     else model_dir.model_tokenizer(args.model))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    transform = (_decoder if args.decode else _encoder)(tokenizer)
    try:
        run(transform, sys.stdin.buffer, sys.stdout)
    except _BadLine as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # e.g. piped into `head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit-time flush
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
