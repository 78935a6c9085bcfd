"""The few-shot tasks: GPT-3's synthetic arithmetic and word-scrambling tasks (generated, no
download; Brown et al. 2020, sections 3.9.1-3.9.2) and a jsonl format for any other task.

Multiple-choice examples are {"context", "choices", "label"}; free-form ones {"context",
"answer"}. Test examples and the demonstration pool come from different random streams.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import json
import operator
import os
import string
from typing import Any, Callable, Iterable, Sequence

import numpy as np

MULTIPLE_CHOICE = "multiple_choice"
FREE_FORM = "free_form"
DEMO_POOL_SIZE = 1000            # demonstrations generated per synthetic task (at least 2K)
TEST_STREAM, DEMO_STREAM = 0, 1  # np.random.default_rng((seed, stream))

# ----------------------------------------------------------------------------- arithmetic

_BINARY_OPS = {"+": ("plus", operator.add), "-": ("minus", operator.sub),
               "x": ("times", operator.mul)}
_COMPOSITE_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
ARITHMETIC_TASKS = tuple(f"arithmetic_{d}d{op}" for d in (2, 3, 4, 5) for op in "+-") + (
    "arithmetic_2dx", "arithmetic_1dc")


def arithmetic_examples(name: str, seed: int | Sequence[int], count: int) -> list[dict]:
    """`count` GPT-3 arithmetic problems, e.g. {"context": "Q: What is 48 plus 76?\\nA:",
    "answer": " 124"}. nD+/-/x operands are uniform in [0, 10^n); 1DC is a{op}(b{op}c) on
    three digits with ops from + - *."""
    if name not in ARITHMETIC_TASKS:
        raise ValueError(f"unknown arithmetic task {name!r}; known: {', '.join(ARITHMETIC_TASKS)}")
    rng = np.random.default_rng(seed)
    if name == "arithmetic_1dc":
        digits = rng.integers(0, 10, size=(count, 3))
        ops = rng.choice(list(_COMPOSITE_OPS), size=(count, 2))
        examples = []
        for (a, b, c), (op1, op2) in zip(digits.tolist(), ops.tolist()):
            value = _COMPOSITE_OPS[op1](a, _COMPOSITE_OPS[op2](b, c))
            examples.append({"context": f"Q: What is {a}{op1}({b}{op2}{c})?\nA:",
                             "answer": f" {value}"})
        return examples
    num_digits, op = int(name[len("arithmetic_")]), name[-1]
    word, fn = _BINARY_OPS[op]
    operands = rng.integers(0, 10 ** num_digits, size=(count, 2))
    return [{"context": f"Q: What is {a} {word} {b}?\nA:", "answer": f" {fn(a, b)}"}
            for a, b in operands.tolist()]


# ----------------------------------------------------------------------------- scrambling

SCRAMBLE_TASKS = ("cl", "a1", "a2", "ri", "rw")
SCRAMBLE_PROMPT = "Please unscramble the letters into a word, and write that word:\n{} ="
INSERTION_CHARS = string.punctuation + " "


def cycle_letters(word: str, rng: np.random.Generator) -> str:
    """A rotation of `word` that differs from it ("inevitably" -> "lyinevitab"), if any."""
    rotations = [word[k:] + word[:k] for k in range(1, len(word))]
    different = [r for r in rotations if r != word]
    return different[int(rng.integers(len(different)))] if different else word


def shuffle_inner(word: str, keep: int, rng: np.random.Generator) -> str:
    """`word` with all but its first and last `keep` letters shuffled into a different order
    (A1: keep=1, "corruption" -> "criroptuon"; A2: keep=2); `word` itself if impossible."""
    middle = word[keep:len(word) - keep]
    if len(set(middle)) < 2:
        return word
    while True:  # each try differs with probability >= 1/2
        shuffled = "".join(rng.permutation(list(middle)))
        if shuffled != middle:
            return word[:keep] + shuffled + word[len(word) - keep:]


def random_insertion(word: str, rng: np.random.Generator) -> str:
    """One random punctuation or space character between each pair of letters (RI):
    "succession" -> "s.u!c/c!e.s s i/o/n"; the letters are scrambled[::2]."""
    inserted = rng.choice(list(INSERTION_CHARS), size=max(len(word) - 1, 0)).tolist()
    return word[:1] + "".join(c + letter for c, letter in zip(inserted, word[1:]))


def reverse_word(word: str, rng: np.random.Generator | None = None) -> str:
    """The word spelled backwards (RW): "objects" -> "stcejbo"."""
    return word[::-1]


SCRAMBLERS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "cl": cycle_letters,
    "a1": lambda word, rng: shuffle_inner(word, 1, rng),
    "a2": lambda word, rng: shuffle_inner(word, 2, rng),
    "ri": random_insertion,
    "rw": reverse_word,
}


def scramble_possible(name: str, word: str) -> bool:
    """Whether task `name` can turn `word` into a different string."""
    return {"cl": lambda: len(set(word)) > 1,
            "a1": lambda: len(set(word[1:-1])) > 1,
            "a2": lambda: len(set(word[2:-2])) > 1,
            "ri": lambda: len(word) > 1,
            "rw": lambda: word != word[::-1]}[name]()


def scramble_examples(name: str, words: Sequence[str], seed: int | Sequence[int],
                      count: int) -> list[dict]:
    """`count` examples of scramble task `name` on words drawn uniformly (with replacement)
    from those of `words` whose scramble can differ from the word."""
    if name not in SCRAMBLERS:
        raise ValueError(f"unknown scramble task {name!r}; known: {', '.join(SCRAMBLE_TASKS)}")
    for word in words:
        if not isinstance(word, str) or not word.isalpha():
            raise ValueError(f"scramble task {name!r}: word {word!r} is not purely alphabetic")
    usable = sorted({w for w in words if scramble_possible(name, w)})
    if not usable:
        raise ValueError(f"scramble task {name!r}: none of the {len(words)} words can be "
                         f"scrambled into a different string")
    rng = np.random.default_rng(seed)
    examples = []
    for i in rng.integers(len(usable), size=count).tolist():
        word = usable[i]
        examples.append({"context": SCRAMBLE_PROMPT.format(SCRAMBLERS[name](word, rng)),
                         "answer": f" {word}"})
    return examples


def word_list(texts: Iterable[str], n: int = 10000, min_len: int = 4,
              max_len: int = 15) -> list[str]:
    """The `n` most frequent purely alphabetic lower-case ASCII words of `min_len`..`max_len`
    letters in `texts` (GPT-3 used the 10,000 most frequent words), ties broken
    alphabetically. Words are whitespace-separated tokens stripped of surrounding punctuation."""
    if n < 1 or min_len < 1 or max_len < min_len:
        raise ValueError(f"word_list needs n >= 1 and 1 <= min_len <= max_len; got n={n}, "
                         f"min_len={min_len}, max_len={max_len}")
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        for token in text.split():
            token = token.strip(string.punctuation)
            if (min_len <= len(token) <= max_len and token.isascii() and token.isalpha()
                    and token.islower()):
                counts[token] += 1
    return [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]]


# ----------------------------------------------------------------------------- jsonl tasks

def example_kind(record: Any, where: str) -> str:
    """MULTIPLE_CHOICE or FREE_FORM for a well-formed example; ValueError naming `where`."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("context"), str):
        raise ValueError(f"{where}: needs a string 'context'")
    has_choices, has_answer = "choices" in record, "answer" in record
    if has_choices == has_answer:
        raise ValueError(f"{where}: needs either 'choices' and 'label' (multiple choice) or "
                         f"'answer' (free form), not {'both' if has_answer else 'neither'}")
    if has_answer:
        if not isinstance(record["answer"], str) or not record["answer"].strip():
            raise ValueError(f"{where}: 'answer' must be a non-empty string, got "
                             f"{record['answer']!r}")
        return FREE_FORM
    choices, label = record["choices"], record.get("label")
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)):
        raise ValueError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, "
                         f"got {choices!r}")
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"{where}: 'label' must be an integer, got {label!r}")
    if not 0 <= label < len(choices):
        raise ValueError(f"{where}: label {label} out of range for {len(choices)} choices")
    return MULTIPLE_CHOICE


