"""Shared config pieces: the size tables, the training fields, the derived intervals."""
from __future__ import annotations

import ml_collections

from ssl_jax.models.bert import BERT_SIZES
from ssl_jax.models.gpt import GPT_SIZES


def bert_model(variant: str) -> ml_collections.ConfigDict:
    if variant not in BERT_SIZES:
        raise ValueError(f"unknown BERT variant {variant!r}; expected one of {list(BERT_SIZES)}")
    size = BERT_SIZES[variant]
    return ml_collections.ConfigDict(dict(
        variant=variant, **size, mlp_dim=4 * size["hidden_size"], vocab_size=None,
        max_position_embeddings=512, type_vocab_size=2, activation="gelu",
        dropout_rate=0.1, attention_dropout_rate=0.1, layer_norm_eps=1e-12,
        initializer_range=0.02, scan_layers=False, remat=False,
        dtype="float32", param_dtype="float32", attention_impl="xla"))


def gpt_model(variant: str) -> ml_collections.ConfigDict:
    """GPT-1 is post-LN with a 512 context; GPT-2/3 (and the CPU sizes) pre-LN."""
    if variant not in GPT_SIZES:
        raise ValueError(f"unknown GPT variant {variant!r}; expected one of {list(GPT_SIZES)}")
    size = GPT_SIZES[variant]
    return ml_collections.ConfigDict(dict(
        variant=variant, **size, mlp_dim=4 * size["hidden_size"], vocab_size=None,
        pre_ln=variant != "gpt1", sparse_attention=False, attention_window=256,
        activation="gelu_tanh" if variant != "gpt1" else "gelu",
        dropout_rate=0.1, attention_dropout_rate=0.1, layer_norm_eps=1e-5,
        initializer_range=0.02, scan_layers=False, remat=False,
        dtype="float32", param_dtype="float32", attention_impl="xla"))


def bert_size(variant: str) -> dict:
    """The model fields a BERT size sets, as overrides: a sweep point "size=mini"."""
    model = bert_model(variant)
    return {f"model.{k}": model[k] for k in ("variant", *BERT_SIZES[variant], "mlp_dim")}


def gpt_size(variant: str) -> dict:
    """The model fields a GPT size sets (its LN placement and activation too), as overrides."""
    model = gpt_model(variant)
    return {f"model.{k}": model[k]
            for k in ("variant", *GPT_SIZES[variant], "mlp_dim", "pre_ln", "activation")}


def text_data(corpus: str = "embedded") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        corpus=corpus,  # "embedded" | "files" | a prepared TFDS dataset name
        files=ml_collections.FieldReference(None, field_type=str),  # glob, for corpus="files"
        text_key="text",  # jsonl field / TFDS feature holding the text
        data_dir=ml_collections.FieldReference(None, field_type=str),  # TFDS data_dir
        vocab_path=ml_collections.FieldReference(None, field_type=str),  # an existing vocab.txt
        vocab_size=30000, lowercase=True,
        # train on what `python -m ssl_jax.data.prepare` wrote (the corpus is not read again)
        prepared=ml_collections.FieldReference(None, field_type=str),
        # several prepared dirs: "DIR:0.8,DIR:0.2" or [(dir, weight), ...]
        mixture=ml_collections.FieldReference(None, field_type=object)))


def corpus_data(corpus: str | None, files: str | None) -> ml_collections.ConfigDict:
    """text_data for the config args corpus= and files=: files=GLOB selects corpus="files"
    (corpus= naming another corpus beside it is an error); neither: the embedded corpus."""
    if files is not None and corpus not in (None, "files"):
        raise ValueError(f"config args corpus={corpus!r} and files={files!r} conflict: files= "
                         f"trains on those files (corpus=files); drop one of them")
    data = text_data(corpus or ("files" if files is not None else "embedded"))
    data.files = files
    return data


def derived_int() -> ml_collections.FieldReference:
    """A field the config's derived_fields() sets after the overrides (unless overridden)."""
    return ml_collections.FieldReference(None, field_type=int)


