"""BERT in Hugging Face's format (transformers' BertModel / BertForPreTraining directories):
config.json + model.safetensors + vocab.txt (+ tokenizer_config.json).

    config, params, wordpiece = load("all-MiniLM-L6-v2/")  # {"encoder"[, "mlm"][, "nsp"]}
    save("out/", config, params, wordpiece)                  # from_pretrained() reads it

PyTorch Linear weights are [out, in] (ours [in, out]); our q/k/v kernels are [hidden, heads,
head_dim] and the attention output kernel [heads, head_dim, hidden]; the MLM decoder is
tied to the word embeddings. Each rule below serves both directions (hf_format.Rule).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import warnings

import jax
import jax.numpy as jnp
from tokenizers import normalizers, pre_tokenizers

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.data import tokenizer as wordpiece_lib
from ssl_jax.files import read_json
from ssl_jax.interop.hf_format import (
    LAYOUT_KEY, WEIGHTS, Rule, check_params, check_tensors, check_tied, config_field, copy,
    expected_shapes, export_tensors, flat, import_tensors, json_text, layout_fields, linear,
    publish, read_layout, read_tensors, safetensors_bytes, stack_layers, strip_prefix,
    to_numpy, with_layout)
from ssl_jax.models.bert import BertConfig, BertEncoder, BertForPreTraining

ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                       "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
HEADS = ("mlm", "nsp")
# (MLM head, NSP head) -> the transformers class whose checkpoint has exactly these parts
ARCHITECTURES = {(True, True): "BertForPreTraining", (True, False): "BertForMaskedLM",
                 (False, True): "BertForNextSentencePrediction", (False, False): "BertModel"}
# tensors HF may store for tied weights -> the tensor they must equal
TIES = {"cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias"}
BUFFERS = ("embeddings.position_ids",)  # non-parameters older checkpoints carry
# fine-tuning heads (BertWithHead's "classifier") -> the transformers class and its tensors;
# token and span classes build their BertModel without a pooler
HEAD_CLASSES = {"sequence": "BertForSequenceClassification",
                "token": "BertForTokenClassification", "span": "BertForQuestionAnswering"}
HEAD_TENSORS = {"sequence": "classifier", "token": "classifier", "span": "qa_outputs"}


# --- the mapping -----------------------------------------------------------------------------

def _layer_norm(hf: str, ours: tuple) -> list[Rule]:
    return [copy(f"{hf}.weight", ours + ("scale",)), copy(f"{hf}.bias", ours + ("bias",))]


def _dense(hf: str, ours: tuple, in_axes: int = 1) -> list[Rule]:
    return [linear(f"{hf}.weight", ours + ("kernel",), in_axes),
            copy(f"{hf}.bias", ours + ("bias",))]


def _layer_rules(i: int) -> list[Rule]:
    hf, ours = f"encoder.layer.{i}", ("encoder", "stack", f"layer_{i}")
    attention = ours + ("attention",)
    rules = []
    for name in ("query", "key", "value"):
        rules += [linear(f"{hf}.attention.self.{name}.weight", attention + (name, "kernel")),
                  flat(f"{hf}.attention.self.{name}.bias", attention + (name, "bias"))]
    return rules + [
        *_dense(f"{hf}.attention.output.dense", attention + ("out",), in_axes=2),
        *_layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("ln_attention",)),
        *_dense(f"{hf}.intermediate.dense", ours + ("mlp", "fc_in")),
        *_dense(f"{hf}.output.dense", ours + ("mlp", "fc_out")),
        *_layer_norm(f"{hf}.output.LayerNorm", ours + ("ln_mlp",))]


def rules(num_layers: int, *, pooler: bool = True, mlm: bool = False,
          nsp: bool = False) -> list[Rule]:
    """HF names (without the "bert." prefix) <-> our per-layer BertForPreTraining tree."""
    e = ("encoder", "embeddings")
    table = [copy("embeddings.word_embeddings.weight", e + ("word", "embedding")),
             copy("embeddings.position_embeddings.weight", e + ("position", "embedding")),
             copy("embeddings.token_type_embeddings.weight", e + ("segment", "embedding")),
             *_layer_norm("embeddings.LayerNorm", e + ("ln",))]
    for i in range(num_layers):
        table += _layer_rules(i)
    if pooler:
        table += _dense("pooler.dense", ("encoder", "pooler"))
    if mlm:
        table += [*_dense("cls.predictions.transform.dense", ("mlm", "transform")),
                  *_layer_norm("cls.predictions.transform.LayerNorm", ("mlm", "ln")),
                  copy("cls.predictions.bias", ("mlm", "bias"))]
    if nsp:
        table += _dense("cls.seq_relationship", ("nsp",))
    return table


def head_rules(head: str) -> list[Rule]:
    """A fine-tuning head's linear layer (HF `classifier.*` or `qa_outputs.*`)."""
    return _dense(HEAD_TENSORS[head], ("classifier",))


