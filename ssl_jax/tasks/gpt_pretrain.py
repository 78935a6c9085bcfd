"""Causal language modelling (GPT): next-token prediction on packed documents."""
from __future__ import annotations

import math
import os

import jax.numpy as jnp
import numpy as np

from ssl_jax.data import bpe, corpora, mixture, packing, prepared
from ssl_jax.data.batching import training_batches, with_example_weight
from ssl_jax.eval.baselines import held_out_cross_entropy, unigram_log_probs
from ssl_jax.models.gpt import GptLM, document_mask, gpt_config
from ssl_jax.models.losses import tied_cross_entropy
from ssl_jax.tasks.base import LoadedTask, Task, mixture_stats


class GptPretrain(Task):
    """Next-token prediction, from the config and the vocabulary size."""

    loss_terms = ("lm_loss",)

    @classmethod
    def check(cls, config) -> None:
        if config.max_seq_len > config.model.max_len:
            raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the model's context "
                             f"(model.max_len={config.model.max_len})")
        if config.max_seq_len < 2:
            raise ValueError(f"max_seq_len={config.max_seq_len} must be >= 2")
        gpt_config(config.model, 1)  # sizes and dtypes

    def __init__(self, config, *, vocab_size: int):
        super().__init__(config)
        self.model_config = gpt_config(config.model, vocab_size)
        self.mixture_names = [n for n, _, _ in prepared.parse_mixture(config.data.get("mixture"))]

    def build_model(self, *, train: bool) -> GptLM:
        return GptLM(self.model_config, deterministic=not train)

    def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        shape = (batch_size, self.config.max_seq_len)
        return with_example_weight({
            "input_ids": np.zeros(shape, np.int32), "target_ids": np.zeros(shape, np.int32),
            "segment_ids": np.zeros(shape, np.int32),
            "target_weights": np.ones(shape, np.float32)})

    def model_inputs(self, batch: dict) -> dict:
        return {"input_ids": batch["input_ids"]}

    def stats(self, params, batch, rng, *, train: bool):
        """Next-token loss/accuracy over the real targets, each as (sum, count). The tied
        output layer and the softmax run chunked over tokens (ssl_jax/models/losses.py)."""
        mask = document_mask(batch["segment_ids"]) if self.config.data.mask_documents else None
        hidden = self.build_model(train=train).apply(
            {"params": params}, batch["input_ids"], mask=mask, return_hidden=True,
            rngs={"dropout": rng} if train else {})  # [batch, seq, hidden]
        weights = batch["target_weights"] * batch["example_weight"][:, None]
        nll, hits = tied_cross_entropy(
            hidden.reshape(-1, hidden.shape[-1]).astype(jnp.float32),
            params["token"]["embedding"].astype(jnp.float32),
            batch["target_ids"].reshape(-1), weights.reshape(-1).astype(jnp.float32))
        count = jnp.sum(weights)
        return {"lm_loss": (nll, count), "lm_accuracy": (hits, count),
                **mixture_stats(batch, self.mixture_names)}

    def derived_metrics(self, means):
        return {"lm_perplexity": math.exp(min(means["lm_loss"], 50.0))}


