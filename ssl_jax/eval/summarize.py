"""Zero-shot summarisation as in GPT-2 (Radford et al. 2019, section 3.6), scored with ROUGE.

The model reads an article followed by "\\nTL;DR:", samples 100 tokens with top-k (k=2), and
its first 3 generated sentences are the summary. Beside it, as in GPT-2's Table 4: the same
generation without the hint ("no hint"), 3 random sentences of the article ("random-3") and
its first 3 sentences ("lead-3"). Scores are mean ROUGE-1/2/L F1 against the reference
highlights (rouge-score, Porter stemming); "rougeLsum" (sentences on their own lines, as in
the CNN/DailyMail literature) is kept in the JSON.

    python -m ssl_jax.eval.summarize --model runs/gpt --data tfds:cnn_dailymail:test
    python -m ssl_jax.eval.summarize --model gpt2/ --data tests/fixtures/summaries.jsonl \\
        --num-articles 5 --output gpt2_tldr.json

--model: a gpt_pretrain workdir or a local HF GPT-2 directory (--workdir is the same).
Prints the table; the last stdout line is the results as one JSON object. A run's directory
also gets summarize.json and summarize.md (an HF directory is left as it is); --output FILE
writes the JSON there too.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from typing import Protocol, Sequence

import numpy as np

from ssl_jax.data import corpora
from ssl_jax.data.model_dir import add_model_argument, read_gpt_config
from ssl_jax.files import read_text, write_atomic

TLDR_HINT = "\nTL;DR:"
METHODS = ("TL;DR", "no hint", "random-3", "lead-3")
ROUGE_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SUMMARY_SENTENCES = 3
NUM_EXAMPLES = 3
_EXAMPLE_CHARS = 300


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


class LanguageModelLike(Protocol):
    """What summarisation needs of ssl_jax.eval.generation.LanguageModel."""
    max_len: int
    tokenizer: Tokenizer

    def generate(self, prompts: list[str], *, max_new_tokens: int, sampling=None,
                 stop: str | None = None, seed: int = 0) -> list[str]: ...


@dataclasses.dataclass(frozen=True)
class Article:
    """One news article and its reference summary (highlights, one sentence per line)."""
    text: str
    highlights: str


# ----------------------------------------------------------------------------- data

def read_jsonl(path: str) -> list[Article]:
    """Articles from a jsonl file with {"article": str, "highlights": str} on each line."""
    content = read_text(path, "article file")
    articles = []
    for n, record in corpora.jsonl_records(path, content):
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{n} is not a JSON object")
        for key in ("article", "highlights"):
            if not isinstance(record.get(key), str):
                raise ValueError(f"{path}:{n} has no string field {key!r} "
                                 f"(each line needs 'article' and 'highlights')")
        articles.append(Article(record["article"], record["highlights"]))
    if not articles:
        raise ValueError(f"article file {path!r} holds no article")
    return articles


def read_tfds(name: str, split: str, data_dir: str, limit: int | None = None) -> list[Article]:
    """The first `limit` articles of a locally prepared TFDS dataset with article/highlights."""
    source = corpora.prepared_source(name, split, data_dir, f"--data tfds:{name}:{split}",
                                     ", or pass --data-dir, or use a .jsonl file")
    articles = []
    for i in range(len(source) if limit is None else min(limit, len(source))):
        record = source[i]
        missing = [k for k in ("article", "highlights") if k not in record]
        if missing:
            raise ValueError(f"TFDS dataset {name!r} has no feature(s) {missing}; it has "
                             f"{sorted(record)}")
        articles.append(Article(*(corpora.record_text(record[k])
                                  for k in ("article", "highlights"))))
    return articles



def load_articles(spec: str, *, limit: int | None = None,
                  data_dir: str | None = None) -> list[Article]:
    """`spec` is "tfds:NAME[:SPLIT]" (split defaults to test) or a path to a .jsonl file."""
    if spec.startswith("tfds:"):
        name, _, split = spec[len("tfds:"):].partition(":")
        if not name:
            raise ValueError(f"--data {spec!r} names no dataset (use tfds:cnn_dailymail:test)")
        return read_tfds(name, split or "test", data_dir or corpora.default_data_dir(), limit)
    if spec.endswith(".jsonl"):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"--data {spec!r}: no such file")
        return read_jsonl(spec)[:limit]
    raise ValueError(f"--data {spec!r} is neither tfds:NAME[:SPLIT] nor a .jsonl file")


# ----------------------------------------------------------------------------- prompts

def truncate_to_tokens(text: str, tokenizer: Tokenizer, max_tokens: int,
                       suffix: str = "") -> str:
    """The longest token-prefix of `text` such that `prefix + suffix` encodes to at most
    `max_tokens` tokens; the suffix is never cut. Re-checked after decoding, since tokens
    can merge across the cut or the suffix boundary."""
    if len(tokenizer.encode(text + suffix)) <= max_tokens:
        return text
    ids = tokenizer.encode(text)
    keep = max_tokens - len(tokenizer.encode(suffix))
    while keep > 0:
        prefix = tokenizer.decode(ids[:keep])
        overshoot = len(tokenizer.encode(prefix + suffix)) - max_tokens
        if overshoot <= 0:
            return prefix
        keep -= overshoot
    if len(tokenizer.encode(suffix)) <= max_tokens:
        return ""
    raise ValueError(f"{suffix!r} alone is more than {max_tokens} tokens")


def build_prompt(article: str, tokenizer: Tokenizer, *, max_len: int, max_new_tokens: int,
                 hint: str = TLDR_HINT) -> str:
    """The article's beginning + hint, so that prompt and generation fit `max_len` tokens."""
    return truncate_to_tokens(article, tokenizer, max_len - max_new_tokens, hint) + hint