def head_of(hf: dict) -> dict | None:
    """The fine-tuning head an HF config's `architectures` names: {"head", "labels" (names
    by id, None for regression and spans), "regression"}; None for other classes."""
    heads = {name: head for head, name in HEAD_CLASSES.items()}
    found = [heads[a] for a in hf.get("architectures") or [] if a in heads]
    if not found:
        return None
    regression = hf.get("problem_type") == "regression"
    id2label = hf.get("id2label") or {}
    labels = (None if found[0] == "span" or regression
              else [id2label[str(i)] for i in range(len(id2label))])
    return {"head": found[0], "labels": labels, "regression": regression}


def _head_config(head: dict) -> dict:
    """config.json entries of a fine-tuning head (transformers' names)."""
    out = {"architectures": [HEAD_CLASSES[head["head"]]]}
    labels = head["labels"] or (["LABEL_0"] if head["regression"] else ["LABEL_0", "LABEL_1"])
    out["id2label"] = {str(i): name for i, name in enumerate(labels)}
    out["label2id"] = {name: i for i, name in enumerate(labels)}
    if head["head"] == "sequence":
        out["problem_type"] = ("regression" if head["regression"]
                               else "single_label_classification")
    return out


def abstract_params(config: BertConfig, *, pooler: bool = True, mlm: bool = False,
                    nsp: bool = False) -> dict:
    """Shapes/dtypes of the per-layer tree with these parts (no arrays are made)."""
    config = dataclasses.replace(config, scan_layers=False)
    ids = jnp.zeros((1, 1), jnp.int32)
    tree = jax.eval_shape(lambda: init_unboxed(BertForPreTraining(config), 
        jax.random.PRNGKey(0), ids, ids, ids))["params"]
    tree = {"encoder": dict(tree["encoder"]), **{h: tree[h] for h, on in
                                                 (("mlm", mlm), ("nsp", nsp)) if on}}
    if not pooler:
        del tree["encoder"]["pooler"]
    return tree


@functools.lru_cache(maxsize=4)
def _fresh_pooler_fn(config: BertConfig):
    """The encoder's own pooler initialiser (XLA drops the rest of the init)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.jit(lambda rng: init_unboxed(BertEncoder(config), rng, ids, ids, ids)["params"]["pooler"])


# --- configs ---------------------------------------------------------------------------------

def config_from_hf(source: str, hf: dict, scan_layers: bool | None = None) -> BertConfig:
    """An HF BertConfig (config.json) -> BertConfig; what we cannot represent is an error."""
    if hf.get("model_type") != "bert":
        raise ValueError(f"{source}: model_type={hf.get('model_type')!r}; expected 'bert'")
    position = hf.get("position_embedding_type") or "absolute"
    if position != "absolute":
        raise ValueError(f"{source}: position_embedding_type={position!r} is not supported "
                         "(only 'absolute' learned positions)")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag):
            raise ValueError(f"{source}: {flag}=true is not supported (encoders only)")
    activation = hf.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS_FROM_HF:
        raise ValueError(f"{source}: hidden_act={activation!r} is not supported; expected one "
                         f"of {sorted(ACTIVATIONS_FROM_HF)}")
    layout = read_layout(source, hf, allowed=())
    if scan_layers is not None:
        layout["scan_layers"] = scan_layers
    field = functools.partial(config_field, source, hf)
    try:
        return BertConfig(
            vocab_size=field("vocab_size"), hidden_size=field("hidden_size"),
            num_layers=field("num_hidden_layers"), num_heads=field("num_attention_heads"),
            mlp_dim=field("intermediate_size"), activation=ACTIVATIONS_FROM_HF[activation],
            dropout_rate=field("hidden_dropout_prob", default=0.1),
            attention_dropout_rate=field("attention_probs_dropout_prob", default=0.1),
            layer_norm_eps=field("layer_norm_eps", default=1e-12),
            initializer_range=field("initializer_range", default=0.02),
            max_position_embeddings=field("max_position_embeddings", default=512),
            type_vocab_size=field("type_vocab_size", default=2), **layout)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def config_to_hf(config: BertConfig, wordpiece: wordpiece_lib.WordPiece, mlm: bool,
                 nsp: bool) -> dict:
    if config.activation not in ACTIVATIONS_TO_HF:
        raise ValueError(f"activation {config.activation!r} has no HF BERT name")
    return {
        "architectures": [ARCHITECTURES[mlm, nsp]], "model_type": "bert",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "intermediate_size": config.mlp_dim, "hidden_act": ACTIVATIONS_TO_HF[config.activation],
        "hidden_dropout_prob": config.dropout_rate,
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "layer_norm_eps": config.layer_norm_eps, "initializer_range": config.initializer_range,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size, "position_embedding_type": "absolute",
        "pad_token_id": wordpiece.pad_id, "tie_word_embeddings": True, "dtype": "float32",
        LAYOUT_KEY: layout_fields(config)}


# --- tokenizer -------------------------------------------------------------------------------

def _lowercase(wordpiece: wordpiece_lib.WordPiece) -> bool:
    """Whether the tokenizer lower-cases; only BERT's own pipeline has an HF description."""
    norm, pre = wordpiece.tokenizer.normalizer, wordpiece.tokenizer.pre_tokenizer
    if not (isinstance(norm, normalizers.BertNormalizer)
            and isinstance(pre, pre_tokenizers.BertPreTokenizer)
            and norm.strip_accents is None and norm.handle_chinese_chars and norm.clean_text):
        raise ValueError(f"the tokenizer ({type(norm).__name__}, {type(pre).__name__}) is not "
                         "BERT's pipeline; HF's BertTokenizer could not reproduce it")
    return bool(norm.lowercase)