def step_intervals(config, explicit=frozenset()) -> dict:
    """derived_fields of a pre-training run: about 20 metrics lines (at most 50 steps apart),
    5 evaluations and 5 checkpoints over config.num_train_steps."""
    steps = config.num_train_steps
    return dict(log_every_steps=max(1, min(50, steps // 20)),
                eval_every_steps=max(1, steps // 5), checkpoint_every_steps=max(1, steps // 5))


def training(**kw) -> ml_collections.ConfigDict:
    """Fields every task's run has (the generic loop reads them). The three intervals are
    derived fields: the config's derived_fields() sets them from the final num_train_steps."""
    c = ml_collections.ConfigDict(dict(
        task="", batch_size=32, max_seq_len=128, num_train_steps=1000,
        log_every_steps=derived_int(), eval_every_steps=derived_int(),
        checkpoint_every_steps=derived_int(),
        checkpoint_keep=3, num_eval_batches=ml_collections.FieldReference(None, field_type=int),
        seed=0, parallel="jit", data_threads=2,
        # the device mesh (-1: the rest of the devices) and how parameters shard over it:
        # "dp" | "fsdp" | "fsdp_tp" | [(logical axis, mesh axes), ...] (ssl_jax.train.sharding)
        mesh=dict(data=-1, fsdp=1, tensor=1),
        sharding_rules=ml_collections.FieldReference("dp", field_type=object),
        grad_accum_steps=1,  # microbatches per optimizer step (one jitted step)
        optimizer=dict(name="adamw", learning_rate=1e-4, end_learning_rate=0.0,
                       warmup_steps=0.1, decay="linear", b1=0.9, b2=0.999, eps=1e-6,
                       weight_decay=0.01, grad_clip_norm=1.0)))
    c.update(kw)
    return c


def finetune(dataset: str, **kw) -> ml_collections.ConfigDict:
    """A fine-tuning run with the BERT paper's recipe (AdamW, lr 2e-5..5e-5, batch 32,
    3 epochs, 10% warm-up then linear decay, dropout 0.1). `kw` overrides top-level fields."""
    str_or_none = lambda: ml_collections.FieldReference(None, field_type=str)
    config = training(
        task="finetune", model=bert_model("base"), data=text_data("embedded"),
        batch_size=32, max_seq_len=128, num_train_epochs=3.0, num_train_steps=1,
        log_every_steps=10, checkpoint_keep=1,
        finetune=dict(
            dataset=dataset, path=str_or_none(), data_dir=str_or_none(), init="",
            random_init=False, freeze_embeddings=False, freeze_layers=0, linear_probe=False,
            layer_decay=1.0, pooling="pooler", classifier_dropout=0.1,
            lm_coef=0.5,  # GPT init only: the auxiliary LM loss's weight (GPT-1; 0 = off)
            num_documents=16,  # embedded/passage_source
            doc_stride=128, max_query_len=64, max_answer_len=30, n_best=20,  # SQuAD
            null_score_diff_threshold=0.0),
        optimizer=dict(name="adamw", learning_rate=2e-5, end_learning_rate=0.0,
                       warmup_steps=0.1, decay="linear", b1=0.9, b2=0.999, eps=1e-6,
                       weight_decay=0.01, grad_clip_norm=1.0))
    config.data.vocab_size = 8000  # only when no pre-trained vocabulary is given
    config.update(kw)
    return config


def vit_model(variant: str) -> ml_collections.ConfigDict:
    """A ViT encoder (config.model.encoder="vit") from ssl_jax.models.vision.VIT_SIZES."""
    from ssl_jax.models.vision import VIT_SIZES

    if variant not in VIT_SIZES:
        raise ValueError(f"unknown ViT variant {variant!r}; expected one of {list(VIT_SIZES)}")
    size = VIT_SIZES[variant]
    return ml_collections.ConfigDict(dict(
        encoder="vit", variant=variant, **size, mlp_dim=4 * size["hidden_size"],
        pooling="cls", position="learned", activation="gelu", dropout_rate=0.0,
        attention_dropout_rate=0.0, layer_norm_eps=1e-6, initializer_range=0.02,
        scan_layers=False, remat=False, dtype="float32", param_dtype="float32",
        attention_impl="xla"))


def image_data(source: str = "digits", image_size: int = 32) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        source=source,  # "digits" (embedded) | a prepared TFDS image dataset (cifar10, ...)
        image_size=image_size, eval_split="test",
        data_dir=ml_collections.FieldReference(None, field_type=str),
        limit=ml_collections.FieldReference(None, field_type=int)))


def convnet_model(channels=(32, 64, 128), kernels=(5, 3, 3),
                  pool_after=(True, True, False)) -> ml_collections.ConfigDict:
    """The small AlexNet-style conv-net encoder (config.model.encoder="convnet")."""
    return ml_collections.ConfigDict(dict(
        encoder="convnet", variant="convnet", channels=list(channels), kernels=list(kernels),
        pool_after=list(pool_after), dtype="float32", param_dtype="float32"))


def image_model(encoder: str, variant: str | None) -> ml_collections.ConfigDict:
    """encoder "vit" (variant: a ViT size, default vit-tiny) or "convnet" (no variant: it has
    one size, so a ViT size beside it is an error)."""
    if encoder == "vit":
        return vit_model(variant or "vit-tiny")
    if encoder == "convnet":
        if variant is not None:
            raise ValueError(f"config arg variant={variant!r} is a ViT size: it needs "
                             f"encoder=vit (encoder='convnet' has one size)")
        return convnet_model()
    raise ValueError(f"unknown encoder {encoder!r}; expected 'vit' or 'convnet'")


# the args every vision pretext config takes for the measurement at the end of its run
PROBE_ARGS = dict(probe_layer=-1, probe_labels=0, finetune_steps=0)


def probe(layer: int = -1, labels_per_class: int = 0,
          finetune_steps: int = 0) -> ml_collections.ConfigDict:
    """What a vision pretext run measures when it completes (ssl_jax.eval.probe): a linear
    probe of the frozen encoder's `layer` (-1: its output) with all labels or
    `labels_per_class` per class (mean of 5 draws), and full fine-tuning if finetune_steps."""
    return ml_collections.ConfigDict(dict(
        layer=layer, l2=1.0, labels_per_class=labels_per_class, draws=5,
        finetune_steps=finetune_steps, finetune_learning_rate=1e-3))


def vision_pretext(task: str, args: dict, model, tokens_per_image: int, pretext: dict,
                   optimizer: dict) -> ml_collections.ConfigDict:
    """A vision pretext run from its parsed args (steps, batch, source, image_size and
    PROBE_ARGS): the training fields, config.pretext, and config.probe. Its derived fields
    are step_intervals."""
    return training(
        task=task, model=model, data=image_data(args["source"], args["image_size"]),
        batch_size=args["batch"], num_train_steps=args["steps"], max_seq_len=tokens_per_image,
        checkpoint_keep=1, pretext=pretext, optimizer=optimizer,
        probe=probe(args["probe_layer"], args["probe_labels"], args["finetune_steps"]))
