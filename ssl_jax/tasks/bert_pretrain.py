"""BERT pre-training: masked LM (gathered at the masked positions) + next-sentence prediction."""
from __future__ import annotations

import math
import os

import numpy as np

from ssl_jax.data import corpora, pretraining, tokenizer
from ssl_jax.data.batching import with_example_weight
from ssl_jax.eval.baselines import unigram_mlm_loss
from ssl_jax.models.bert import BertForPreTraining, bert_config, check_model_sizes
from ssl_jax.models.losses import classification_stats
from ssl_jax.tasks.base import LoadedTask, Task


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
        return stats

    def derived_metrics(self, means):
        return {"mlm_perplexity": math.exp(min(means["mlm_loss"], 50.0))}


class BertPretrainTask(LoadedTask, BertPretrain):
    """BERT pre-training on config.data's corpus, with its WordPiece vocabulary (trained on
    the corpus unless data.vocab_path is given)."""

    def load(self, config, workdir: str):
        data = config.data
        nsp = bool(data.nsp)
        train_docs = corpora.load_documents(data, "train")
        eval_docs = corpora.load_documents(data, "validation")
        n_sentences = sum(len(d) for d in train_docs)
        if n_sentences == 0:
            raise ValueError(f"corpus {data.corpus!r} is empty: its train split has no text "
                             f"({len(train_docs)} documents)")
        if nsp and len(train_docs) < 2:
            raise ValueError(f"corpus {data.corpus!r} has {len(train_docs)} training document(s);"
                             " next-sentence prediction needs at least 2 (or set data.nsp=False)")
        self.wordpiece = tokenizer.load_or_train(
            data, os.path.join(workdir, "tokenizer"),
            lambda: (s for d in train_docs for s in d), corpora.corpus_id(data),
            data.get("data_dir") or corpora.default_data_dir())

        rng = np.random.default_rng(config.seed)
        train_tokens = self._tokenize(train_docs)
        self.train_instances = []
        for _ in range(data.dupe_factor):
            self.train_instances += pretraining.create_instances(
                train_tokens, self.wordpiece, config.max_seq_len, data.short_seq_prob,
                nsp, rng, data.random_next_prob)
        if not self.train_instances:
            raise ValueError(f"corpus {data.corpus!r} yields no training sequence")
        self.eval_instances = pretraining.create_instances(
            self._tokenize(eval_docs), self.wordpiece, config.max_seq_len,
            data.short_seq_prob, nsp, np.random.default_rng(config.seed + 7),
            data.random_next_prob)
        self._eval_examples = None
        self.corpus = {"train": corpora.corpus_stats(train_docs),
                       "validation": corpora.corpus_stats(eval_docs)}
        return {"vocab_size": self.wordpiece.vocab_size}

    def _tokenize(self, documents):
        flat = self.wordpiece.encode_batch([s for d in documents for s in d])
        out, i = [], 0
        for d in documents:
            sentences = [t for t in flat[i:i + len(d)] if len(t)]
            i += len(d)
            if sentences:
                out.append(sentences)
        return out

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        return pretraining.train_dataset(
            self.train_instances, self.spec, self.wordpiece, self.config.max_seq_len,
            dynamic=self.config.data.masking == "dynamic", seed=self.config.seed,
            batch_size=self.config.batch_size // process_count,
            process_index=process_index, process_count=process_count)

    def eval_examples(self):
        if self._eval_examples is None:  # masked once, with a fixed seed: every eval the same
            self._eval_examples = pretraining.eval_examples(
                self.eval_instances, self.spec, self.wordpiece, self.config.max_seq_len,
                seed=self.config.seed + 11)
        return self._eval_examples

    def describe(self):
        return {"corpus": self.config.data.corpus, "documents": self.corpus,
                "vocab_size": self.wordpiece.vocab_size,
                "train_sequences": len(self.train_instances),
                "eval_sequences": len(self.eval_instances),
                "max_predictions_per_seq": self.spec.max_predictions,
                "baselines": {"unigram MLM loss (held-out)": unigram_mlm_loss(self)}}
