"""Fine-tuning and linear probing: a pre-trained (or random) BERT encoder or GPT decoder +
a task head.

The recipe follows finetune.init: a BERT (Devlin et al. 2019) gets BertWithHead; a GPT
(gpt_pretrain run or HF GPT-2) gets GPT-1's (Radford et al. 2018, section 3.3): the inputs
transformed per task ([start] text [extract]; [start] a [delim] b [extract]; similarity
tasks STS-B/QQP/MRPC in both orders, their [extract] states added; multiple choice one
sequence per option, a shared scorer, a softmax over options), start/delim/extract appended
to the BPE and the embedding table (pre-trained rows kept, new rows as initialised), a
linear head on the [extract] state, and the auxiliary LM loss lm_coef x L_lm on the same
batch. L_lm is the next-token cross-entropy, per token, over every real token after [start]
of every input sequence (the text, [delim] and [extract]; both orders, every option), as in
OpenAI's finetune-transformer-lm. Tagging and SQuAD have no GPT recipe (refused).

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
  pooling                 sequence head: "pooler" (BERT's tanh on [CLS]) or "mean" (BERT)
  classifier_dropout      dropout on the head's input
  lm_coef                 GPT: the auxiliary LM loss's weight (0.5 in the paper; 0 = off)
Metrics: loss_ce (or loss_mse), and with a GPT loss_lm (unweighted) and loss_lm_weighted
(lm_coef x loss_lm, the term the objective adds).
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
from ssl_jax.models.gpt import GptConfig
from ssl_jax.models.transformer import check_compute, compute_dtypes
from ssl_jax.models.heads import BertWithHead, GptWithHead
from ssl_jax.models.losses import classification_stats, tied_cross_entropy
from ssl_jax.tasks.base import LoadedTask, Task

_INPUTS = ("input_ids", "segment_ids", "input_mask")
_GPT_INPUTS = ("input_ids", "input_mask")
_EMBEDDINGS = ("embeddings", "token", "position")  # BERT's subtree; GPT's two tables


def encoder_multipliers(params, num_layers: int, *, freeze_embeddings: bool = False,
                        freeze_layers: int = 0, linear_probe: bool = False,
                        layer_decay: float = 1.0):
    """Learning-rate multipliers for a BertWithHead ("encoder") or GptWithHead ("decoder")
    parameter tree (see the module doc): embedding tables at depth 0, layer i at i + 1, the
    pooler / final LayerNorm and the head at the top. Scanned stacks get one multiplier per
    layer ([layers, 1, ...])."""
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
        if keys[0] not in ("encoder", "decoder"):
            return np.float32(1.0)  # the head
        if linear_probe:
            return np.float32(0.0)
        part = keys[1]
        if part in _EMBEDDINGS:
            return np.float32(at_depth(0))
        if part == "stack" and keys[2] == "layers":  # scanned: [layers, ...]
            m = np.asarray([at_depth(i + 1) for i in range(num_layers)], np.float32)
            return m.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
        if part == "stack":
            return np.float32(at_depth(int(keys[2].rsplit("_", 1)[1]) + 1))
        return np.float32(at_depth(top))  # the pooler / ln_final

    return jax.tree_util.tree_map_with_path(multiplier, params)


def check_encoder(config, model_config: BertConfig | GptConfig) -> None:
    """The run's fields that must fit the encoder (or decoder): max_seq_len in its position
    table, finetune.freeze_layers and layer_decay in range."""
    positions = (model_config.max_len if isinstance(model_config, GptConfig)
                 else model_config.max_position_embeddings)
    if config.max_seq_len > positions:
        raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the model's position "
                         f"table ({positions})")
    ft = config.finetune
    encoder_multipliers({}, model_config.num_layers, freeze_layers=ft.freeze_layers,
                        layer_decay=ft.layer_decay)


def _frozen(multipliers):
    """A tree of bools: True where a parameter's multiplier is 0 everywhere."""
    return jax.tree_util.tree_map(lambda m: bool(np.all(np.asarray(m) == 0)), multipliers)


