"""Few-shot evaluation: synthetic tasks, prompts, scoring, jsonl parsing, evaluate and the CLI.

The language model here is a small deterministic test double implementing the interface of
ssl_jax.eval.generation.LanguageModel (one token per character); the real-model end-to-end
test lives with the model.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import types

import numpy as np
import pytest

from ssl_jax import config as config_lib
from ssl_jax.eval import fewshot, fewshot_tasks

ARITHMETIC_RE = re.compile(r"Q: What is (\d+) (plus|minus|times) (\d+)\?\nA:$")
COMPOSITE_RE = re.compile(r"Q: What is (\d)([+*-])\((\d)([+*-])(\d)\)\?\nA:$")
WORDS = ["inevitably", "corruption", "opponent", "objects", "succession", "reciprocal",
         "casino", "sticks", "python", "module", "function", "attribute"]


def reference_value(context: str) -> int:
    """The value of a generated arithmetic question, computed independently of fewshot.py."""
    m = ARITHMETIC_RE.search(context)
    if m:
        a, word, b = m.groups()
        return eval(f"{a} {dict(plus='+', minus='-', times='*')[word]} {b}")
    m = COMPOSITE_RE.search(context)
    assert m, context
    return eval("".join(m.groups()[:2]) + "(" + "".join(m.groups()[2:]) + ")")


class KnowingLM:
    """Test double: answers the prompt's last arithmetic question or unscrambles its last word
    (by matching letters against WORDS); scores a choice by a fixed table."""

    def __init__(self, max_len: int = 100_000, choice_scores: dict | None = None,
                 padding: str = ""):
        self.max_len = max_len
        self.tokenizer = types.SimpleNamespace(encode=list)
        self.choice_scores = choice_scores or {}
        self.padding = padding
        self.prompts: list[str] = []
        self.requests: list[tuple[str, str]] = []

    def generate(self, prompts, *, max_new_tokens, sampling=None, stop=None, seed=0):
        assert sampling is None and stop == "\n"
        self.prompts += prompts
        outputs = []
        for prompt in prompts:
            last = prompt.split("\n\n")[-1]
            if last.startswith("Please unscramble"):
                letters = sorted(c for c in last.split("\n")[1][:-2] if c.isalpha())
                answer = next(w for w in WORDS if sorted(w) == letters)
            else:
                answer = str(reference_value(last))
            text = f"{self.padding} {answer}{self.padding}\n\nQ: What is"[:max_new_tokens]
            outputs.append(text.split(stop)[0])
        return outputs

    def loglikelihood(self, requests):
        self.requests += requests
        return [self.choice_scores[continuation] for _, continuation in requests]


# ----------------------------------------------------------------------------- arithmetic

@pytest.mark.parametrize("name", fewshot_tasks.ARITHMETIC_TASKS)
def test_arithmetic_answers_are_correct(name):
    examples = fewshot_tasks.arithmetic_examples(name, (3, 0), 500)
    assert len(examples) == 500
    for e in examples:
        assert e["answer"] == f" {reference_value(e['context'])}"
        assert e["context"].startswith("Q: What is ") and e["context"].endswith("?\nA:")


@pytest.mark.parametrize("digits", [2, 3, 4, 5])
def test_arithmetic_operand_digits(digits):
    operands = []
    for op in "+-":
        for e in fewshot_tasks.arithmetic_examples(f"arithmetic_{digits}d{op}", (1, 0), 1000):
            a, _, b = ARITHMETIC_RE.search(e["context"]).groups()
            operands += [int(a), int(b)]
    operands = np.array(operands)
    assert operands.min() >= 0 and operands.max() < 10 ** digits
    full_width = np.mean(operands >= 10 ** (digits - 1))  # uniform on [0, 10^n): 0.9
    assert abs(full_width - 0.9) < 0.03
    assert abs(operands.mean() / (10 ** digits - 1) - 0.5) < 0.03


def test_arithmetic_multiplication_and_composite_format():
    for e in fewshot_tasks.arithmetic_examples("arithmetic_2dx", (0, 0), 300):
        a, word, b = ARITHMETIC_RE.search(e["context"]).groups()
        assert word == "times" and int(a) < 100 and int(b) < 100
        assert e["answer"] == f" {int(a) * int(b)}"
    ops = set()
    for e in fewshot_tasks.arithmetic_examples("arithmetic_1dc", (0, 0), 300):
        groups = COMPOSITE_RE.search(e["context"]).groups()
        ops |= {groups[1], groups[3]}
    assert ops == {"+", "-", "*"}
    assert fewshot_tasks.arithmetic_examples("arithmetic_2d-", 0, 1)[0]["context"].count("minus") == 1


def test_arithmetic_streams_are_disjoint_and_reproducible():
    test = fewshot_tasks.arithmetic_examples("arithmetic_5d+", (0, fewshot_tasks.TEST_STREAM), 200)
    demos = fewshot_tasks.arithmetic_examples("arithmetic_5d+", (0, fewshot_tasks.DEMO_STREAM), 200)
    other_seed = fewshot_tasks.arithmetic_examples("arithmetic_5d+", (1, fewshot_tasks.TEST_STREAM), 200)
    contexts = lambda examples: {e["context"] for e in examples}
    assert not contexts(test) & contexts(demos)
    assert not contexts(test) & contexts(other_seed)
    assert test == fewshot_tasks.arithmetic_examples("arithmetic_5d+", (0, fewshot_tasks.TEST_STREAM), 200)
    task = fewshot_tasks.load_task("arithmetic_5d-", 50, seed=4)
    assert not contexts(task.examples) & contexts(task.demonstrations)
    assert len(task.demonstrations) == fewshot_tasks.DEMO_POOL_SIZE


# ----------------------------------------------------------------------------- scrambling

def test_scramble_hand_cases():
    rng = np.random.default_rng(0)
    assert fewshot_tasks.reverse_word("objects") == "stcejbo"
    assert fewshot_tasks.shuffle_inner("abcd", 1, rng) == "acbd"     # the only other inner order
    assert fewshot_tasks.shuffle_inner("abcdef", 2, rng) == "abdcef"
    assert fewshot_tasks.cycle_letters("ab", rng) == "ba"
    assert fewshot_tasks.cycle_letters("abab", rng) == "baba"        # rotation by 2 is the word
    inserted = fewshot_tasks.random_insertion("ab", rng)
    assert inserted[0] + inserted[2] == "ab" and inserted[1] in fewshot_tasks.INSERTION_CHARS
    assert fewshot_tasks.shuffle_inner("noon", 1, rng) == "noon"     # impossible: returned as is
    assert not fewshot_tasks.scramble_possible("a1", "noon")
    assert not fewshot_tasks.scramble_possible("rw", "level")
    assert not fewshot_tasks.scramble_possible("a2", "abcd")
    assert fewshot_tasks.scramble_possible("cl", "abab")


def test_scramble_properties():
    rng = np.random.default_rng(1)
    for word in WORDS:
        for _ in range(20):
            a1 = fewshot_tasks.SCRAMBLERS["a1"](word, rng)
            assert a1 != word and sorted(a1) == sorted(word)
            assert a1[0] == word[0] and a1[-1] == word[-1]
            a2 = fewshot_tasks.SCRAMBLERS["a2"](word, rng)
            assert a2 != word and sorted(a2) == sorted(word)
            assert a2[:2] == word[:2] and a2[-2:] == word[-2:]
            cl = fewshot_tasks.SCRAMBLERS["cl"](word, rng)
            assert cl != word and cl in word + word and len(cl) == len(word)
            ri = fewshot_tasks.SCRAMBLERS["ri"](word, rng)
            assert ri[::2] == word and len(ri) == 2 * len(word) - 1
            assert all(c in fewshot_tasks.INSERTION_CHARS for c in ri[1::2])
            assert "".join(c for c in ri if c.isalpha()) == word
            assert fewshot_tasks.SCRAMBLERS["rw"](word, rng) == word[::-1]


def test_scramble_examples_format_and_word_choice():
    examples = fewshot_tasks.scramble_examples("rw", ["level", "abcd"], 0, 20)
    assert {e["answer"] for e in examples} == {" abcd"}        # the palindrome is skipped
    assert examples[0]["context"] == ("Please unscramble the letters into a word, and write "
                                      "that word:\ndcba =")
    with pytest.raises(ValueError, match="none of the 2 words"):
        fewshot_tasks.scramble_examples("a1", ["noon", "aaaa"], 0, 5)
    with pytest.raises(ValueError, match="word \"dog's\" is not purely alphabetic"):
        fewshot_tasks.scramble_examples("cl", ["dog's"], 0, 5)
    with pytest.raises(ValueError, match="needs a word list"):
        fewshot_tasks.load_task("cl", 5, 0)


def test_word_list():
    texts = ["apple apple banana Cherry dog's zebra-like apple. abc",
             "(banana) kiwi1 apple mango grape extraordinarilyyy"]
    assert fewshot_tasks.word_list(texts) == ["apple", "banana", "grape", "mango"]
    assert fewshot_tasks.word_list(texts, n=1) == ["apple"]
    assert fewshot_tasks.word_list(texts, min_len=3, max_len=5) == ["apple", "abc", "grape", "mango"]
    with pytest.raises(ValueError, match="min_len=5, max_len=4"):
        fewshot_tasks.word_list(texts, min_len=5, max_len=4)


# ----------------------------------------------------------------------------- prompts

def test_prompt_for_two_shots():
    demos = [{"context": "Q: What is 2 plus 3?\nA:", "answer": " 5"},
             {"context": "Q: What is 4 minus 6?\nA:", "answer": " -2"}]
    prompt = fewshot.build_prompt("Q: What is 1 plus 1?\nA:", demos)
    assert prompt == ("Q: What is 2 plus 3?\nA: 5\n\nQ: What is 4 minus 6?\nA: -2\n\n"
                      "Q: What is 1 plus 1?\nA:")
    choice_demos = [{"context": "Sky is", "choices": [" green", " blue"], "label": 1},
                    {"context": "Grass is", "choices": [" green", " blue"], "label": 0}]
    prompt = fewshot.build_prompt("Snow is", choice_demos, separator="\n",
                                  description="Complete the sentence.")
    assert prompt == "Complete the sentence.\nSky is blue\nGrass is green\nSnow is"


def test_fit_prompt_reduces_shots():
    demos = [{"context": f"d{i}:", "answer": " x"} for i in range(10)]  # 5 chars each
    # k demonstrations: 5k + 2k (separators) + 2 (context) characters; budget 30 - 2 = 28
    prompt, used = fewshot.fit_prompt("Q?", demos, encode=list, max_len=30, answer_tokens=2)
    assert used == 3 and prompt == "d0: x\n\nd1: x\n\nd2: x\n\nQ?"
    assert fewshot.fit_prompt("Q?", demos, encode=list, max_len=72, answer_tokens=0) == (
        fewshot.build_prompt("Q?", demos), 10)
    assert fewshot.fit_prompt("Q?", demos, encode=list, max_len=3, answer_tokens=1) == ("Q?", 0)
    assert fewshot.fit_prompt("Q?", demos, encode=list, max_len=3, answer_tokens=2) is None
    assert fewshot.fit_prompt("Q?", [], encode=list, max_len=3, answer_tokens=1) == ("Q?", 0)
    for budget in range(0, 80):  # the binary search finds the largest K a linear scan would
        fitted = fewshot.fit_prompt("Q?", demos, encode=str.split, max_len=budget,
                                    answer_tokens=0)
        fitting = [k for k in range(11)
                   if len(fewshot.build_prompt("Q?", demos[:k]).split()) <= budget]
        assert (fitted[1] if fitted else None) == (max(fitting) if fitting else None)


# ----------------------------------------------------------------------------- scoring

def test_choice_predictions_sum_versus_per_token():
    assert fewshot.choice_predictions([(-3.0, 3), (-2.5, 1)]) == (1, 0)
    assert fewshot.choice_predictions([(-1.0, 1), (-1.0, 2), (-4.0, 10)]) == (0, 2)
    assert fewshot.choice_predictions([(-2.0, 2), (-2.0, 2)]) == (0, 0)  # ties: first
    with pytest.raises(ValueError, match="0 tokens"):
        fewshot.choice_predictions([(-1.0, 1), (0.0, 0)])


def test_exact_match():
    assert fewshot.exact_match(" 124", " 124")
    assert fewshot.exact_match("124  ", " 124")
    assert fewshot.exact_match("\t124\n", "124")
    assert not fewshot.exact_match(" 1 24", " 124")
    assert not fewshot.exact_match(" 124.", " 124")
    assert not fewshot.exact_match("", " 124")


# ----------------------------------------------------------------------------- jsonl

def write_jsonl(path, lines) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_read_jsonl_errors(tmp_path):
    mc = {"context": "q", "choices": ["a", "b"], "label": 1}
    ff = {"context": "q", "answer": " a"}
    good = write_jsonl(tmp_path / "good.jsonl", [mc, "", mc])
    assert fewshot_tasks.read_jsonl(good) == (fewshot_tasks.MULTIPLE_CHOICE, [mc, mc])
    cases = [([mc, "{not json"], r"bad.jsonl line 2: not valid JSON"),
             ([mc, ff], r"bad.jsonl line 2: a free_form example, but line 1 is multiple_choice"),
             ([dict(mc, label=2)], r"bad.jsonl line 1: label 2 out of range for 2 choices"),
             ([dict(mc, label=True)], r"line 1: 'label' must be an integer"),
             ([{"choices": ["a", "b"], "label": 0}], r"line 1: needs a string 'context'"),
             ([dict(mc, answer="a")], r"line 1: needs either .* not both"),
             ([{"context": "q"}], r"line 1: needs either .* not neither"),
             ([dict(ff, answer=" ")], r"line 1: 'answer' must be a non-empty string"),
             ([dict(mc, choices=["a"])], r"line 1: 'choices' must be a list of at least 2"),
             (["[1, 2]"], r"line 1: expected a JSON object, got list")]
    for lines, message in cases:
        with pytest.raises(ValueError, match=message):
            fewshot_tasks.read_jsonl(write_jsonl(tmp_path / "bad.jsonl", lines))
    with pytest.raises(ValueError, match="has no examples"):
        fewshot_tasks.read_jsonl(write_jsonl(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        fewshot_tasks.load_task(str(tmp_path / "missing.jsonl"), 5, 0)
    demos = write_jsonl(tmp_path / "demos.jsonl", [ff])
    with pytest.raises(ValueError, match="demos.jsonl' are free_form but the test file"):
        fewshot_tasks.load_task(f"{good}:{demos}", 5, 0)
    with pytest.raises(ValueError, match="unknown task 'arithmetic_2D'.*did you mean"):
        fewshot_tasks.load_task("arithmetic_2D", 5, 0)


def test_demonstrations_exclude_the_test_item(tmp_path):
    lines = [{"context": f"q{i % 4}:", "answer": f" {i}"} for i in range(8)]  # contexts twice
    task = fewshot_tasks.load_task(write_jsonl(tmp_path / "t.jsonl", lines), 3, 0)
    assert len(task.examples) == 3 and len(task.demonstrations) == 8
    chosen = fewshot.choose_demonstrations(task, 6, np.random.default_rng(0))
    for example, demos in zip(task.examples, chosen):
        assert len(demos) == 6 and example["context"] not in {d["context"] for d in demos}
        assert len({id(d) for d in demos}) == 6
    short = fewshot.choose_demonstrations(task, 50, np.random.default_rng(0))
    assert [len(d) for d in short] == [6, 6, 6]  # all of the pool but the test item's twins
    task = fewshot_tasks.load_task("a1", 30, 0, words=WORDS[:3])
    for example, demos in zip(task.examples,
                              fewshot.choose_demonstrations(task, 5, np.random.default_rng(0))):
        assert example["answer"] not in {d["answer"] for d in demos}  # no word shown twice


# ----------------------------------------------------------------------------- evaluate

def _evaluate(lm, name, shots, num_examples, seed):
    """One task the way the command runs it: load_tasks, then evaluate_task."""
    task, = fewshot.load_tasks([name], shots, num_examples, seed)
    return fewshot.evaluate_task(lm, task, shots, seed)


def test_evaluate_all_synthetic_tasks_exact_match():
    lm = KnowingLM(padding=" ")  # within the 2-token margin
    tasks = fewshot.load_tasks(fewshot_tasks.ARITHMETIC_TASKS + fewshot_tasks.SCRAMBLE_TASKS,
                               [0, 1, 3], num_examples=20, seed=0, words=WORDS)
    rows = [fewshot.evaluate_task(lm, task, [0, 1, 3], seed=0) for task in tasks]
    for row in rows:
        assert row["kind"] == fewshot_tasks.FREE_FORM and row["num_examples"] == 20
        for k, result in zip([0, 1, 3], row["results"]):
            assert result == {"shots": k, "exact_match": 1.0, "scored": 20, "too_long": 0,
                              "mean_shots": float(k), "reduced": 0}, row["task"]
    # a K-shot prompt holds K demonstrations and the test question
    three_shot = [p for p in lm.prompts if p.count("\n\n") == 3]
    assert three_shot and all(p.count("What is") + p.count("Please") == 4
                              for p in three_shot)


def test_evaluate_reduces_shots_and_counts_too_long():
    # a 2D+ question is 24-26 characters and its demonstration 28-30; answers take 4 + 2
    lm = KnowingLM(max_len=100)
    row = _evaluate(lm, "arithmetic_2d+", [0, 10], num_examples=30, seed=0)
    zero, ten = row["results"]
    assert zero["exact_match"] == 1.0 and zero["reduced"] == 0
    assert ten["exact_match"] == 1.0 and ten["reduced"] == 30
    assert 2.0 <= ten["mean_shots"] <= 3.0
    assert all(len(p) <= 100 - 6 for p in lm.prompts)
    row = _evaluate(KnowingLM(max_len=20), "arithmetic_2d+", [0, 1], 10, 0)
    assert [r["too_long"] for r in row["results"]] == [10, 10]
    assert row["results"][0]["exact_match"] is None
    assert "n/a [10 too long]" in fewshot.format_table([row])


def test_evaluate_multiple_choice(tmp_path):
    lines = [{"context": "q0:", "choices": [" A", " B"], "label": 0},
             {"context": "q1:", "choices": [" A", " B"], "label": 0},
             {"context": "q2:", "choices": [" A", " C"], "label": 0}]
    path = write_jsonl(tmp_path / "mc.jsonl", lines)
    # " A" wins per token (-1.0 vs -2.5) but loses on the sum to " B" (-3.0 vs -2.5)
    lm = KnowingLM(choice_scores={" A": (-3.0, 3), " B": (-2.5, 1), " C": (-5.0, 1)})
    row = _evaluate(lm, path, [0, 1], num_examples=10, seed=0)
    assert row["kind"] == fewshot_tasks.MULTIPLE_CHOICE and row["num_examples"] == 3
    for k, result in zip([0, 1], row["results"]):
        assert result["acc"] == pytest.approx(1 / 3)
        assert result["acc_norm"] == 1.0 and result["mean_shots"] == k
    zero_shot, one_shot = lm.requests[:6], lm.requests[6:]
    assert zero_shot[:2] == [("q0:", " A"), ("q0:", " B")]
    for (context, _), line in zip(one_shot[::2], lines):
        demo, test = context.split("\n\n")
        assert test == line["context"] and demo in {"q0: A", "q1: A", "q2: A"}
        assert not demo.startswith(line["context"])


def test_format_table():
    rows = [{"task": "arithmetic_2d+", "kind": "free_form", "metrics": ["exact_match"],
             "results": [{"shots": 0, "exact_match": 0.5, "reduced": 0, "too_long": 0,
                          "mean_shots": 0.0},
                         {"shots": 10, "exact_match": 0.25, "reduced": 3, "too_long": 1,
                          "mean_shots": 8.5}]},
            {"task": "mc.jsonl", "kind": "multiple_choice", "metrics": ["acc", "acc_norm"],
             "results": [{"shots": 1, "acc": 1 / 3, "acc_norm": 1.0, "reduced": 0,
                          "too_long": 0, "mean_shots": 1.0}]}]
    assert fewshot.format_table(rows) == "\n".join([
        "| task | kind | metric | 0-shot | 1-shot | 10-shot |",
        "|---|---|---|---|---|---|",
        "| arithmetic_2d+ | free_form | exact_match | 50.0 |  | 25.0 (K=8.5) [1 too long] |",
        "| mc.jsonl | multiple_choice | acc |  | 33.3 |  |",
        "| mc.jsonl | multiple_choice | acc_norm |  | 100.0 |  |"])


# ----------------------------------------------------------------------------- CLI

@pytest.fixture
def fake_generation(monkeypatch):
    """Stands in for ssl_jax.eval.generation (written separately) with KnowingLM."""
    loaded = []

    class LanguageModel:
        @staticmethod
        def from_pretrained(workdir):
            loaded.append(workdir)
            return KnowingLM()

    module = types.ModuleType("ssl_jax.eval.generation")
    module.LanguageModel = LanguageModel
    monkeypatch.setitem(sys.modules, "ssl_jax.eval.generation", module)
    return loaded


def test_cli_uses_config_section_and_writes_results(tmp_path, fake_generation, capsys,
                                                    monkeypatch):
    config = {"task": "gpt_pretrain", "data": {"corpus": "embedded"},
              "fewshot": {"tasks": ["arithmetic_2d+", "rw"], "shots": [0, 2],
                          "num_examples": 5}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from ssl_jax.data import corpora

    seen = []
    monkeypatch.setattr(corpora, "load_documents",
                        lambda data, split: seen.append((data.corpus, split)) or [WORDS])
    output = tmp_path / "out.json"
    assert fewshot.main(["--workdir", str(tmp_path), "--output", str(output)]) == 0
    assert seen == [("embedded", "train")] and fake_generation == [str(tmp_path)]
    lines = capsys.readouterr().out.strip().split("\n")
    payload = json.loads(lines[-1])
    assert lines[0] == "| task | kind | metric | 0-shot | 2-shot |"
    assert payload["shots"] == [0, 2] and payload["num_examples"] == 5
    assert [r["task"] for r in payload["rows"]] == ["arithmetic_2d+", "rw"]
    assert all(r["exact_match"] == 1.0 for row in payload["rows"] for r in row["results"])
    assert json.loads(output.read_text()) == payload
    assert json.loads((tmp_path / "fewshot.json").read_text()) == payload
    assert (tmp_path / "fewshot.md").read_text() == "\n".join(lines[:-1]) + "\n"


def test_cli_flags_defaults_and_errors(tmp_path, fake_generation, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": "gpt_pretrain",
                                                      "data": {"corpus": "embedded"}}))
    args = argparse.Namespace(tasks=None, shots=None, num_examples=None, seed=None)
    config = config_lib.read_config(str(tmp_path))
    assert fewshot._settings(args, config) == {
        "tasks": list(fewshot_tasks.ARITHMETIC_TASKS + fewshot_tasks.SCRAMBLE_TASKS), "shots": [0, 1, 10],
        "num_examples": 100, "seed": 0}
    assert fewshot.main(["--workdir", str(tmp_path), "--tasks", "arithmetic_2dx",
                         "--shots", "1", "--num-examples", "3", "--seed", "7"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().split("\n")[-1])
    assert payload["seed"] == 7 and payload["rows"][0]["results"][0]["exact_match"] == 1.0
    fake_generation.clear()
    assert fewshot.main(["--workdir", str(tmp_path), "--tasks", "arithmetic_9d+"]) == 2
    assert fewshot.main(["--workdir", str(tmp_path), "--shots", "0,x"]) == 2
    assert fewshot.main(["--workdir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'arithmetic_9d+'" in err and "shots must be comma-separated" in err
    assert "nowhere' is not a directory" in err
    assert fake_generation == []  # errors come before the model is loaded