# ----------------------------------------------------------------------------- summaries

def sentences_of(text: str) -> list[str]:
    """Sentences of an article or a generation. A line break ends a sentence (highlights
    and generated bullet lines have no final period); each line is stripped first, since
    `corpora.split_sentences` keeps an indented line (a generation starting with " ") whole."""
    return [s for line in text.split("\n") for s in corpora.split_sentences(line.strip())]


def first_sentences(text: str, count: int = SUMMARY_SENTENCES) -> list[str]:
    """GPT-2's summary: the first `count` sentences of the generated text."""
    return sentences_of(text)[:count]


def lead_sentences(article: str, count: int = SUMMARY_SENTENCES) -> list[str]:
    """The lead-k baseline: the article's first `count` sentences."""
    return sentences_of(article)[:count]


def random_sentences(article: str, count: int, rng: np.random.Generator) -> list[str]:
    """The random-k baseline: `count` distinct random sentences, in article order."""
    sentences = sentences_of(article)
    chosen = rng.choice(len(sentences), size=min(count, len(sentences)), replace=False)
    return [sentences[i] for i in sorted(chosen)]


# ----------------------------------------------------------------------------- scoring

def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F1 (rouge-score, Porter stemmer) of predictions against
    references; sentences are on their own lines (this matters for rougeLsum only)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge() needs at least one prediction")
    for name, texts in (("prediction", predictions), ("reference", references)):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"{name} {bad[0]} is a {type(texts[bad[0]]).__name__}, not a str")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_METRICS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_METRICS, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(target=reference, prediction=prediction)
        for metric in ROUGE_METRICS:
            totals[metric] += scores[metric].fmeasure
    return {metric: total / len(predictions) for metric, total in totals.items()}


# ----------------------------------------------------------------------------- evaluation

