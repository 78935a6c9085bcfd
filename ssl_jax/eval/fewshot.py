"""GPT-3-style few-shot in-context evaluation (Brown et al. 2020, sections 2, 3.9.1, 3.9.2).

    python -m ssl_jax.eval.fewshot --model DIR
        [--tasks arithmetic_2d+,cl,test.jsonl[:demos.jsonl]] [--shots 0,1,10]
        [--num-examples 100] [--seed 0] [--words FILE] [--output FILE.json]

--model: a gpt_pretrain workdir or a local HF GPT-2 directory (--workdir is the same).

Each test context is preceded by K demonstrations (context + correct completion) drawn at
random from a pool generated on a different random stream than the test examples (or from a
jsonl file). Multiple-choice examples {"context", "choices", "label"} are scored by the
log-likelihood of each choice: "acc" picks the largest sum, "acc_norm" the largest sum per
token (GPT-3's normalisation). Free-form examples {"context", "answer"} are scored by exact
match (whitespace stripped) of the greedy continuation, cut at the first newline.

Defaults come from a run's config.json "fewshot" section (tasks, shots, num_examples, seed)
when present, else all arithmetic and word-scrambling tasks, K = 0, 1, 10. The scramble tasks'
words are the most frequent of the run's training corpus, or of --words FILE; an HF checkpoint
has no corpus, so without --words its default is the arithmetic tasks (said on stderr). Prints
a markdown table (one column per K) and, as the last line, the results as JSON; a run's
directory also gets fewshot.json and fewshot.md (an HF directory is left as it is: use
--output).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from ssl_jax.eval.fewshot_tasks import (ARITHMETIC_TASKS, DEMO_POOL_SIZE, FREE_FORM,
                                        MULTIPLE_CHOICE, SCRAMBLE_TASKS, Task, load_task,
                                        word_list)
from ssl_jax.data.model_dir import add_model_argument, read_gpt_config
from ssl_jax.files import read_text, write_atomic

METRICS = {MULTIPLE_CHOICE: ("acc", "acc_norm"), FREE_FORM: ("exact_match",)}
STOP = "\n"                      # free-form answers end at the first newline
DEFAULT_SEPARATOR = "\n\n"       # between demonstrations and before the test context
DEFAULT_SHOTS = (0, 1, 10)
ANSWER_MARGIN_TOKENS = 2         # generation budget beyond the longest reference answer
SHOT_STREAM = 2  # np.random.default_rng((seed, stream)); 0 and 1: fewshot_tasks


def choose_demonstrations(task: Task, max_shots: int, rng: np.random.Generator) -> list[list[dict]]:
    """For each test example, `max_shots` random distinct demonstrations (fewer if the pool is
    short); K-shot prompts use the first K, so all K see nested demonstration sets."""
    if max_shots == 0:
        return [[] for _ in task.examples]
    counts = collections.Counter(d[task.same_item] for d in task.demonstrations)
    chosen = []
    for example in task.examples:
        excluded = counts[example[task.same_item]]
        size = min(len(task.demonstrations), max_shots + excluded)
        picks = rng.choice(len(task.demonstrations), size=size, replace=False).tolist()
        demos = [task.demonstrations[i] for i in picks
                 if task.demonstrations[i][task.same_item] != example[task.same_item]]
        chosen.append(demos[:max_shots])
    return chosen


# ----------------------------------------------------------------------------- prompts

def completion(example: dict) -> str:
    """The correct completion of an example: its answer or its labelled choice."""
    return example["answer"] if "answer" in example else example["choices"][example["label"]]


def build_prompt(context: str, demonstrations: Sequence[dict], *,
                 separator: str = DEFAULT_SEPARATOR, description: str | None = None) -> str:
    """[description] + each demonstration's context + completion + the test context, joined
    by `separator`."""
    parts = [description] if description else []
    parts += [d["context"] + completion(d) for d in demonstrations]
    return separator.join(parts + [context])


def fit_prompt(context: str, demonstrations: Sequence[dict], *, encode: Callable[[str], list],
               max_len: int, answer_tokens: int, separator: str = DEFAULT_SEPARATOR,
               description: str | None = None) -> tuple[str, int] | None:
    """(prompt, K used): the prompt with the most leading `demonstrations` whose token count
    plus `answer_tokens` is at most `max_len`; None when even K=0 does not fit (the test
    context is never truncated). Binary search over K, checking each candidate exactly."""
    budget = max_len - answer_tokens

    def attempt(k: int) -> str | None:
        prompt = build_prompt(context, demonstrations[:k], separator=separator,
                              description=description)
        return prompt if len(encode(prompt)) <= budget else None

    best = attempt(0)
    if best is None:
        return None
    full = attempt(len(demonstrations)) if demonstrations else best
    if full is not None:
        return full, len(demonstrations)
    fits, fails = 0, len(demonstrations)
    while fails - fits > 1:
        middle = (fits + fails) // 2
        prompt = attempt(middle)
        if prompt is None:
            fails = middle
        else:
            best, fits = prompt, middle
    return best, fits


# ----------------------------------------------------------------------------- scoring

def choice_predictions(scores: Sequence[tuple[float, int]]) -> tuple[int, int]:
    """(index of the largest summed log-prob, index of the largest log-prob per token) over
    the (sum log p, number of tokens) of each choice; ties go to the first choice."""
    for total, num_tokens in scores:
        if num_tokens < 1:
            raise ValueError(f"a choice scored over {num_tokens} tokens; choices must be "
                             f"non-empty after tokenisation")
    totals = np.array([s for s, _ in scores], np.float64)
    per_token = totals / np.array([n for _, n in scores], np.float64)
    return int(np.argmax(totals)), int(np.argmax(per_token))


def exact_match(generated: str, answer: str) -> bool:
    """Whether the generated text equals the answer, surrounding whitespace ignored."""
    return generated.strip() == answer.strip()


def _check_shots(shots: Sequence[int]) -> list[int]:
    shots = list(shots)
    if not shots or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in shots):
        raise ValueError(f"shots must be a non-empty list of integers >= 0, got {shots!r}")
    if len(set(shots)) != len(shots):
        raise ValueError(f"shots {shots!r} has duplicates")
    return shots


def evaluate_task(lm, task: Task, shots: Sequence[int], seed: int, *,
                  separator: str = DEFAULT_SEPARATOR) -> dict:
    """Metrics of `task` for each K in `shots`: {"task", "kind", "metrics", "num_examples",
    "results": [{"shots": K, <metric>: value, "scored", "too_long", "mean_shots", "reduced"}]}.
    "too_long" examples do not fit even at K=0 and are not scored; "reduced" ones got fewer
    than K demonstrations (the prompt did not fit, or the pool was short)."""
    shots = _check_shots(shots)
    encode = lm.tokenizer.encode
    demos = choose_demonstrations(task, max(shots), np.random.default_rng((seed, SHOT_STREAM)))
    if task.kind == FREE_FORM:
        max_new_tokens = max(len(encode(e["answer"])) for e in task.examples) + ANSWER_MARGIN_TOKENS
        answer_tokens = [max_new_tokens] * len(task.examples)
    else:
        answer_tokens = [max(len(encode(c)) for c in e["choices"]) for e in task.examples]
    results = []
    for k in shots:
        fitted = [fit_prompt(e["context"], d[:k], encode=encode, max_len=lm.max_len,
                             answer_tokens=room, separator=separator,
                             description=task.description)
                  for e, d, room in zip(task.examples, demos, answer_tokens)]
        kept = [(e, f) for e, f in zip(task.examples, fitted) if f is not None]
        prompts = [prompt for _, (prompt, _) in kept]
        entry: dict[str, Any] = {"shots": k}
        if task.kind == FREE_FORM:
            generated = lm.generate(prompts, max_new_tokens=max_new_tokens, sampling=None,
                                    stop=STOP, seed=seed) if prompts else []
            _check_count(generated, prompts, "generate")
            correct = [exact_match(g, e["answer"]) for g, (e, _) in zip(generated, kept)]
            entry["exact_match"] = float(np.mean(correct)) if correct else None
        else:
            requests = [(p, c) for p, (e, _) in zip(prompts, kept) for c in e["choices"]]
            scores = lm.loglikelihood(requests) if requests else []
            _check_count(scores, requests, "loglikelihood")
            hits, hits_norm, start = [], [], 0
            for e, _ in kept:
                by_sum, by_token = choice_predictions(scores[start:start + len(e["choices"])])
                start += len(e["choices"])
                hits.append(by_sum == e["label"])
                hits_norm.append(by_token == e["label"])
            entry["acc"] = float(np.mean(hits)) if hits else None
            entry["acc_norm"] = float(np.mean(hits_norm)) if hits_norm else None
        used = [used_k for _, (_, used_k) in kept]
        entry.update(scored=len(kept), too_long=len(task.examples) - len(kept),
                     mean_shots=float(np.mean(used)) if used else None,
                     reduced=sum(u < k for u in used))
        results.append(entry)
    return {"task": task.name, "kind": task.kind, "metrics": list(METRICS[task.kind]),
            "num_examples": len(task.examples), "results": results}


def _check_count(outputs: Sequence, inputs: Sequence, method: str) -> None:
    if len(outputs) != len(inputs):
        raise RuntimeError(f"lm.{method} returned {len(outputs)} results for {len(inputs)} "
                           f"inputs")


def _pool_size(shots: Sequence[int]) -> int:
    return max(DEMO_POOL_SIZE, 2 * max(_check_shots(shots)))


def load_tasks(names: Sequence[str], shots: Sequence[int], num_examples: int, seed: int,
               words: Sequence[str] | None = None, *,
               description: str | None = None) -> list[Task]:
    """Every task (a name or test.jsonl[:demos.jsonl]) loaded and checked, before any is run,
    each with a demonstration pool for the largest K; `description` is an optional first line
    of every prompt."""
    return [dataclasses.replace(load_task(name, num_examples, seed, words,
                                          pool_size=_pool_size(shots)),
                                description=description)
            for name in names]


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table: task | kind | metric | 0-shot | 1-shot | K-shot ..., values in %.
    A cell notes "(K=mean)" when demonstrations were dropped to fit and "[n too long]"."""
    all_shots = sorted({r["shots"] for row in rows for r in row["results"]})
    lines = ["| task | kind | metric | " + " | ".join(f"{k}-shot" for k in all_shots) + " |",
             "|" + "---|" * (3 + len(all_shots))]
    for row in rows:
        by_k = {r["shots"]: r for r in row["results"]}
        for metric in row["metrics"]:
            cells = []
            for k in all_shots:
                r = by_k.get(k)
                if r is None:
                    cells.append("")
                    continue
                cell = "n/a" if r[metric] is None else f"{100 * r[metric]:.1f}"
                if r["reduced"]:
                    cell += f" (K={r['mean_shots']:.1f})"
                if r["too_long"]:
                    cell += f" [{r['too_long']} too long]"
                cells.append(cell)
            lines.append(f"| {row['task']} | {row['kind']} | {metric} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def _int_list(raw: str | Sequence[int], what: str) -> list[int]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    try:
        return [int(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be comma-separated integers, got {raw!r}") from None


def _settings(args: argparse.Namespace, config) -> dict:
    """Flags, else config.fewshot fields, else the built-in defaults."""
    section = config.get("fewshot") or {}
    tasks = args.tasks if args.tasks is not None else section.get(
        "tasks", ARITHMETIC_TASKS + SCRAMBLE_TASKS)
    tasks = [t for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t]
    shots = _check_shots(_int_list(args.shots if args.shots is not None
                                   else section.get("shots", DEFAULT_SHOTS), "shots"))
    num_examples = (args.num_examples if args.num_examples is not None
                    else int(section.get("num_examples", 100)))
    seed = args.seed if args.seed is not None else int(section.get("seed", 0))
    if not tasks:
        raise ValueError(f"--tasks {args.tasks!r} names no task; expected comma-separated task "
                         f"names or test.jsonl[:demos.jsonl]")
    if num_examples < 1:
        raise ValueError(f"--num-examples={num_examples} must be >= 1")
    if seed < 0:
        raise ValueError(f"--seed={seed} must be >= 0")
    return {"tasks": tasks, "shots": shots, "num_examples": num_examples, "seed": seed}


def corpus_words(config) -> list[str]:
    """word_list() of the run's training corpus (config.data, split "train")."""
    from ssl_jax.data.corpora import load_documents

    documents = load_documents(config.data, "train")
    words = word_list(sentence for document in documents for sentence in document)
    if not words:
        raise ValueError(f"the training corpus {config.data.corpus!r} has no lower-case "
                         f"words of 4-15 letters for the scramble tasks")
    return words


def file_words(path: str) -> list[str]:
    """word_list() of a text file's lines (--words)."""
    words = word_list(read_text(path, "--words file").splitlines())
    if not words:
        raise ValueError(f"--words {path!r} has no lower-case words of 4-15 letters for the "
                         "scramble tasks")
    return words


def _scramble_words(args: argparse.Namespace, run, tasks: Sequence[str]) -> list[str] | None:
    """The word list of the scramble tasks among `tasks`: --words, else the run's training
    corpus; None when no scramble task is asked for."""
    scrambles = [t for t in tasks if t in SCRAMBLE_TASKS]
    if not scrambles:
        return None
    if args.words is not None:
        return file_words(args.words)
    if run is None:
        raise ValueError(f"the scramble tasks {scrambles} draw words from the training corpus, "
                         f"and {args.model!r} is an HF checkpoint without one: give --words "
                         "FILE (a text whose most frequent words are used) or other --tasks")
    return corpus_words(run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(parser, "the GPT (a gpt_pretrain run or an HF GPT-2 directory)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task names or test.jsonl[:demos.jsonl]")
    parser.add_argument("--shots", default=None, help="comma-separated K values, e.g. 0,1,10")
    parser.add_argument("--num-examples", type=int, default=None, help="test examples per task")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--words", default=None,
                        help="a text file: the scramble tasks' words are its most frequent "
                             "(default: the run's training corpus)")
    parser.add_argument("--output", default=None, help="also write the results JSON here")
    args = parser.parse_args(argv)
    try:
        from ssl_jax import config as config_lib

        is_run = "task" in read_gpt_config(args.model)
        run = config_lib.read_config(args.model) if is_run else None
        if run is None and args.tasks is None and args.words is None:
            args.tasks = ",".join(ARITHMETIC_TASKS)
            print(f"note: {args.model!r} is an HF checkpoint without a training corpus for the "
                  "scramble tasks' words: running the arithmetic tasks (--words FILE adds "
                  "the scramble tasks)", file=sys.stderr)
        settings = _settings(args, run or {})
        if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
            raise FileNotFoundError(f"--output {args.output!r}: its directory does not exist")
        words = _scramble_words(args, run, settings["tasks"])
        tasks = load_tasks(settings["tasks"], settings["shots"], settings["num_examples"],
                           settings["seed"], words)
        from ssl_jax.eval.generation import LanguageModel

        lm = LanguageModel.from_pretrained(args.model)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [evaluate_task(lm, task, settings["shots"], settings["seed"]) for task in tasks]
    table = format_table(rows)
    payload = {"model": args.model, **settings, "rows": rows}
    outputs = ([os.path.join(args.model, "fewshot.json")] if is_run else []) + (
        [args.output] if args.output else [])
    for path in outputs:
        write_atomic(path, json.dumps(payload, indent=2) + "\n")
    if is_run:
        write_atomic(os.path.join(args.model, "fewshot.md"), table + "\n")
    print(table)
    print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
