"""Fine-tuning and linear probing: a pre-trained (or random) BERT encoder + a task head.

config.finetune:
  dataset                 see ssl_jax/data/finetune.py (glue/..., squad/..., conll2003/...)
  path, data_dir          released files (a directory) or the TFDS data dir
  init                    a pre-training workdir or an HF-format directory: its encoder
                          weights, architecture and vocabulary (layers converted to
                          model.scan_layers' layout; dropout and dtypes from config.model);
                          "" = a random encoder of
                          config.model's size with data.vocab_path or a vocabulary trained on
                          the task's training text
  random_init             True: take init's config and vocabulary but not its weights (the
                          "no pre-training" baseline at the same size)
  freeze_embeddings, freeze_layers (the lower N), linear_probe (the whole encoder frozen)
  layer_decay             learning rate x decay**(L + 1 - depth): the head and pooler at
                          depth L + 1, layer i at i + 1, embeddings at 0 (1.0 = off)
  pooling                 sequence head: "pooler" (BERT's tanh on [CLS]) or "mean"
config.num_train_epochs > 0 sets num_train_steps (and evaluates once per epoch).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data import finetune as finetune_data
from ssl_jax.data import corpora, tokenizer
from ssl_jax.data.batching import training_batches, with_example_weight
from ssl_jax.eval import finetune_scores
from ssl_jax.models.bert import BertConfig, bert_config, check_model_sizes
from ssl_jax.models.transformer import check_compute, compute_dtypes
from ssl_jax.models.heads import BertWithHead
from ssl_jax.models.losses import classification_stats
from ssl_jax.tasks.base import LoadedTask, Task

_INPUTS = ("input_ids", "segment_ids", "input_mask")


def encoder_multipliers(params, num_layers: int, *, freeze_embeddings: bool = False,
                        freeze_layers: int = 0, linear_probe: bool = False,
                        layer_decay: float = 1.0):
    """Learning-rate multipliers for a BertWithHead parameter tree (see the module doc).
    Scanned stacks get one multiplier per layer ([layers, 1, ...])."""
    if not 0 <= freeze_layers <= num_layers:
        raise ValueError(f"finetune.freeze_layers={freeze_layers}: expected 0 to "
                         f"{num_layers} (the encoder's layers)")
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"finetune.layer_decay={layer_decay}: expected a value in (0, 1]")
    top = num_layers + 1

    def at_depth(depth: int) -> float:
        if linear_probe or depth <= freeze_layers and (depth > 0 or freeze_embeddings):
            return 0.0
        return float(layer_decay ** (top - depth))

    def multiplier(path, leaf):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[0] != "encoder":
            return np.float32(1.0)  # the head
        if linear_probe:
            return np.float32(0.0)
        part = keys[1]
        if part == "embeddings":
            return np.float32(at_depth(0))
        if part == "stack" and keys[2] == "layers":  # scanned: [layers, ...]
            m = np.asarray([at_depth(i + 1) for i in range(num_layers)], np.float32)
            return m.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
        if part == "stack":
            return np.float32(at_depth(int(keys[2].rsplit("_", 1)[1]) + 1))
        return np.float32(at_depth(top))  # the pooler

    return jax.tree_util.tree_map_with_path(multiplier, params)


def check_encoder(config, model_config: BertConfig) -> None:
    """The run's fields that must fit the encoder: max_seq_len in its position table,
    finetune.freeze_layers and layer_decay in range."""
    if config.max_seq_len > model_config.max_position_embeddings:
        raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the encoder's position "
                         f"table ({model_config.max_position_embeddings})")
    ft = config.finetune
    encoder_multipliers({}, model_config.num_layers, freeze_layers=ft.freeze_layers,
                        layer_decay=ft.layer_decay)


def _frozen(multipliers):
    """A tree of bools: True where a parameter's multiplier is 0 everywhere."""
    return jax.tree_util.tree_map(lambda m: bool(np.all(np.asarray(m) == 0)), multipliers)


