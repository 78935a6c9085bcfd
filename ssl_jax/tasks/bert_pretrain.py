"""BERT pre-training: masked LM (gathered at the masked positions) + next-sentence prediction."""
from __future__ import annotations

import math
import os

import numpy as np

from ssl_jax.data import corpora, mixture, prepared, pretraining, tokenizer
from ssl_jax.data.batching import with_example_weight
from ssl_jax.eval.baselines import unigram_mlm_loss
from ssl_jax.models.bert import BertForPreTraining, bert_config, check_model_sizes
from ssl_jax.models.losses import classification_stats
from ssl_jax.tasks.base import LoadedTask, Task, mixture_stats


def check_sizes(config) -> None:
    """The checks that need no data: run first, before the corpus is read."""
    m = config.model
    check_model_sizes(m)
    bert_config(m, 1)  # dtypes and attention_impl
    if config.max_seq_len > m.max_position_embeddings:
        raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the position table "
                         f"(model.max_position_embeddings={m.max_position_embeddings})")
    if config.max_seq_len < 8:
        raise ValueError(f"max_seq_len={config.max_seq_len} is too short (>= 8)")
    if not 0.0 <= config.data.random_next_prob <= 1.0:
        raise ValueError(f"data.random_next_prob={config.data.random_next_prob} must be in "
                         f"[0, 1]")
    if not 0.0 <= config.data.short_seq_prob <= 1.0:
        raise ValueError(f"data.short_seq_prob={config.data.short_seq_prob} must be in [0, 1]")
    if config.data.masking not in ("static", "dynamic"):
        raise ValueError(f"data.masking={config.data.masking!r}; expected 'static' or 'dynamic'")
    if config.data.dupe_factor < 1:
        raise ValueError(f"data.dupe_factor={config.data.dupe_factor} must be >= 1")
    pretraining.masking_spec(config.data, config.max_seq_len)  # validates the rates


def model_inputs(batch: dict) -> dict:
    """The BertForPreTraining arguments in a pre-training batch."""
    return {"input_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
            "input_mask": batch["input_mask"], "masked_positions": batch["masked_positions"]}


class BertPretrain(Task):
    """MLM (gathered at the masked positions) + NSP, from the config and the vocabulary size."""

    @classmethod
    def check(cls, config) -> None:
        check_sizes(config)
        spec = pretraining.masking_spec(config.data, config.max_seq_len)
        if spec.max_predictions > config.max_seq_len:
            raise ValueError(f"data.max_predictions_per_seq={spec.max_predictions} exceeds "
                             f"max_seq_len={config.max_seq_len}")

    def __init__(self, config, *, vocab_size: int):
        super().__init__(config)
        self.spec = pretraining.masking_spec(config.data, config.max_seq_len)
        self.nsp = bool(config.data.nsp)
        self.loss_terms = ("mlm_loss", "nsp_loss") if self.nsp else ("mlm_loss",)
        self.model_config = bert_config(config.model, vocab_size)
        self.mixture_names = [n for n, _, _ in prepared.parse_mixture(config.data.get("mixture"))]

    def build_model(self, *, train: bool) -> BertForPreTraining:
        return BertForPreTraining(self.model_config, deterministic=not train)

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        S, P = self.config.max_seq_len, self.spec.max_predictions
        return with_example_weight({
            "input_ids": np.zeros((batch_size, S), np.int32),
            "segment_ids": np.zeros((batch_size, S), np.int32),
            "input_mask": np.ones((batch_size, S), np.int32),
            "masked_positions": np.zeros((batch_size, P), np.int32),
            "masked_ids": np.zeros((batch_size, P), np.int32),
            "masked_weights": np.zeros((batch_size, P), np.float32),
            "next_sentence_label": np.zeros((batch_size,), np.int32)})

    def model_inputs(self, batch: dict) -> dict:
        return model_inputs(batch)

    def stats(self, params, batch, rng, *, train: bool):
        """MLM loss/accuracy over the gathered masked positions (weighted by masked_weights)
        and NSP loss/accuracy (weighted by example_weight), each as (sum, count)."""
        mlm_logits, nsp_logits = self.build_model(train=train).apply(
            {"params": params}, **model_inputs(batch), rngs={"dropout": rng} if train else {})
        # mlm_logits [batch, P, vocab] float32; nsp_logits [batch, 2]
        stats = classification_stats(mlm_logits, batch["masked_ids"], batch["masked_weights"],
                                     loss="mlm_loss", accuracy="mlm_accuracy")
        if self.nsp:
            stats.update(classification_stats(nsp_logits, batch["next_sentence_label"],
                                              batch["example_weight"], loss="nsp_loss",
                                              accuracy="nsp_accuracy"))
        stats.update(mixture_stats(batch, self.mixture_names))
        return stats

    def derived_metrics(self, means):
        return {"mlm_perplexity": math.exp(min(means["mlm_loss"], 50.0))}