class GptPretrainTask(LoadedTask, GptPretrain):
    """GPT pre-training on config.data's corpus, packed into max_seq_len windows, with its
    BPE (or a trained) tokenizer; or on prepared windows (data.prepared / data.mixture)."""

    def load(self, config, workdir: str):
        self.prepared = None
        if config.data.get("prepared") or config.data.get("mixture"):
            return self._load_prepared(config, workdir)
        data = config.data
        train_docs = corpora.load_documents(data, "train")
        eval_docs = corpora.load_documents(data, "validation")
        if not any(any(d) for d in train_docs):
            raise ValueError(f"corpus {data.corpus!r} is empty: its train split has no text")
        if not any(any(d) for d in eval_docs):
            raise ValueError(f"corpus {data.corpus!r} has no held-out (validation) text")
        texts = lambda docs: [" ".join(d) for d in docs]
        self.tokenizer = bpe.load_or_train_bpe(
            data, os.path.join(workdir, "tokenizer"), lambda: iter(texts(train_docs)),
            corpora.corpus_id(data), data.get("data_dir") or corpora.default_data_dir())
        eot = self.tokenizer.eot_id
        train_tokens = self.tokenizer.encode_batch(texts(train_docs))
        self.train = packing.pack(train_tokens, eot, config.max_seq_len)
        self.held_out = packing.pack(self.tokenizer.encode_batch(texts(eval_docs)), eot,
                                     config.max_seq_len)
        # the stream's tokens, each once (EOT doc EOT doc ...): the unigram baseline's counts
        size = self.tokenizer.vocab_size
        self.train_counts = sum(np.bincount(t, minlength=size)[:size] for t in train_tokens
                                if len(t))
        self.train_counts[eot] += sum(1 for t in train_tokens if len(t))
        self.corpus = {"train": corpora.corpus_stats(train_docs),
                       "validation": corpora.corpus_stats(eval_docs)}
        return {"vocab_size": self.tokenizer.vocab_size}

    def _load_prepared(self, config, workdir: str):
        self.prepared = prepared.open_all(config)
        first = self.prepared[0][2]
        self.tokenizer = bpe.load_tokenizer(first.tokenizer_dir)
        self.tokenizer.save(os.path.join(workdir, "tokenizer"))
        self.sources, self.train_counts, self.corpus = prepared.train_view(self.prepared)
        self._eval = None
        return {"vocab_size": self.tokenizer.vocab_size}

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        common = dict(seed=self.config.seed, batch_size=self.config.batch_size // process_count,
                      process_index=process_index, process_count=process_count)
        if self.prepared is None:
            return training_batches(range(len(self.train)), map_fn=self.train.example, **common)
        if len(self.prepared) == 1:
            name, _, p = self.prepared[0]
            return training_batches(self.sources[name], map_fn=p.gpt_decoder(), **common)
        return mixture.mixture_batches(
            [(self.sources[name], weight, _ignore_rng(p.gpt_decoder()))
             for name, weight, p in self.prepared], **common)

    def eval_examples(self):
        n = self.config.get("num_eval_batches")
        limit = None if n is None else n * self.config.batch_size  # what an evaluation reads
        if self.prepared is None:
            return [self.held_out.example(i) for i in range(len(self.held_out))][:limit]
        if self._eval is None:  # the first source's held-out windows
            _, _, p = self.prepared[0]
            self._eval = mixture.LazyExamples(p.source("validation"), p.gpt_decoder(), limit)
        return self._eval

    def unigram_loss(self) -> float:
        """Held-out next-token cross-entropy of the training unigram distribution: what a
        model ignoring all context gets."""
        size = self.tokenizer.vocab_size
        log_p = unigram_log_probs(self.train_counts, np.zeros(size, bool))
        return held_out_cross_entropy(log_p, self.eval_examples(), "target_ids",
                                      "target_weights")

    def describe(self):
        if self.prepared is None:
            sizes = {"corpus": self.config.data.corpus, "train_windows": len(self.train),
                     "train_tokens": self.train.num_targets,
                     "eval_windows": len(self.held_out),
                     "eval_tokens": self.held_out.num_targets}
        else:
            sizes = {"corpus": prepared.origins(self.prepared),
                     "train_windows": sum(len(s) for s in self.sources.values()),
                     "train_tokens": sum(p.split("train")["targets"]
                                         for _, _, p in self.prepared),
                     "eval_windows": len(self.eval_examples()),
                     "eval_tokens": self.prepared[0][2].split("validation")["targets"]}
        return {**sizes, "documents": self.corpus, "tokenizer": self.tokenizer.source,
                "vocab_size": self.tokenizer.vocab_size,
                "baselines": {"unigram LM loss (held-out)": self.unigram_loss()}}


def _ignore_rng(decode):
    return lambda record, rng: decode(record)
