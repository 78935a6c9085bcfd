"""Causal language modelling (GPT): next-token prediction on packed documents."""
from __future__ import annotations

import math
import os

import jax.numpy as jnp
import numpy as np

from ssl_jax.data import bpe, corpora, packing
from ssl_jax.data.batching import training_batches, with_example_weight
from ssl_jax.eval.baselines import unigram_log_probs
from ssl_jax.models.gpt import GptLM, document_mask, gpt_config
from ssl_jax.models.losses import tied_cross_entropy
from ssl_jax.tasks.base import LoadedTask, Task


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
        return {"lm_loss": (nll, count), "lm_accuracy": (hits, count)}

    def derived_metrics(self, means):
        return {"lm_perplexity": math.exp(min(means["lm_loss"], 50.0))}


class GptPretrainTask(LoadedTask, GptPretrain):
    """GPT pre-training on config.data's corpus, packed into max_seq_len windows, with its
    BPE (or a trained) tokenizer."""

    def load(self, config, workdir: str):
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
        self.train = packing.pack(self.tokenizer.encode_batch(texts(train_docs)), eot,
                                  config.max_seq_len)
        self.held_out = packing.pack(self.tokenizer.encode_batch(texts(eval_docs)), eot,
                                     config.max_seq_len)
        self.corpus = {"train": corpora.corpus_stats(train_docs),
                       "validation": corpora.corpus_stats(eval_docs)}
        return {"vocab_size": self.tokenizer.vocab_size}

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        return training_batches(range(len(self.train)), map_fn=self.train.example,
                                seed=self.config.seed,
                                batch_size=self.config.batch_size // process_count,
                                process_index=process_index, process_count=process_count)

    def eval_examples(self):
        return [self.held_out.example(i) for i in range(len(self.held_out))]

    def unigram_loss(self) -> float:
        """Held-out next-token cross-entropy of the training unigram distribution: what a
        model ignoring all context gets."""
        size = self.tokenizer.vocab_size
        log_p = unigram_log_probs([self.train.tokens[self.train.valid]], size,
                                  np.zeros(size, bool))
        targets = self.held_out.tokens[:, 1:][self.held_out.valid[:, 1:]]
        return float(-log_p[targets].mean())

    def describe(self):
        return {"corpus": self.config.data.corpus, "documents": self.corpus,
                "tokenizer": self.tokenizer.source, "vocab_size": self.tokenizer.vocab_size,
                "train_windows": len(self.train), "train_tokens": self.train.num_targets,
                "eval_windows": len(self.held_out), "eval_tokens": self.held_out.num_targets,
                "baselines": {"unigram LM loss (held-out)": self.unigram_loss()}}