class Finetune(Task):
    """A BERT encoder or a GPT decoder + a task head, from the config and the facts of its
    dataset and vocabulary: the head ("sequence" | "token" | "span" | "choice"), its outputs
    (options for "choice"), whether it regresses, the metric checkpoints select by, and the
    architecture: `encoder` (a pre-trained BertConfig; None: config.model's size with
    `vocab_size` tokens) or `decoder` (a GptConfig whose vocabulary holds the special tokens:
    the GPT recipe; `similarity`: its pairs go in both orders)."""

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
        if ft.lm_coef < 0:
            raise ValueError(f"finetune.lm_coef={ft.lm_coef}: expected >= 0")

    def __init__(self, config, *, vocab_size: int, head: str, num_outputs: int,
                 regression: bool = False, metric: str = "accuracy",
                 encoder: BertConfig | None = None, decoder: GptConfig | None = None,
                 similarity: bool = False):
        super().__init__(config)
        self.head, self.num_outputs, self.regression = head, num_outputs, regression
        self.recipe = "gpt" if decoder is not None else "bert"
        if decoder is not None:
            if head not in ("sequence", "choice"):
                raise ValueError(f"the GPT recipe has no {head!r} head (GPT-1 fine-tunes "
                                 f"classification, pairs, similarity and multiple choice)")
            self.model_config = self._with_dropout(decoder)
            self.gpt_head = "similarity" if similarity else head
        else:
            self.model_config = (bert_config(config.model, vocab_size) if encoder is None
                                 else self._with_dropout(encoder))
        check_encoder(config, self.model_config)
        self.loss_terms = ("loss_mse",) if regression else ("loss_ce",)
        self.lm_coef = float(config.finetune.lm_coef) if decoder is not None else 0.0
        if self.lm_coef > 0:
            self.loss_terms += ("loss_lm_weighted",)
        self.best_metric = f"eval_{metric}"

    def _with_dropout(self, model_config):
        """The pre-trained architecture with this run's dropout, dtypes and attention."""
        m = self.config.model
        dtype, param_dtype = compute_dtypes(m)
        return dataclasses.replace(model_config, dropout_rate=m.dropout_rate,
                                   attention_dropout_rate=m.attention_dropout_rate,
                                   dtype=dtype, param_dtype=param_dtype,
                                   attention_impl=m.get("attention_impl", "xla"))

    def build_model(self, *, train: bool):
        ft = self.config.finetune
        if self.recipe == "gpt":
            return GptWithHead(self.model_config, self.gpt_head, self.num_outputs,
                               classifier_dropout=ft.classifier_dropout,
                               deterministic=not train)
        return BertWithHead(self.model_config, self.head, self.num_outputs,
                            pooling=ft.pooling, classifier_dropout=ft.classifier_dropout,
                            deterministic=not train)

    def rows(self) -> tuple[int, ...]:
        """The sequences of one example: () one, (2,) both orders, (k,) k options."""
        if self.head == "choice":
            return (self.num_outputs,)
        return (2,) if self.recipe == "gpt" and self.gpt_head == "similarity" else ()

    def dummy_batch(self, batch_size: int):
        shape = (batch_size,) + self.rows() + (self.config.max_seq_len,)
        names = _GPT_INPUTS if self.recipe == "gpt" else _INPUTS
        batch = with_example_weight({k: (np.ones if k == "input_mask" else np.zeros)(
            shape, np.int32) for k in names})
        S = self.config.max_seq_len
        if self.head == "span":
            batch["start_position"] = batch["end_position"] = np.zeros((batch_size,), np.int32)
        elif self.head == "token":
            batch["labels"] = np.zeros((batch_size, S), np.int32)
        else:
            batch["label"] = np.zeros((batch_size,), np.float32 if self.regression else np.int32)
        return batch

    def model_inputs(self, batch: dict) -> dict:
        return {k: batch[k] for k in (_GPT_INPUTS if self.recipe == "gpt" else _INPUTS)}

    def update_multipliers(self, params):
        ft = self.config.finetune
        if not (ft.freeze_embeddings or ft.freeze_layers or ft.linear_probe
                or ft.layer_decay != 1.0):
            return None
        return encoder_multipliers(params, self.model_config.num_layers,
                                   freeze_embeddings=ft.freeze_embeddings,
                                   freeze_layers=ft.freeze_layers, linear_probe=ft.linear_probe,
                                   layer_decay=ft.layer_decay)

    def _without_frozen_gradients(self, params):
        """params with the frozen ones behind stop_gradient: no backward pass through them
        (nor, with a GPT, through the tied output layer of the LM loss)."""
        multipliers = self.update_multipliers(params)
        if multipliers is None:
            return params
        return jax.tree_util.tree_map(
            lambda p, frozen: jax.lax.stop_gradient(p) if frozen else p,
            params, _frozen(multipliers))

    def _apply(self, params, batch, rng, train: bool):
        """The head's logits, and (GPT) the decoder's final hidden states (else None)."""
        out = self.build_model(train=train).apply(
            {"params": params}, **self.model_inputs(batch), rngs={"dropout": rng} if train else {})
        return out if self.recipe == "gpt" else (out, None)

    def lm_stats(self, params, hidden, batch):
        """GPT's auxiliary LM loss as (sum of next-token NLL, count) over every real token
        after the first of every sequence of the batch (see the module doc)."""
        seq = hidden.shape[-2]
        ids = batch["input_ids"].reshape(-1, seq)
        mask = batch["input_mask"].reshape(-1, seq)
        rows = ids.shape[0] // batch["example_weight"].shape[0]
        weight = jnp.repeat(batch["example_weight"], rows)  # [rows]
        targets = mask[:, 1:].astype(jnp.float32) * weight[:, None]  # [rows, seq - 1]
        h = hidden.reshape(-1, seq, hidden.shape[-1])[:, :-1]
        nll, _ = tied_cross_entropy(
            h.reshape(-1, h.shape[-1]).astype(jnp.float32),
            params["decoder"]["token"]["embedding"].astype(jnp.float32),
            ids[:, 1:].reshape(-1), targets.reshape(-1))
        return nll, jnp.sum(targets)

    def stats(self, params, batch, rng, *, train: bool):
        if train:
            params = self._without_frozen_gradients(params)
        logits, hidden = self._apply(params, batch, rng, train)
        stats = self._task_stats(logits, batch)
        if self.lm_coef > 0:
            nll, count = self.lm_stats(params, hidden, batch)
            stats["loss_lm"] = (nll, count)
            stats["loss_lm_weighted"] = (self.lm_coef * nll, count)
        return stats

    def _task_stats(self, logits, batch):
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
        labels = batch["label"]  # [batch]; logits [batch, outputs] (choice: [batch, options])
        if self.regression:
            err = (logits[:, 0] - labels) ** 2
            return {"loss_mse": (jnp.sum(err * weight), jnp.sum(weight))}
        return classification_stats(logits, labels, weight, loss="loss_ce", accuracy="accuracy")

    def predict(self, params, batch):
        logits, _ = self._apply(params, batch, None, False)
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
        encoder = decoder = None
        if ft.init:
            from ssl_jax.interop.pretrained import load_pretrained
            self.pretrained = load_pretrained(ft.init, scan_layers=config.model.scan_layers)
            if self.pretrained.kind == "gpt":
                decoder = self._gpt_recipe(workdir)
            elif self.pretrained.kind == "bert":
                self.wordpiece = self.pretrained.tokenizer
                tokenizer.save(self.wordpiece, os.path.join(workdir, "tokenizer"))
                self.encoding = finetune_data.BertRecipe(self.wordpiece)
                encoder = self.pretrained.config
            else:
                raise ValueError(f"finetune.init={ft.init!r} is a {self.pretrained.kind} "
                                 f"model; fine-tuning needs a BERT or a GPT")
        else:
            # cached by the training text's contents (like pre-training's vocabulary), so
            # sweep points and re-runs share one
            digest = hashlib.sha256("\n".join(self.source.texts()).encode()).hexdigest()
            self.wordpiece = tokenizer.load_or_train(
                config.data, os.path.join(workdir, "tokenizer"), self.source.texts,
                f"finetune/{ft.dataset}/{digest[:16]}",
                config.data.get("data_dir") or corpora.default_data_dir())
            self.encoding = finetune_data.BertRecipe(self.wordpiece)
        check_encoder(config, decoder or encoder or bert_config(config.model, 1))
        self.train_features, self.eval_features = self.source.features(
            self.encoding, config.max_seq_len)
        if not self.train_features:
            raise ValueError(f"finetune.dataset={ft.dataset!r} yields no training example")
        if config.num_train_epochs > 0:  # the BERT recipe counts epochs
            per_epoch = finetune_data.steps_for_epochs(len(self.train_features), 1.0,
                                                       config.batch_size)
            config.num_train_steps = finetune_data.steps_for_epochs(
                len(self.train_features), config.num_train_epochs, config.batch_size)
            config.eval_every_steps = config.checkpoint_every_steps = per_epoch
        s = self.source
        facts = dict(vocab_size=self.encoding.tokenizer.vocab_size, head=s.head,
                     num_outputs=s.num_outputs, regression=s.regression, metric=s.metric)
        if decoder is not None:
            return dict(facts, decoder=decoder, similarity=s.similarity)
        return dict(facts, encoder=encoder)

    def _gpt_recipe(self, workdir: str) -> GptConfig:
        """A GPT init: refuses BERT-only heads, appends the special tokens (saved with the
        BPE in workdir/tokenizer); returns the decoder's config with the larger table."""
        ft, config = self.config.finetune, self.pretrained.config
        if self.source.head in ("token", "span"):
            raise ValueError(f"finetune.dataset={ft.dataset!r} needs a BERT encoder (a "
                             f"{self.source.head} head); finetune.init={ft.init!r} is a GPT, "
                             f"and GPT-1's recipe covers classification, pairs, similarity "
                             f"and multiple choice only")
        if ft.pooling != "pooler":
            raise ValueError(f"finetune.pooling={ft.pooling!r} is BERT's; finetune.init="
                             f"{ft.init!r} is a GPT, whose head reads the [extract] state")
        self.encoding = finetune_data.gpt_recipe(self.pretrained.tokenizer, config.vocab_size)
        self.encoding.bpe.save(os.path.join(workdir, "tokenizer"))
        return dataclasses.replace(config, vocab_size=self.encoding.bpe.vocab_size)

    def transfer(self, params):
        if self.pretrained is None or self.config.finetune.random_init:
            return params
        name = "decoder" if self.recipe == "gpt" else "encoder"
        old = (self.pretrained.params if name == "decoder"
               else self.pretrained.params["encoder"])
        if jax.tree_util.tree_structure(old) != jax.tree_util.tree_structure(params[name]):
            raise ValueError(f"finetune.init={self.config.finetune.init!r}: its {name}'s "
                             f"parameters do not match this model's")

        def place(new, pre):  # GPT's token table: the pre-trained rows, then the new ones
            pre = jnp.asarray(pre, new.dtype)
            return jnp.asarray(new).at[:pre.shape[0]].set(pre) if pre.shape != new.shape else pre

        params = dict(params)
        params[name] = jax.tree_util.tree_map(place, params[name], old)
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
                "recipe": self.recipe, **self._recipe_facts(),
                "vocab_size": self.encoding.tokenizer.vocab_size,
                "train_features": len(self.train_features),
                "eval_features": len(self.eval_features),
                "frozen": {"embeddings": bool(ft.freeze_embeddings),
                           "lower_layers": int(ft.freeze_layers),
                           "linear_probe": bool(ft.linear_probe)},
                "layer_decay": ft.layer_decay}

    def _recipe_facts(self) -> dict:
        if self.recipe != "gpt":
            return {}
        return {"special_tokens": self.encoding.special_ids(), "lm_coef": self.lm_coef,
                "similarity_both_orders": self.gpt_head == "similarity"}
