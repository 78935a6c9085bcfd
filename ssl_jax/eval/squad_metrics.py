"""The official SQuAD v1.1 and v2.0 evaluation: exact match and token F1 on normalised text.

Follows the released `evaluate-v1.1.py` / `evaluate-v2.0.py`: a prediction is scored against
each gold answer and the best is kept; scores are averaged over questions, in percent.
v2.0 differences kept exact: gold answers that normalise to "" are dropped (an impossible
question's gold is [""]), and F1 with an empty side is 1 when both sides are empty, else 0.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Mapping, Sequence

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str, *, version_2: bool = True) -> float:
    """Harmonic mean of token precision and recall over the normalised tokens (a token
    counts as often as it occurs on both sides). An empty side: v2.0 gives 1.0 when both
    are empty, else 0.0; v1.1 (version_2=False) always 0.0."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if version_2 and (not predicted or not gold):
        return float(predicted == gold)
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: dict, version_2: bool) -> list[str]:
    """The texts a prediction is scored against (v2.0: non-empty after normalising, or [""])."""
    texts = [a["text"] for a in example["answers"]]
    if not version_2:
        return texts
    return [t for t in texts if normalize_answer(t)] or [""]


def squad_scores(examples: Sequence[dict], predictions: Mapping[str, str], *,
                 version_2: bool | None = None) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, averaged over `examples`; v2.0 adds HasAns_exact,
    HasAns_f1, NoAns_exact, NoAns_f1 (each over its own questions; absent when it has none).
    `version_2` defaults to whether any example is impossible."""
    if version_2 is None:
        version_2 = any(e["is_impossible"] for e in examples)
    if not examples:
        raise ValueError("squad_scores needs at least one example")
    ids = {e["id"] for e in examples}
    missing = [e["id"] for e in examples if e["id"] not in predictions]
    if missing:
        raise ValueError(f"no prediction for question id {missing[0]!r} ({len(missing)} of "
                         f"{len(examples)} questions have none)")
    unknown = [i for i in predictions if i not in ids]
    if unknown:
        raise ValueError(f"prediction for unknown question id {unknown[0]!r} ({len(unknown)} "
                         f"predictions match no example)")
    scores = {"exact_match": [], "f1": [], "HasAns": [], "NoAns": []}
    for example in examples:
        prediction = predictions[example["id"]]
        if not isinstance(prediction, str):
            raise TypeError(f"prediction for {example['id']!r} is a "
                            f"{type(prediction).__name__}, not a str")
        if not version_2 and example["is_impossible"]:
            raise ValueError(f"question {example['id']!r} is impossible: score it as v2.0")
        golds = gold_answers(example, version_2)
        em = max(exact_match(prediction, g) for g in golds)
        f = max(f1(prediction, g, version_2=version_2) for g in golds)
        scores["exact_match"].append(em)
        scores["f1"].append(f)
        scores["NoAns" if example["is_impossible"] else "HasAns"].append((em, f))
    return _summary(scores, version_2)


def _summary(scores: dict[str, list], version_2: bool) -> dict[str, float]:
    result = {"exact_match": 100.0 * sum(scores["exact_match"]) / len(scores["exact_match"]),
              "f1": 100.0 * sum(scores["f1"]) / len(scores["f1"])}
    if version_2:
        for group in ("HasAns", "NoAns"):
            if scores[group]:
                result[f"{group}_exact"] = 100.0 * sum(s[0] for s in scores[group]) / len(
                    scores[group])
                result[f"{group}_f1"] = 100.0 * sum(s[1] for s in scores[group]) / len(
                    scores[group])
    return result