def read_jsonl(path: str) -> tuple[str, list[dict]]:
    """(kind, examples) of a jsonl task file: one example per line, all of one kind."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task file {path!r} does not exist")
    kind, first_line, examples = None, 0, []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e})") from None
            this_kind = example_kind(record, where)
            if kind is None:
                kind, first_line = this_kind, line_number
            elif this_kind != kind:
                raise ValueError(f"{where}: a {this_kind} example, but line {first_line} is "
                                 f"{kind}; a task file holds one kind")
            examples.append(record)
    if not examples:
        raise ValueError(f"task file {path!r} has no examples")
    return kind, examples


# ----------------------------------------------------------------------------- tasks

@dataclasses.dataclass(frozen=True)
class Task:
    """Test examples and the pool their demonstrations are drawn from. A demonstration whose
    `same_item` field equals the test example's is never shown with it."""
    name: str
    kind: str
    examples: list[dict]
    demonstrations: list[dict]
    description: str | None = None
    same_item: str = "context"


def load_task(spec: str, num_examples: int, seed: int, words: Sequence[str] | None = None,
              pool_size: int = DEMO_POOL_SIZE) -> Task:
    """A built-in task by name, or "test.jsonl[:demos.jsonl]" (first `num_examples` lines;
    demonstrations from demos.jsonl, else from the whole test file)."""
    if num_examples < 1 or seed < 0:
        raise ValueError(f"need num_examples >= 1 and seed >= 0; got {num_examples}, {seed}")
    if spec in ARITHMETIC_TASKS:
        return Task(spec, FREE_FORM, arithmetic_examples(spec, (seed, TEST_STREAM), num_examples),
                    arithmetic_examples(spec, (seed, DEMO_STREAM), pool_size))
    if spec in SCRAMBLE_TASKS:
        if not words:
            raise ValueError(f"scramble task {spec!r} needs a word list (words=word_list(texts))")
        return Task(spec, FREE_FORM,
                    scramble_examples(spec, words, (seed, TEST_STREAM), num_examples),
                    scramble_examples(spec, words, (seed, DEMO_STREAM), pool_size),
                    same_item="answer")
    test_path, _, demo_path = spec.partition(":")
    if not os.path.isfile(test_path) and not test_path.endswith(".jsonl"):
        known = ARITHMETIC_TASKS + SCRAMBLE_TASKS
        close = difflib.get_close_matches(spec, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown task {spec!r}: not one of {', '.join(known)} and not a "
                         f"jsonl file{hint}")
    kind, examples = read_jsonl(test_path)
    demonstrations = examples
    if demo_path:
        demo_kind, demonstrations = read_jsonl(demo_path)
        if demo_kind != kind:
            raise ValueError(f"demonstrations {demo_path!r} are {demo_kind} but the test file "
                             f"{test_path!r} is {kind}")
    return Task(spec, kind, examples[:num_examples], demonstrations)