def _vocab_text(wordpiece: wordpiece_lib.WordPiece) -> str:
    by_id = sorted(wordpiece.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("the vocabulary's ids are not 0..n-1; vocab.txt cannot hold it")
    return "".join(token + "\n" for token, _ in by_id)


def _tokenizer_config(wordpiece: wordpiece_lib.WordPiece, config: BertConfig) -> dict:
    tokens = wordpiece.tokenizer.id_to_token
    return {"tokenizer_class": "BertTokenizer", "do_lower_case": _lowercase(wordpiece),
            "strip_accents": None, "tokenize_chinese_chars": True,
            "model_max_length": config.max_position_embeddings,
            "unk_token": tokens(wordpiece.unk_id), "sep_token": tokens(wordpiece.sep_id),
            "pad_token": tokens(wordpiece.pad_id), "cls_token": tokens(wordpiece.cls_id),
            "mask_token": tokens(wordpiece.mask_id)}


# --- load / save -----------------------------------------------------------------------------

def _renamed(name: str) -> str:
    """Checkpoints converted from TensorFlow name LayerNorm parameters gamma/beta."""
    if ".LayerNorm." in name:
        return name.replace(".LayerNorm.gamma", ".LayerNorm.weight").replace(
            ".LayerNorm.beta", ".LayerNorm.bias")
    return name


def load(directory: str, *, scan_layers: bool | None = None
         ) -> tuple[BertConfig, dict, wordpiece_lib.WordPiece]:
    """(config, params, wordpiece) of an HF BERT directory. params: {"encoder"} plus "mlm"
    and/or "nsp" when the checkpoint has those heads (numpy arrays). A checkpoint without a
    pooler gets a freshly initialised one (with a warning). scan_layers: the layout wanted
    (None: as recorded by `save`, else per-layer)."""
    source = f"HF BERT checkpoint {directory!r}"
    config = config_from_hf(source, read_json(os.path.join(directory, "config.json"),
                                              "model config"), scan_layers)
    tensors = strip_prefix(source, {_renamed(k): v for k, v in read_tensors(directory).items()},
                           "bert.")
    parts = dict(pooler=any(n.startswith("pooler.") for n in tensors),
                 mlm=any(n.startswith("cls.predictions.") for n in tensors),
                 nsp=any(n.startswith("cls.seq_relationship.") for n in tensors))
    table = rules(config.num_layers, **parts)
    abstract = abstract_params(config, **parts)
    head = head_of(read_json(os.path.join(directory, "config.json"), "model config"))
    if head is not None:  # a fine-tuned model: its head's linear layer as "classifier"
        name = HEAD_TENSORS[head["head"]]
        if f"{name}.weight" not in tensors:
            raise ValueError(f"{source}: a {HEAD_CLASSES[head['head']]} checkpoint without "
                             f"{name}.weight")
        table += head_rules(head["head"])
        outputs, hidden = tensors[f"{name}.weight"].shape
        abstract["classifier"] = {
            "kernel": jax.ShapeDtypeStruct((hidden, outputs), config.param_dtype),
            "bias": jax.ShapeDtypeStruct((outputs,), config.param_dtype)}
    check_tensors(source, tensors, expected_shapes(table, abstract),
                  ignored=lambda name: name in TIES or name in BUFFERS)
    check_tied(source, tensors, TIES)
    params = import_tensors(table, tensors, abstract)
    if not parts["pooler"]:
        if head is None or head["head"] == "sequence":  # token/span classes have none
            warnings.warn(f"{source} has no pooler; the pooler is freshly initialised")
        flat_config = dataclasses.replace(config, scan_layers=False)
        params["encoder"]["pooler"] = to_numpy(_fresh_pooler_fn(flat_config)(
            jax.random.PRNGKey(0)))
    if config.scan_layers:
        params["encoder"]["stack"] = stack_layers(params["encoder"]["stack"], config.num_layers)
    wordpiece = wordpiece_lib.load_hf_vocab(directory)
    if wordpiece.vocab_size > config.vocab_size:
        raise ValueError(f"{source}: vocab.txt has {wordpiece.vocab_size} tokens but the "
                         f"embedding table only {config.vocab_size} rows")
    return config, params, wordpiece


def save(directory: str, config: BertConfig, params: dict,
         wordpiece: wordpiece_lib.WordPiece, head: dict | None = None) -> None:
    """Writes a new HF BERT directory (published whole): config.json (BertForPreTraining,
    BertForMaskedLM or BertModel, by the heads in `params`), model.safetensors (float32),
    vocab.txt, tokenizer_config.json. `params`: {"encoder"[, "mlm"][, "nsp"]}.

    A fine-tuned model: `params` {"encoder", "classifier"} (BertWithHead's tree) and `head`
    {"head", "labels", "regression", "pooling"} -> BertForSequenceClassification,
    BertForTokenClassification or BertForQuestionAnswering with id2label in the label names.
    Mean pooling has no transformers form: an error."""
    if head is not None:
        return _save_finetuned(directory, config, params, wordpiece, head)
    unknown = sorted(set(params) - {"encoder", *HEADS})
    if "encoder" not in params or unknown:
        raise ValueError(f"BERT params must be {{'encoder'[, 'mlm'][, 'nsp']}}; got "
                         f"{sorted(params)}")
    if wordpiece.vocab_size > config.vocab_size:
        raise ValueError(f"the tokenizer has {wordpiece.vocab_size} tokens but the model's "
                         f"embedding table only {config.vocab_size} rows")
    heads = {h: h in params for h in HEADS}
    params = to_numpy(params)
    params["encoder"]["stack"] = with_layout(params["encoder"]["stack"], config.num_layers,
                                             scan_layers=False)
    table = rules(config.num_layers, **heads)
    check_params(params, abstract_params(config, **heads))
    prefix = "bert." if any(heads.values()) else ""  # as transformers saves each class
    tensors = {(name if name.startswith("cls.") else prefix + name): tensor
               for name, tensor in export_tensors(table, params).items()}
    publish(directory, {
        "config.json": json_text(config_to_hf(config, wordpiece, **heads)),
        WEIGHTS: safetensors_bytes(tensors),
        "vocab.txt": _vocab_text(wordpiece),
        "tokenizer_config.json": json_text(_tokenizer_config(wordpiece, config))})


def _save_finetuned(directory: str, config: BertConfig, params: dict,
                    wordpiece: wordpiece_lib.WordPiece, head: dict) -> None:
    if head.get("pooling", "pooler") != "pooler":
        raise ValueError(f"finetune.pooling={head['pooling']!r}: transformers' "
                         f"BertForSequenceClassification pools with BERT's pooler on [CLS] only; "
                         f"a mean-pooled model has no HF form")
    if sorted(params) != ["classifier", "encoder"]:
        raise ValueError(f"fine-tuned BERT params must be {{'encoder', 'classifier'}}; got "
                         f"{sorted(params)}")
    if wordpiece.vocab_size > config.vocab_size:
        raise ValueError(f"the tokenizer has {wordpiece.vocab_size} tokens but the model's "
                         f"embedding table only {config.vocab_size} rows")
    pooler = head["head"] == "sequence"
    params = to_numpy(params)
    params["encoder"]["stack"] = with_layout(params["encoder"]["stack"], config.num_layers,
                                             scan_layers=False)
    if not pooler:
        params["encoder"] = {k: v for k, v in params["encoder"].items() if k != "pooler"}
    outputs = 2 if head["head"] == "span" else 1 if head["regression"] else len(head["labels"])
    abstract = abstract_params(config, pooler=pooler)
    abstract["classifier"] = {
        "kernel": jax.ShapeDtypeStruct((config.hidden_size, outputs), jnp.float32),
        "bias": jax.ShapeDtypeStruct((outputs,), jnp.float32)}
    check_params(params, abstract)
    tensors = {"bert." + name: tensor for name, tensor in
               export_tensors(rules(config.num_layers, pooler=pooler), params).items()}
    tensors.update(export_tensors(head_rules(head["head"]), params))
    hf_config = config_to_hf(config, wordpiece, False, False)
    hf_config.update(_head_config(head))
    publish(directory, {
        "config.json": json_text(hf_config),
        WEIGHTS: safetensors_bytes(tensors),
        "vocab.txt": _vocab_text(wordpiece),
        "tokenizer_config.json": json_text(_tokenizer_config(wordpiece, config))})
