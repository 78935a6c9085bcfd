"""GPT-2 in Hugging Face's format (transformers' GPT2LMHeadModel directories): config.json +
model.safetensors + vocab.json/merges.txt (OpenAI's encoder.json/vocab.bpe, renamed) or
tokenizer.json (the fast tokenizer's file).

    config, params, bpe = load("gpt2/")     # GptLM's tree (numpy arrays)
    save("out/", config, params, bpe)        # from_pretrained() reads it

GPT-2 is pre-LN with a final LayerNorm and an output layer tied to the token embedding; its
Conv1D weights are [in, out] like our kernels, and one c_attn holds q | k | v side by side.
Our post-LN (GPT-1) and sparse-attention (GPT-3) variants have no GPT-2 form: an error.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import tempfile

import jax
import jax.numpy as jnp

from ssl_jax.models.partitioning import init_unboxed
from ssl_jax.data import bpe as bpe_lib
from ssl_jax.files import read_json
from ssl_jax.interop.hf_format import (
    LAYOUT_KEY, WEIGHTS, Rule, check_params, check_tensors, check_tied, config_field, conv1d,
    copy, expected_shapes, export_tensors, fused, import_tensors, json_text, layout_fields,
    publish, read_layout, read_tensors, safetensors_bytes, stack_layers, strip_prefix,
    to_numpy, with_layout)
from ssl_jax.models.gpt import GptConfig, GptLM

ACTIVATIONS_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                       "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
TIES = {"lm_head.weight": "wte.weight"}
TOKENIZER_FILES = bpe_lib.HF_GPT2_FILES  # vocab.json, merges.txt: OpenAI's two files renamed


def _is_buffer(name: str) -> bool:
    """The causal-mask buffers older checkpoints carry (h.{i}.attn.bias / .masked_bias)."""
    return name.startswith("h.") and name.endswith((".attn.bias", ".attn.masked_bias"))


# --- the mapping -----------------------------------------------------------------------------

def _layer_norm(hf: str, ours: tuple) -> list[Rule]:
    return [copy(f"{hf}.weight", ours + ("scale",)), copy(f"{hf}.bias", ours + ("bias",))]


def _layer_rules(i: int) -> list[Rule]:
    hf, ours = f"h.{i}", ("stack", f"layer_{i}")
    qkv = [ours + ("attention", name) for name in ("query", "key", "value")]
    return [
        *_layer_norm(f"{hf}.ln_1", ours + ("ln_attention",)),
        fused(f"{hf}.attn.c_attn.weight", [p + ("kernel",) for p in qkv], bias=False),
        fused(f"{hf}.attn.c_attn.bias", [p + ("bias",) for p in qkv], bias=True),
        conv1d(f"{hf}.attn.c_proj.weight", ours + ("attention", "out", "kernel"), in_axes=2),
        copy(f"{hf}.attn.c_proj.bias", ours + ("attention", "out", "bias")),
        *_layer_norm(f"{hf}.ln_2", ours + ("ln_mlp",)),
        conv1d(f"{hf}.mlp.c_fc.weight", ours + ("mlp", "fc_in", "kernel")),
        copy(f"{hf}.mlp.c_fc.bias", ours + ("mlp", "fc_in", "bias")),
        conv1d(f"{hf}.mlp.c_proj.weight", ours + ("mlp", "fc_out", "kernel")),
        copy(f"{hf}.mlp.c_proj.bias", ours + ("mlp", "fc_out", "bias"))]


def rules(num_layers: int) -> list[Rule]:
    """HF names (without the "transformer." prefix) <-> our per-layer GptLM tree."""
    table = [copy("wte.weight", ("token", "embedding")),
             copy("wpe.weight", ("position", "embedding"))]
    for i in range(num_layers):
        table += _layer_rules(i)
    return table + _layer_norm("ln_f", ("ln_final",))


def abstract_params(config: GptConfig) -> dict:
    """Shapes/dtypes of GptLM's per-layer tree (no arrays are made)."""
    config = dataclasses.replace(config, scan_layers=False)
    return jax.eval_shape(lambda: init_unboxed(GptLM(config), 
        jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))["params"]


# --- configs ---------------------------------------------------------------------------------

def check_representable(config: GptConfig) -> None:
    """GPT-2's architecture: pre-LN with a final LayerNorm, dense causal attention."""
    if not config.pre_ln:
        raise ValueError("a post-LN GPT (GPT-1, pre_ln=False) has no GPT-2 form (GPT-2 is "
                         "pre-LN with a final LayerNorm)")
    if config.sparse_attention:
        raise ValueError("sparse_attention=True (locally banded layers) has no GPT-2 form "
                         "(GPT-2 attends densely)")
    if config.activation not in ACTIVATIONS_TO_HF:
        raise ValueError(f"activation {config.activation!r} has no HF GPT-2 name")