def _check_settings(*, num_articles: int, max_new_tokens: int, top_k: int, seed: int,
                    batch_size: int) -> None:
    for name, value, low in (("num_articles", num_articles, 1),
                             ("max_new_tokens", max_new_tokens, 1), ("top_k", top_k, 0),
                             ("seed", seed, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def _generate(lm: LanguageModelLike, prompts: list[str], *, max_new_tokens: int, sampling,
              seed: int, batch_size: int) -> list[str]:
    """Continuations in batches; batch b uses seed + its first index (reproducible). A
    continuation ends at the end-of-text token (the model closed the document)."""
    eot_id = getattr(lm.tokenizer, "eot_id", None)
    stop = lm.tokenizer.decode([eot_id]) if eot_id is not None else None
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        texts = lm.generate(batch, max_new_tokens=max_new_tokens, sampling=sampling,
                            stop=stop, seed=seed + start)
        if len(texts) != len(batch):
            raise RuntimeError(f"lm.generate returned {len(texts)} texts for {len(batch)} prompts")
        outputs.extend(texts)
    return outputs


def evaluate(lm: LanguageModelLike, articles: Sequence[Article], *, num_articles: int,
             max_new_tokens: int = 100, top_k: int = 2, seed: int = 0,
             batch_size: int = 8) -> dict:
    """Mean ROUGE F1 of the TL;DR, no-hint, random-3 and lead-3 summaries of the first
    `num_articles` articles, with a few example outputs. Both prompts share the same
    truncated article, so "no hint" differs from "TL;DR" only by the hint."""
    _check_settings(num_articles=num_articles, max_new_tokens=max_new_tokens, top_k=top_k,
                    seed=seed, batch_size=batch_size)
    if len(articles) < num_articles:
        raise ValueError(f"num_articles={num_articles} but only {len(articles)} articles given")
    room = lm.max_len - max_new_tokens - len(lm.tokenizer.encode(TLDR_HINT))
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for an article in "
                         f"the model's {lm.max_len}-token context (the hint {TLDR_HINT!r} "
                         f"is kept whole)")
    articles = list(articles[:num_articles])
    prompt_tokens = lm.max_len - max_new_tokens
    hinted = [build_prompt(a.text, lm.tokenizer, max_len=lm.max_len,
                           max_new_tokens=max_new_tokens) for a in articles]
    plain = [truncate_to_tokens(p[:-len(TLDR_HINT)], lm.tokenizer, prompt_tokens) for p in hinted]
    from ssl_jax.eval.generation import Sampling

    sampling = Sampling(temperature=1.0, top_k=top_k)
    generate = dict(max_new_tokens=max_new_tokens, sampling=sampling, seed=seed,
                    batch_size=batch_size)
    summaries = {
        "TL;DR": [first_sentences(t) for t in _generate(lm, hinted, **generate)],
        "no hint": [first_sentences(t) for t in _generate(lm, plain, **generate)],
        "random-3": [random_sentences(a.text, SUMMARY_SENTENCES, np.random.default_rng([seed, i]))
                     for i, a in enumerate(articles)],
        "lead-3": [lead_sentences(a.text) for a in articles],
    }
    references = [a.highlights for a in articles]
    joined = {m: ["\n".join(s) for s in summaries[m]] for m in METHODS}
    return {
        "num_articles": len(articles), "max_new_tokens": max_new_tokens, "top_k": top_k,
        "seed": seed, "batch_size": batch_size, "max_len": lm.max_len,
        "scores": {m: rouge(joined[m], references) for m in METHODS},
        "examples": [{"article_start": a.text[:_EXAMPLE_CHARS], "reference": a.highlights,
                      **{m: joined[m][i] for m in METHODS}}
                     for i, a in enumerate(articles[:NUM_EXAMPLES])],
    }


def format_table(results: dict) -> str:
    """Markdown table: method | R-1 | R-2 | R-L | articles (F1, percent)."""
    rows = ["| method | R-1 | R-2 | R-L | articles |", "|---|---:|---:|---:|---:|"]
    for method, scores in results["scores"].items():
        cells = [f"{100 * scores[m]:.2f}" for m in ("rouge1", "rouge2", "rougeL")]
        rows.append(f"| {method} | {' | '.join(cells)} | {results['num_articles']} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(parser, "the GPT (a gpt_pretrain run or an HF GPT-2 directory)")
    parser.add_argument("--data", required=True, help="tfds:cnn_dailymail[:SPLIT] or FILE.jsonl")
    parser.add_argument("--data-dir", default=None,
                        help="TFDS data dir (default: $SSL_JAX_DATA_DIR or ~/.cache/ssl_jax/tfds)")
    parser.add_argument("--num-articles", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", default=None, help="also write the results JSON here")
    args = parser.parse_args(argv)
    settings = dict(num_articles=args.num_articles, max_new_tokens=args.max_new_tokens,
                    top_k=args.top_k, seed=args.seed, batch_size=args.batch_size)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout: the table and the JSON only
            _check_settings(**settings)
            is_run = "task" in read_gpt_config(args.model)
            if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
                raise FileNotFoundError(f"--output {args.output!r}: its directory does not exist")
            articles = load_articles(args.data, limit=args.num_articles, data_dir=args.data_dir)
            from ssl_jax.eval.generation import LanguageModel
            lm = LanguageModel.from_pretrained(args.model)
            results = evaluate(lm, articles, **settings)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results["data"] = args.data
    table = format_table(results)
    if is_run:  # an HF directory is left as it is
        write_atomic(os.path.join(args.model, "summarize.json"), json.dumps(results, indent=1))
        write_atomic(os.path.join(args.model, "summarize.md"), table + "\n")
    if args.output:
        write_atomic(args.output, json.dumps(results, indent=1))
    print(table)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