class Finetune(Task):
    """A BERT encoder + a task head, from the config and the facts of its dataset and
    vocabulary: the head ("sequence" | "token" | "span"), its outputs, whether it regresses,
    the metric checkpoints select by, and the encoder's architecture (`encoder`, a
    pre-trained model's BertConfig; None: config.model's size with `vocab_size` tokens)."""

    predict_outputs = True
    best_mode = "max"

    @classmethod
    def check(cls, config) -> None:
        ft = config.finetune
        if ft.random_init and not ft.init:
            raise ValueError("finetune.random_init=True needs finetune.init (the model "
                             "whose size and vocabulary the random encoder takes)")
        if not ft.init:
            check_model_sizes(config.model)
        check_compute(config.model, sizes=not ft.init)  # dtypes and attention_impl
        if ft.pooling not in ("pooler", "mean"):
            raise ValueError(f"finetune.pooling={ft.pooling!r}; expected 'pooler' or 'mean'")

    def __init__(self, config, *, vocab_size: int, head: str, num_outputs: int,
                 regression: bool = False, metric: str = "accuracy",
                 encoder: BertConfig | None = None):
        super().__init__(config)
        self.head, self.num_outputs, self.regression = head, num_outputs, regression
        self.model_config = (bert_config(config.model, vocab_size) if encoder is None
                             else self._with_dropout(encoder))
        check_encoder(config, self.model_config)
        self.loss_terms = ("loss_mse",) if regression else ("loss_ce",)
        self.best_metric = f"eval_{metric}"

    def _with_dropout(self, model_config: BertConfig) -> BertConfig:
        """The pre-trained architecture with this run's dropout, dtypes and attention."""
        m = self.config.model
        dtype, param_dtype = compute_dtypes(m)
        return dataclasses.replace(model_config, dropout_rate=m.dropout_rate,
                                   attention_dropout_rate=m.attention_dropout_rate,
                                   dtype=dtype, param_dtype=param_dtype,
                                   attention_impl=m.get("attention_impl", "xla"))

    def build_model(self, *, train: bool) -> BertWithHead:
        ft = self.config.finetune
        return BertWithHead(self.model_config, self.head, self.num_outputs,
                            pooling=ft.pooling, classifier_dropout=ft.classifier_dropout,
                            deterministic=not train)

    def dummy_batch(self, batch_size: int):
        S = self.config.max_seq_len
        batch = with_example_weight({"input_ids": np.zeros((batch_size, S), np.int32),
                                     "segment_ids": np.zeros((batch_size, S), np.int32),
                                     "input_mask": np.ones((batch_size, S), np.int32)})
        if self.head == "span":
            batch["start_position"] = batch["end_position"] = np.zeros((batch_size,), np.int32)
        elif self.head == "token":
            batch["labels"] = np.zeros((batch_size, S), np.int32)
        else:
            batch["label"] = np.zeros((batch_size,), np.float32 if self.regression else np.int32)
        return batch

    def model_inputs(self, batch: dict) -> dict:
        return {k: batch[k] for k in _INPUTS}

    def update_multipliers(self, params):
        ft = self.config.finetune
        if not (ft.freeze_embeddings or ft.freeze_layers or ft.linear_probe
                or ft.layer_decay != 1.0):
            return None
        return encoder_multipliers(params, self.model_config.num_layers,
                                   freeze_embeddings=ft.freeze_embeddings,
                                   freeze_layers=ft.freeze_layers, linear_probe=ft.linear_probe,
                                   layer_decay=ft.layer_decay)

    def _apply(self, params, batch, rng, train: bool):
        multipliers = self.update_multipliers(params) if train else None
        if multipliers is not None:  # no backward pass through wholly frozen parameters
            params = jax.tree_util.tree_map(
                lambda p, frozen: jax.lax.stop_gradient(p) if frozen else p,
                params, _frozen(multipliers))
        return self.build_model(train=train).apply(
            {"params": params}, **self.model_inputs(batch), rngs={"dropout": rng} if train else {})

    def stats(self, params, batch, rng, *, train: bool):
        logits = self._apply(params, batch, rng, train)
        weight = batch["example_weight"]
        if self.head == "span":  # [batch, seq, 2]: start and end, each a softmax over the seq
            masked = jnp.where(batch["input_mask"][..., None] > 0, logits, -1e9)
            log_probs = jax.nn.log_softmax(masked, axis=1)
            positions = jnp.stack([batch["start_position"], batch["end_position"]], -1)
            nll = -jnp.take_along_axis(log_probs, positions[:, None, :], axis=1)[:, 0].mean(-1)
            hits = jnp.all(jnp.argmax(masked, axis=1) == positions, -1).astype(jnp.float32)
            return {"loss_ce": (jnp.sum(nll * weight), jnp.sum(weight)),
                    "span_accuracy": (jnp.sum(hits * weight), jnp.sum(weight))}
        if self.head == "token":  # [batch, seq, tags]; labels -1 = not a word's first piece
            labels = batch["labels"]
            return classification_stats(logits, jnp.maximum(labels, 0),
                                        (labels >= 0) * weight[:, None], loss="loss_ce",
                                        accuracy="accuracy")
        labels = batch["label"]  # [batch, outputs]
        if self.regression:
            err = (logits[:, 0] - labels) ** 2
            return {"loss_mse": (jnp.sum(err * weight), jnp.sum(weight))}
        return classification_stats(logits, labels, weight, loss="loss_ce", accuracy="accuracy")

    def predict(self, params, batch):
        logits = self._apply(params, batch, None, False)
        if self.head == "span":
            return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
        if self.regression:
            return {"prediction": logits[:, 0]}
        return {"prediction": jnp.argmax(logits, -1)}