def config_from_hf(source: str, hf: dict, scan_layers: bool | None = None) -> GptConfig:
    """An HF GPT2Config (config.json) -> GptConfig; what we cannot represent is an error."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"{source}: model_type={hf.get('model_type')!r}; expected 'gpt2'")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS_FROM_HF:
        raise ValueError(f"{source}: activation_function={activation!r} is not supported; "
                         f"expected one of {sorted(ACTIVATIONS_FROM_HF)}")
    for flag, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx",
                                                           False), ("add_cross_attention", False)):
        if bool(hf.get(flag, supported)) != supported:
            raise ValueError(f"{source}: {flag}={hf[flag]} is not supported (GPT-2 has "
                             f"{flag}={supported})")
    layout = read_layout(source, hf, allowed=("attention_window",))
    if scan_layers is not None:
        layout["scan_layers"] = scan_layers
    field = functools.partial(config_field, source, hf)
    hidden = field("n_embd")
    try:
        return GptConfig(
            vocab_size=field("vocab_size"), hidden_size=hidden, num_layers=field("n_layer"),
            num_heads=field("n_head"), mlp_dim=field("n_inner", default=4 * hidden),
            activation=ACTIVATIONS_FROM_HF[activation],
            dropout_rate=field("resid_pdrop", default=0.1),
            attention_dropout_rate=field("attn_pdrop", default=0.1),
            layer_norm_eps=field("layer_norm_epsilon", default=1e-5),
            initializer_range=field("initializer_range", default=0.02),
            max_len=field("n_positions", "n_ctx"), pre_ln=True, sparse_attention=False,
            **layout)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def config_to_hf(config: GptConfig, eot_id: int) -> dict:
    check_representable(config)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_embd": config.hidden_size,
        "n_layer": config.num_layers, "n_head": config.num_heads, "n_inner": config.mlp_dim,
        "n_positions": config.max_len, "n_ctx": config.max_len,
        "activation_function": ACTIVATIONS_TO_HF[config.activation],
        "resid_pdrop": config.dropout_rate, "embd_pdrop": config.dropout_rate,
        "attn_pdrop": config.attention_dropout_rate,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": config.initializer_range, "bos_token_id": eot_id,
        "eos_token_id": eot_id, "tie_word_embeddings": True, "scale_attn_weights": True,
        "dtype": "float32",
        LAYOUT_KEY: {**layout_fields(config), "attention_window": config.attention_window}}


# --- tokenizer -------------------------------------------------------------------------------

def _tokenizer_files(tokenizer: bpe_lib.BpeTokenizer, config: GptConfig) -> dict[str, str]:
    """vocab.json, merges.txt (from the BPE model itself) and tokenizer_config.json."""
    from tokenizers import models, pre_tokenizers

    tok = tokenizer.tokenizer
    pre = tok.pre_tokenizer
    if not (isinstance(tok.model, models.BPE) and isinstance(pre, pre_tokenizers.ByteLevel)
            and not pre.add_prefix_space and pre.use_regex):
        raise ValueError(f"tokenizer {tokenizer.source} is not GPT-2's byte-level BPE; HF's "
                         "GPT2Tokenizer could not reproduce it")
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in tok.model.save(tmp):
            with open(path, encoding="utf-8") as f:
                files[os.path.basename(path)] = f.read()
    if sorted(files) != sorted(TOKENIZER_FILES):
        raise ValueError(f"the BPE model saved {sorted(files)}, not {list(TOKENIZER_FILES)}")
    eot = tok.id_to_token(tokenizer.eot_id)
    files["tokenizer_config.json"] = json_text({
        "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "bos_token": eot,
        "eos_token": eot, "unk_token": eot, "model_max_length": config.max_len})
    return files


# --- load / save -----------------------------------------------------------------------------

def load(directory: str, *, scan_layers: bool | None = None
         ) -> tuple[GptConfig, dict, bpe_lib.BpeTokenizer]:
    """(config, params, tokenizer) of an HF GPT-2 directory; params is GptLM's tree (numpy).
    scan_layers: the layout wanted (None: as recorded by `save`, else per-layer)."""
    source = f"HF GPT-2 checkpoint {directory!r}"
    hf = read_json(os.path.join(directory, "config.json"), "model config")
    config = config_from_hf(source, hf, scan_layers)
    tensors = strip_prefix(source, read_tensors(directory), "transformer.")
    if not hf.get("tie_word_embeddings", True) and "lm_head.weight" not in tensors:
        raise ValueError(f"{source}: tie_word_embeddings=false but no lm_head.weight")
    table = rules(config.num_layers)
    abstract = abstract_params(config)
    check_tensors(source, tensors, expected_shapes(table, abstract),
                  ignored=lambda name: name in TIES or _is_buffer(name))
    check_tied(source, tensors, TIES)
    params = import_tensors(table, tensors, abstract)
    if config.scan_layers:
        params["stack"] = stack_layers(params["stack"], config.num_layers)
    try:
        tokenizer = bpe_lib.hf_gpt2_tokenizer(directory, hf.get("eos_token_id"))
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{source}: {e}") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                         f"embedding table only {config.vocab_size} rows")
    return config, params, tokenizer


def save(directory: str, config: GptConfig, params: dict,
         tokenizer: bpe_lib.BpeTokenizer) -> None:
    """Writes a new HF GPT-2 directory (published whole): config.json (GPT2LMHeadModel),
    model.safetensors (float32, lm_head tied so not stored), vocab.json, merges.txt,
    tokenizer_config.json."""
    check_representable(config)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                         f"embedding table only {config.vocab_size} rows")
    params = to_numpy(params)
    params["stack"] = with_layout(params["stack"], config.num_layers, scan_layers=False)
    check_params(params, abstract_params(config))
    tensors = {"transformer." + name: tensor
               for name, tensor in export_tensors(rules(config.num_layers), params).items()}
    publish(directory, {"config.json": json_text(config_to_hf(config, tokenizer.eot_id)),
                        WEIGHTS: safetensors_bytes(tensors),
                        **_tokenizer_files(tokenizer, config)})