def _documents(data, split: str) -> list[list[str]]:
    """Every document of the split (empty ones too: indices stay the corpus's)."""
    source = corpora.Documents(data, split)
    return [source[i] for i in range(len(source))]


class BertPretrainTask(LoadedTask, BertPretrain):
    """BERT pre-training on config.data's corpus, with its WordPiece vocabulary (trained on
    the corpus unless data.vocab_path is given)."""

    def load(self, config, workdir: str):
        if config.data.get("prepared") or config.data.get("mixture"):
            return self._load_prepared(config, workdir)
        data = config.data
        nsp = bool(data.nsp)
        train_docs = _documents(data, "train")
        eval_docs = _documents(data, "validation")
        n_sentences = sum(len(d) for d in train_docs)
        if n_sentences == 0:
            raise ValueError(f"corpus {data.corpus!r} is empty: its train split has no text "
                             f"({len(train_docs)} documents)")
        if nsp and sum(1 for d in train_docs if d) < 2:
            raise ValueError(f"corpus {data.corpus!r} has {len(train_docs)} training document(s);"
                             " next-sentence prediction needs at least 2 (or set data.nsp=False)")
        self.wordpiece = tokenizer.load_or_train(
            data, os.path.join(workdir, "tokenizer"),
            lambda: (s for d in train_docs for s in d), corpora.corpus_id(data),
            data.get("data_dir") or corpora.default_data_dir())
        train_tokens = self._tokenize(train_docs)
        # keyed draws: the instances a prepared directory holds (ssl_jax/data/prepare.py)
        self.train_instances = pretraining.create_instances(
            train_tokens, self.wordpiece, config.max_seq_len, data.short_seq_prob, nsp,
            seed=config.seed, copies=data.dupe_factor, random_next_prob=data.random_next_prob)
        if not self.train_instances:
            raise ValueError(f"corpus {data.corpus!r} yields no training sequence")
        self.eval_instances = pretraining.create_instances(
            self._tokenize(eval_docs), self.wordpiece, config.max_seq_len,
            data.short_seq_prob, nsp, seed=config.seed + 7,
            random_next_prob=data.random_next_prob)
        self.train_counts = np.zeros(self.wordpiece.vocab_size, np.int64)
        for d in train_tokens:
            for sentence in d:
                self.train_counts += np.bincount(sentence, minlength=self.wordpiece.vocab_size)
        self._eval_examples = None
        self.prepared = None
        self.corpus = {"train": corpora.corpus_stats(train_docs),
                       "validation": corpora.corpus_stats(eval_docs)}
        return {"vocab_size": self.wordpiece.vocab_size}

    def _load_prepared(self, config, workdir: str):
        """data.prepared (or data.mixture): examples streamed from ArrayRecord shards; the
        tokenizer is the one they were made with (kept in the workdir too)."""
        self.prepared = prepared.open_all(config)
        first = self.prepared[0][2]
        self.wordpiece = tokenizer.load_vocab(os.path.join(first.tokenizer_dir, "vocab.txt"),
                                              config.data.lowercase)
        tokenizer.save(self.wordpiece, os.path.join(workdir, "tokenizer"))
        self.sources, self.train_counts, self.corpus = prepared.train_view(self.prepared)
        self._eval_examples = None
        return {"vocab_size": self.wordpiece.vocab_size}

    def _tokenize(self, documents):
        """Every document (an empty one too: the indices stay the corpus's), its non-empty
        tokenised sentences."""
        return pretraining.tokenize_documents(documents, range(len(documents)), self.wordpiece)

    def _decoder(self, prepared_dir, *, masked: bool):
        return prepared_dir.bert_decoder(masked=masked, max_predictions=self.spec.max_predictions,
                                         pad_id=self.wordpiece.pad_id,
                                         max_seq_len=self.config.max_seq_len)

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        dynamic = self.config.data.masking == "dynamic"
        common = dict(dynamic=dynamic, seed=self.config.seed,
                      batch_size=self.config.batch_size // process_count,
                      process_index=process_index, process_count=process_count)
        if self.prepared is None:
            return pretraining.train_dataset(self.train_instances, self.spec, self.wordpiece,
                                             self.config.max_seq_len, **common)
        if len(self.prepared) == 1:
            name, _, p = self.prepared[0]
            return pretraining.train_dataset(self.sources[name], self.spec, self.wordpiece,
                                             self.config.max_seq_len,
                                             decode=self._decoder(p, masked=not dynamic),
                                             **common)
        return mixture.mixture_batches(
            [(self.sources[name], weight, self._example_fn(p, dynamic))
             for name, weight, p in self.prepared],
            seed=self.config.seed, batch_size=common["batch_size"],
            process_index=process_index, process_count=process_count)

    def _example_fn(self, prepared_dir, dynamic: bool):
        decode = self._decoder(prepared_dir, masked=not dynamic)
        if not dynamic:
            return lambda record, rng: decode(record)
        return lambda record, rng: pretraining.to_example(
            decode(record), self.spec, self.wordpiece, self.config.max_seq_len, rng)

    def eval_examples(self):
        if self._eval_examples is None:  # masked once, with a fixed seed: every eval the same
            if self.prepared is None:
                self._eval_examples = pretraining.eval_examples(
                    self.eval_instances[:self.eval_limit()], self.spec, self.wordpiece,
                    self.config.max_seq_len, seed=self.config.seed + 11)
            else:  # the first source's held-out split, at most what an evaluation reads
                _, _, p = self.prepared[0]
                self._eval_examples = mixture.LazyExamples(
                    p.source("validation"), self._decoder(p, masked=True),
                    limit=self.eval_limit())
        return self._eval_examples

    def eval_limit(self) -> int | None:
        """How many held-out examples an evaluation reads (num_eval_batches; None: all)."""
        n = self.config.get("num_eval_batches")
        return None if n is None else n * self.config.batch_size

    def epoch_examples(self):
        """One pass over the training sequences in stored order, as the model gets them
        (static masking: the masked copies; dynamic: masked once, from the config's seed)."""
        dynamic = self.config.data.masking == "dynamic"
        S, rng = self.config.max_seq_len, np.random.default_rng(self.config.seed)
        if self.prepared is None:
            for inst in self.train_instances:
                yield (pretraining.to_example(inst, self.spec, self.wordpiece, S, rng) if dynamic
                       else pretraining.masked_example(inst, self.spec, self.wordpiece, S,
                                                       self.config.seed + 1))
            return
        for name, _, p in self.prepared:
            decode, source = self._decoder(p, masked=not dynamic), self.sources[name]
            for i in range(len(source)):
                item = decode(source[i])
                yield (pretraining.to_example(item, self.spec, self.wordpiece, S, rng)
                       if dynamic else item)

    def num_train_sequences(self) -> int:
        if self.prepared is None:
            return len(self.train_instances)
        return sum(len(source) for source in self.sources.values())

    def describe(self):
        corpus = (self.config.data.corpus if self.prepared is None
                  else prepared.origins(self.prepared))
        return {"corpus": corpus, "documents": self.corpus,
                "vocab_size": self.wordpiece.vocab_size,
                "train_sequences": self.num_train_sequences(),
                "eval_sequences": len(self.eval_examples()),
                "max_predictions_per_seq": self.spec.max_predictions,
                "baselines": {"unigram MLM loss (held-out)": unigram_mlm_loss(self)}}