class FinetuneTask(LoadedTask, Finetune):
    """Fine-tuning on config.finetune.dataset, from finetune.init's encoder and vocabulary
    (or a vocabulary trained on the task's training text)."""

    def load(self, config, workdir: str):
        ft = config.finetune
        self.source = finetune_data.load_source(ft, config.get("data"))
        self.pretrained = None
        encoder = None
        if ft.init:
            from ssl_jax.interop.pretrained import load_pretrained
            self.pretrained = load_pretrained(ft.init, scan_layers=config.model.scan_layers)
            if self.pretrained.kind != "bert":
                raise ValueError(f"finetune.init={ft.init!r} is a {self.pretrained.kind} "
                                 f"model; fine-tuning heads need a BERT encoder")
            self.wordpiece = self.pretrained.tokenizer
            tokenizer.save(self.wordpiece, os.path.join(workdir, "tokenizer"))
            encoder = self.pretrained.config
        else:
            # cached by the training text's contents (like pre-training's vocabulary), so
            # sweep points and re-runs share one
            digest = hashlib.sha256("\n".join(self.source.texts()).encode()).hexdigest()
            self.wordpiece = tokenizer.load_or_train(
                config.data, os.path.join(workdir, "tokenizer"), self.source.texts,
                f"finetune/{ft.dataset}/{digest[:16]}",
                config.data.get("data_dir") or corpora.default_data_dir())
        check_encoder(config, encoder or bert_config(config.model, 1))  # before the features
        self.train_features, self.eval_features = self.source.features(
            self.wordpiece, config.max_seq_len)
        if not self.train_features:
            raise ValueError(f"finetune.dataset={ft.dataset!r} yields no training example")
        if config.num_train_epochs > 0:  # the BERT recipe counts epochs
            per_epoch = finetune_data.steps_for_epochs(len(self.train_features), 1.0,
                                                       config.batch_size)
            config.num_train_steps = finetune_data.steps_for_epochs(
                len(self.train_features), config.num_train_epochs, config.batch_size)
            config.eval_every_steps = config.checkpoint_every_steps = per_epoch
        s = self.source
        return dict(vocab_size=self.wordpiece.vocab_size, head=s.head,
                    num_outputs=s.num_outputs, regression=s.regression, metric=s.metric,
                    encoder=encoder)

    def transfer(self, params):
        if self.pretrained is None or self.config.finetune.random_init:
            return params
        encoder = self.pretrained.params["encoder"]
        fresh = jax.tree_util.tree_structure(params["encoder"])
        if jax.tree_util.tree_structure(encoder) != fresh:
            raise ValueError(f"finetune.init={self.config.finetune.init!r}: its encoder's "
                             f"parameters do not match this model's")
        params = dict(params)
        params["encoder"] = jax.tree_util.tree_map(
            lambda new, old: jnp.asarray(old, new.dtype), params["encoder"], encoder)
        return params

    def train_dataset(self, process_index: int = 0, process_count: int = 1):
        return training_batches(self.train_features, seed=self.config.seed,
                                batch_size=self.config.batch_size // process_count,
                                process_index=process_index, process_count=process_count)

    def eval_examples(self):
        return self.eval_features

    def score(self, outputs):
        return finetune_scores.score(self.source, outputs)

    def describe(self):
        ft = self.config.finetune
        return {"dataset": ft.dataset, **self.source.describe(),
                "init": ft.init or "random", "random_init": bool(ft.random_init),
                "vocab_size": self.wordpiece.vocab_size,
                "train_features": len(self.train_features),
                "eval_features": len(self.eval_features),
                "frozen": {"embeddings": bool(ft.freeze_embeddings),
                           "lower_layers": int(ft.freeze_layers),
                           "linear_probe": bool(ft.linear_probe)},
                "layer_decay": ft.layer_decay}
