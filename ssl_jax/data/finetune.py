"""Fine-tuning datasets: labelled examples -> fixed-length model features, and the model's
eval outputs decoded back to the task's own terms (labels, tags, answer strings).

`finetune.dataset` names one source:
  glue/<task>                 cola sst2 mrpc qqp stsb mnli qnli rte wnli (ssl_jax/data/glue.py)
  squad/v1.1, squad/v2.0      extractive QA windows (ssl_jax/data/squad.py)
  conll2003/ner, /pos         token tagging (ssl_jax/data/conll.py)
  embedded/passage_source     label-free: which document of the embedded corpus a sentence
                              comes from (the quickstart's transfer task)
  swag/regular                multiple choice: SWAG's train.csv / val.csv (ssl_jax/data/swag.py)
Each reads its released files from `finetune.path` (a directory; TSV/JSON/CoNLL text) or
the prepared TFDS dataset under `finetune.data_dir`, and then:
  texts()                 raw text, for a vocabulary when no pre-trained one is given
  features(recipe, S)     (train features, eval features); every feature a dict of arrays
A source tokenises its texts and hands the token lists to a recipe, which lays them out:
`BertRecipe` ([CLS] a [SEP] b [SEP], segment ids; a bare WordPiece means this recipe) or
`GptRecipe` (Radford et al. 2018, section 3.3: [start] a [delim] b [extract], right-padded;
similarity tasks as both orders, multiple choice as one sequence per option). Tagging and
SQuAD are BERT-only (the GPT paper has no recipe for them).
and decodes the model's eval outputs (in feature order): `PairSource.split_predictions`,
`ConllSource.decode_tags`, `SquadSource.decode_answers`. The metrics of those are computed
above the data layer, in ssl_jax/eval/finetune_scores.py.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer

from ssl_jax.data import bpe as bpe_lib
from ssl_jax.data import conll, corpora, glue, squad, swag

Feature = dict[str, np.ndarray]


def truncate_pair(a: np.ndarray, b: np.ndarray | None, budget: int
                  ) -> tuple[list, list | None]:
    """a and b (None: a alone) as lists cut to `budget` tokens in all, one token at a time
    from the end of the longer (a on ties): BERT's and GPT-1's truncation."""
    a, b = list(a), (list(b) if b is not None else None)
    while len(a) + len(b or []) > budget:
        (a if b is None or len(a) >= len(b) else b).pop()
    return a, b


def encode_pair(wordpiece, a: np.ndarray, b: np.ndarray | None, max_seq_len: int) -> Feature:
    """[CLS] a [SEP] (b [SEP]) padded to max_seq_len, segment ids 0 for a and 1 for b;
    the longer of a and b is cut first (BERT's recipe)."""
    a, b = truncate_pair(a, b, max_seq_len - (3 if b is not None else 2))
    ids = [wordpiece.cls_id] + a + [wordpiece.sep_id]
    segments = [0] * len(ids)
    if b is not None:
        ids += b + [wordpiece.sep_id]
        segments += [1] * (len(b) + 1)
    pad = max_seq_len - len(ids)
    return {"input_ids": np.asarray(ids + [wordpiece.pad_id] * pad, np.int32),
            "segment_ids": np.asarray(segments + [0] * pad, np.int32),
            "input_mask": np.asarray([1] * len(ids) + [0] * pad, np.int32)}


@dataclasses.dataclass(frozen=True)
class BertRecipe:
    """BERT's input layout (encode_pair); similarity pairs and options are plain pairs."""

    wordpiece: object
    name = "bert"

    @property
    def tokenizer(self):
        return self.wordpiece

    def encode(self, a: np.ndarray, b: np.ndarray | None, max_seq_len: int) -> Feature:
        return encode_pair(self.wordpiece, a, b, max_seq_len)

    def encode_similar(self, a: np.ndarray, b: np.ndarray, max_seq_len: int) -> Feature:
        return self.encode(a, b, max_seq_len)


GPT_SPECIAL_TOKENS = ("<|start|>", "<|delim|>", "<|extract|>")


@dataclasses.dataclass(frozen=True)
class GptRecipe:
    """GPT-1's input transforms: [start] a ([delim] b) [extract], padded on the right with
    the end-of-text id (never attended to: input_mask 0); the longer of a and b is cut first.
    The [extract] token is each sequence's last real token, where the head reads."""

    bpe: bpe_lib.BpeTokenizer  # with the special tokens (gpt_recipe)
    start_id: int
    delim_id: int
    extract_id: int
    name = "gpt"

    @property
    def tokenizer(self):
        return self.bpe

    def encode(self, a: np.ndarray, b: np.ndarray | None, max_seq_len: int) -> Feature:
        a, b = truncate_pair(a, b, max_seq_len - (3 if b is not None else 2))
        ids = [self.start_id] + a + ([self.delim_id] + b if b is not None else [])
        ids.append(self.extract_id)
        pad = max_seq_len - len(ids)
        return {"input_ids": np.asarray(ids + [self.bpe.eot_id] * pad, np.int32),
                "input_mask": np.asarray([1] * len(ids) + [0] * pad, np.int32)}

    def encode_similar(self, a: np.ndarray, b: np.ndarray, max_seq_len: int) -> Feature:
        """Both orders, [2, max_seq_len]: the model adds their two final states (no order)."""
        return stack_rows([self.encode(a, b, max_seq_len), self.encode(b, a, max_seq_len)])

    def special_ids(self) -> dict[str, int]:
        return {"start": self.start_id, "delim": self.delim_id, "extract": self.extract_id}


def gpt_recipe(bpe: bpe_lib.BpeTokenizer, model_vocab_size: int) -> GptRecipe:
    """The BPE with start/delim/extract appended as special tokens (ids model_vocab_size,
    +1, +2: new rows of the embedding table)."""
    if bpe.vocab_size != model_vocab_size:
        raise ValueError(f"the GPT's tokenizer has {bpe.vocab_size} tokens but its embedding "
                         f"table {model_vocab_size} rows; the special tokens need them equal")
    tokenizer = Tokenizer.from_str(bpe.tokenizer.to_str())
    tokenizer.add_special_tokens(list(GPT_SPECIAL_TOKENS))
    ids = [tokenizer.token_to_id(t) for t in GPT_SPECIAL_TOKENS]
    if ids != [model_vocab_size + i for i in range(3)]:
        raise ValueError(f"the GPT's tokenizer already holds a special token of "
                         f"{GPT_SPECIAL_TOKENS} (ids {ids})")
    return GptRecipe(bpe_lib.BpeTokenizer(tokenizer, bpe.eot_id, bpe.source), *ids)


def as_recipe(recipe_or_wordpiece):
    """A recipe; a bare WordPiece is BERT's."""
    if isinstance(recipe_or_wordpiece, (BertRecipe, GptRecipe)):
        return recipe_or_wordpiece
    return BertRecipe(recipe_or_wordpiece)


def _wordpiece(recipe_or_wordpiece):
    """The WordPiece of a BERT-only source (tagging, SQuAD)."""
    recipe = as_recipe(recipe_or_wordpiece)
    if not isinstance(recipe, BertRecipe):
        raise ValueError("tagging and SQuAD features need BERT's recipe (a WordPiece)")
    return recipe.wordpiece


def stack_rows(features: list[Feature]) -> Feature:
    """Per-sequence features -> one feature of [rows, ...] arrays (options, orders)."""
    return {k: np.stack([f[k] for f in features]) for k in features[0]}


class Source:
    """One fine-tuning dataset (see the module docstring)."""

    head: str = "sequence"  # BertWithHead head (or "choice": one scalar per option)
    num_outputs: int = 2
    regression: bool = False
    metric: str = "accuracy"  # the selection metric (higher is better), reported as eval_<metric>

    def texts(self) -> Iterator[str]:
        raise NotImplementedError

    def features(self, recipe, max_seq_len: int) -> tuple[list[Feature], list[Feature]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}


class PairSource(Source):
    """Text (or text pair) classification/regression; eval splits scored separately (MNLI's
    matched and mismatched: the first is `eval_<metric>`, others `eval_<split>_<metric>`)."""

    metrics: tuple[str, ...] = ("accuracy",)
    similarity: bool = False  # GPT recipe: both orders of the pair (STS-B, QQP, MRPC)

    def __init__(self, train: list[dict], evals: dict[str, list[dict]],
                 label_names: tuple[str, ...] | None):
        if not train:
            raise ValueError(f"{self.name}: the training split has no examples")
        self.train, self.evals = train, evals
        self.label_names = label_names
        self.regression = label_names is None
        self.num_outputs = 1 if self.regression else len(label_names)

    def texts(self):
        for e in self.train:
            yield e["text_a"]
            if e.get("text_b"):
                yield e["text_b"]

    def _encode(self, recipe, examples, max_seq_len):
        tokens = recipe.tokenizer
        a = tokens.encode_batch([e["text_a"] for e in examples])
        pair = examples and examples[0].get("text_b") is not None
        b = tokens.encode_batch([e["text_b"] for e in examples]) if pair else [None] * len(a)
        encode = recipe.encode_similar if pair and self.similarity else recipe.encode
        out = []
        for e, x, y in zip(examples, a, b):
            f = encode(x, y, max_seq_len)
            f["label"] = np.asarray(e["label"], np.float32 if self.regression else np.int32)
            out.append(f)
        return out

    def features(self, recipe, max_seq_len):
        recipe = as_recipe(recipe)
        evals = [self._encode(recipe, ex, max_seq_len) for ex in self.evals.values()]
        return (self._encode(recipe, self.train, max_seq_len),
                [f for split in evals for f in split])

    def split_predictions(self, predictions: np.ndarray
                          ) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Eval predictions (in feature order) -> [(split, predictions, labels)] for each eval
        split that has any: when num_eval_batches cuts the eval, the last split scored is cut
        to the predictions there are and later splits are left out."""
        out, start = [], 0
        for split, examples in self.evals.items():
            labels = np.asarray([e["label"] for e in examples])
            stop = min(start + len(labels), len(predictions))
            if stop > start:
                out.append((split, predictions[start:stop], labels[:stop - start]))
            start += len(labels)
        return out

    def describe(self):
        facts = {"train_examples": len(self.train),
                 **{f"{k}_examples": len(v) for k, v in self.evals.items()},
                 "labels": list(self.label_names) if self.label_names else "regression"}
        first = next(iter(self.evals.values()), [])
        if not self.regression and first:  # predicting the most frequent training label
            counts = np.bincount([e["label"] for e in self.train], minlength=self.num_outputs)
            hits = sum(e["label"] == int(np.argmax(counts)) for e in first)
            facts["majority_class_accuracy"] = hits / len(first)
        return facts


SIMILARITY_TASKS = ("stsb", "qqp", "mrpc")  # GPT-1, section 3.3: no inherent order


class GlueSource(PairSource):
    def __init__(self, task: str, path: str | None, data_dir: str | None,
                 eval_split: str = "validation"):
        if task not in glue.GLUE_TASKS:
            raise ValueError(f"finetune.dataset='glue/{task}': unknown GLUE task; expected one "
                             f"of {sorted(glue.GLUE_TASKS)}")
        spec = glue.GLUE_TASKS[task]
        self.name = f"glue/{task}"
        self.metrics = spec.metrics
        self.metric = spec.metrics[0]
        self.similarity = task in SIMILARITY_TASKS
        splits = spec.eval_splits if eval_split == "validation" else tuple(
            s for s in spec.splits if s.startswith("test"))
        super().__init__(glue.load_glue(task, "train", path, data_dir),
                         {s: glue.load_glue(task, s, path, data_dir) for s in splits},
                         spec.label_names)


class PassageSource(PairSource):
    """Label-free: each sentence of the `num_documents` longest documents of the corpus's
    training split, labelled with its document; every `eval_every`-th sentence of each
    document is held out. The section heading (each document's first line) is dropped."""

    name = "embedded/passage_source"

    def __init__(self, data_config, num_documents: int, eval_every: int = 5,
                 min_chars: int = 20):
        documents = corpora.load_documents(data_config, "train")
        if num_documents < 2 or num_documents > len(documents):
            raise ValueError(f"finetune.num_documents={num_documents}: expected 2 to "
                             f"{len(documents)} (the corpus's training documents)")
        order = sorted(range(len(documents)), key=lambda i: (-len(documents[i]), i))
        train, held_out = [], []
        for label, i in enumerate(order[:num_documents]):
            sentences = [s for s in documents[i][1:] if len(s) >= min_chars]
            for n, s in enumerate(sentences):
                example = {"text_a": s, "text_b": None, "label": label}
                (held_out if n % eval_every == eval_every - 1 else train).append(example)
        self.documents = [documents[i][0] for i in order[:num_documents]]
        super().__init__(train, {"validation": held_out},
                         tuple(f"doc{k}" for k in range(num_documents)))

    def describe(self):
        return dict(super().describe(), documents=self.documents)


class ChoiceSource(PairSource):
    """Multiple choice: a context and k options, the label the right option's index; one
    sequence per option ([k, S] features), the head scores each and softmaxes over them."""

    head = "choice"

    def __init__(self, name: str, train: list[dict], evals: dict[str, list[dict]]):
        self.name = name
        k = len(train[0]["options"]) if train else 0
        super().__init__(train, evals, tuple(f"option{i}" for i in range(k)))

    def texts(self):
        for e in self.train:
            yield e["context"]
            yield from e["options"]

    def _encode(self, recipe, examples, max_seq_len):
        tokens = recipe.tokenizer
        contexts = tokens.encode_batch([e["context"] for e in examples])
        out = []
        for e, context in zip(examples, contexts):
            options = tokens.encode_batch(list(e["options"]))
            f = stack_rows([recipe.encode(context, o, max_seq_len) for o in options])
            f["label"] = np.asarray(e["label"], np.int32)
            out.append(f)
        return out


class SwagSource(ChoiceSource):
    """SWAG (Zellers et al. 2018; BERT section 4.4): sent1 as the context, sent2 + each
    ending as an option; scored on val.csv."""

    def __init__(self, name: str, path: str | None):
        if name != "regular":
            raise ValueError(f"finetune.dataset='swag/{name}'; expected swag/regular")
        super().__init__("swag/regular", swag.load_swag("train", path),
                         {"validation": swag.load_swag("validation", path)})


class ConllSource(Source):
    """CoNLL-2003 tagging: NER scored by seqeval entity F1, POS by token accuracy."""

    head = "token"

    def __init__(self, column: str, path: str | None, data_dir: str | None,
                 eval_split: str = "validation"):
        if column not in ("ner", "pos"):
            raise ValueError(f"finetune.dataset='conll2003/{column}'; expected conll2003/ner "
                             f"or conll2003/pos")
        self.column = column
        self.tags = tuple(conll.NER_TAGS if column == "ner" else conll.POS_TAGS)
        self.num_outputs = len(self.tags)
        self.metric = "f1" if column == "ner" else "accuracy"
        self.train = conll.load_conll2003("train", path, data_dir)
        self.eval = conll.load_conll2003(eval_split, path, data_dir)
        if not self.train:
            raise ValueError(f"conll2003/{column}: the training split has no sentences")
        index = {t: i for i, t in enumerate(self.tags)}
        for split in (self.train, self.eval):
            for s in split:
                unknown = sorted(set(s[column]) - set(index))
                if unknown:
                    raise ValueError(f"conll2003/{column}: unknown tags {unknown}; expected "
                                     f"the tag set {list(self.tags)}")
        self.index = index
        self.eval_encoded: list[Feature] = []

    def texts(self):
        for s in self.train:
            yield " ".join(s["words"])

    def _encode(self, wordpiece, sentences, max_seq_len):
        out = []
        for s in sentences:
            e = conll.encode_words(wordpiece, s["words"], [self.index[t] for t in s[self.column]],
                                   max_seq_len)
            out.append(e)
        return out

    def features(self, recipe, max_seq_len):
        wordpiece = _wordpiece(recipe)
        train = self._encode(wordpiece, self.train, max_seq_len)
        self.eval_encoded = self._encode(wordpiece, self.eval, max_seq_len)
        keep = ("input_ids", "segment_ids", "input_mask", "labels")
        return ([{k: e[k] for k in keep} for e in train],
                [{k: e[k] for k in keep} for e in self.eval_encoded])

    def decode_tags(self, outputs) -> tuple[list[list[str]], list[list[str]]]:
        """Per-token predictions (in feature order) -> (true tags, predicted tags), one list
        per eval sentence scored: each word takes its first piece's prediction (a word cut by
        max_seq_len gets "O", or tag 0 for POS)."""
        fallback = self.index["O"] if "O" in self.index else 0
        true, pred = [], []
        for s, encoded, tokens in zip(self.eval, self.eval_encoded, outputs["prediction"]):
            ids = conll.word_predictions(tokens, encoded, len(s["words"]), fallback)
            true.append(list(s[self.column]))
            pred.append([self.tags[i] for i in ids])
        return true, pred

    def describe(self):
        return {"train_sentences": len(self.train), "eval_sentences": len(self.eval),
                "tags": list(self.tags)}


class SquadSource(Source):
    """SQuAD v1.1/v2.0: windows of question + passage, start/end logits, n-best decoding."""

    head = "span"
    num_outputs = 2
    metric = "f1"

    def __init__(self, version: str, path: str | None, data_dir: str | None, ft,
                 eval_split: str = "validation"):
        if version not in ("v1.1", "v2.0"):
            raise ValueError(f"finetune.dataset='squad/{version}'; expected squad/v1.1 or "
                             f"squad/v2.0")
        if eval_split != "validation":
            raise ValueError(f"squad/{version} has no public test set (its test questions are "
                             f"hidden; the leaderboard scores a submitted model): use the "
                             f"validation (dev) split")
        self.version = version[1:]
        self.version_2 = self.version == "2.0"
        files = ({"train": f"{path}/train-{version}.json",
                  "validation": f"{path}/dev-{version}.json"} if path else {})
        self.train = squad.load_squad(self.version, "train", files.get("train"), data_dir)
        self.eval = squad.load_squad(self.version, "validation", files.get("validation"),
                                     data_dir)
        self.ft = ft
        self.eval_meta: list[dict] = []

    def texts(self):
        for e in self.train:
            yield e["question"]
            yield e["context"]

    def features(self, recipe, max_seq_len):
        wordpiece = _wordpiece(recipe)
        kw = dict(max_seq_len=max_seq_len, doc_stride=self.ft.doc_stride,
                  max_query_len=self.ft.max_query_len)
        train, _ = squad.featurize(self.train, wordpiece, train=True, **kw)
        evals, self.eval_meta = squad.featurize(self.eval, wordpiece, train=False, **kw)
        return train, evals

    def decode_answers(self, outputs) -> tuple[list[dict], dict[str, str]]:
        """Start/end logits of the eval windows (in feature order) -> (the questions scored,
        {question id: answer text}) by n-best span decoding. When num_eval_batches cuts the
        eval, a question whose windows are only partly there is left out."""
        n = len(outputs["start_logits"])  # < all windows when num_eval_batches cuts the eval
        cut = self.eval_meta[n]["example_index"] if n < len(self.eval_meta) else None
        keep = [f for f in range(n) if self.eval_meta[f]["example_index"] != cut]
        if not keep:
            return [], {}
        order = sorted({self.eval_meta[f]["example_index"] for f in keep})
        position = {index: i for i, index in enumerate(order)}  # examples scored -> 0..k-1
        examples = [self.eval[i] for i in order]
        meta = [dict(self.eval_meta[f], example_index=position[self.eval_meta[f]["example_index"]])
                for f in keep]
        predictions = squad.decode(
            examples, meta, outputs["start_logits"][keep], outputs["end_logits"][keep],
            n_best=self.ft.n_best, max_answer_len=self.ft.max_answer_len,
            version_2=self.version_2, null_score_diff_threshold=self.ft.null_score_diff_threshold)
        return examples, predictions

    def describe(self):
        return {"train_questions": len(self.train), "eval_questions": len(self.eval),
                "eval_windows": len(self.eval_meta)}


EVAL_SPLITS = ("validation", "test")


def load_source(ft, data_config=None) -> Source:
    """config.finetune -> its Source (reads the data; raises on a bad name or file).

    The eval examples are the benchmark's dev split(s), or its test split(s) when
    `ft.eval_split` is "test" (set by ssl_jax.predict; training configs have no such field):
    GLUE's test files (labels -1, NaN for STS-B), CoNLL-2003's testb. SQuAD and the passage
    task have no test split: an error."""
    family, _, name = ft.dataset.partition("/")
    path, data_dir = ft.get("path") or None, ft.get("data_dir") or None
    split = ft.get("eval_split") or "validation"
    if split not in EVAL_SPLITS:
        raise ValueError(f"eval split {split!r}; expected one of {list(EVAL_SPLITS)}")
    if family == "glue":
        return GlueSource(name, path, data_dir, split)
    if family == "squad":
        return SquadSource(name, path, data_dir, ft, split)
    if family == "conll2003":
        return ConllSource(name, path, data_dir, split)
    if family == "swag":
        if split != "validation":
            raise ValueError("swag: its test split has no public labels and no reader here; "
                             "expected --split validation")
        return SwagSource(name, path)
    if ft.dataset == "embedded/passage_source":
        if split != "validation":
            raise ValueError("embedded/passage_source has no test split (its held-out "
                             "sentences are the validation split)")
        return PassageSource(data_config, ft.num_documents)
    raise ValueError(f"finetune.dataset={ft.dataset!r}; expected glue/<task>, squad/v1.1, "
                     f"squad/v2.0, conll2003/ner, conll2003/pos, swag/regular or "
                     f"embedded/passage_source")


def steps_for_epochs(num_examples: int, epochs: float, batch_size: int) -> int:
    return max(1, math.ceil(epochs * num_examples / batch_size))
