"""Config fields a run reads only under another field's value: one set explicitly (a
`--config.a.b=v` override or a config arg) where the run would ignore it is refused, naming
the field that decides, so a run never trains on other data or another model than its
command line says. Defaults that happen to be ignored are fine.

RULES is the table: (fields, reason). `reason(run)` gets one run (a transfer config's
`pretrain` or `finetune` stage, or the config itself) and returns None when the run reads
the fields, else why not, naming the deciding field with run.shown(...) or run.key(...)
(which add the stage's prefix). A config arg sets the fields that change when the arg's
part is left out (ssl_jax.config.arg_fields); a sweep checks each point.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ssl_jax.files import read_json

PASSAGES = "embedded/passage_source"  # the one fine-tuning dataset that reads config.data
SQUAD_FIELDS = ("finetune.doc_stride", "finetune.max_query_len", "finetune.max_answer_len",
                "finetune.n_best", "finetune.null_score_diff_threshold")
# config.model's fields a fine-tuning run ignores when finetune.init gives the architecture
# (it takes dropout, dtypes, attention_impl and scan_layers from config.model)
INIT_ARCHITECTURE = tuple(f"model.{k}" for k in (
    "variant", "num_layers", "hidden_size", "num_heads", "mlp_dim", "vocab_size",
    "max_position_embeddings", "type_vocab_size", "activation", "layer_norm_eps",
    "initializer_range", "remat"))
VISION_TASKS = ("jigsaw", "inpaint", "mae", "rotation")


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's config, where it sits (`prefix`: "pretrain." in a transfer config) and, for
    a transfer's fine-tuning stage, the pretrain stage that becomes its finetune.init."""
    config: object
    prefix: str = ""
    pretrain_task: str | None = None

    def key(self, name: str) -> str:
        return self.prefix + name

    def shown(self, name: str) -> str:
        """`name`=its value, as the messages show a deciding field."""
        return f"{self.key(name)}={_value(self.config, name)!r}"

    @property
    def task(self) -> str:
        return self.config.get("task", "")

    @property
    def init(self) -> str:
        """What gives a fine-tuning run its encoder ("" = a random one), in words."""
        if self.pretrain_task is not None:
            return "the transfer's pretrain stage"
        return self.shown("finetune.init") if self.config.finetune.init else ""

    def init_kind(self) -> str | None:
        """"bert" or "gpt" (the fine-tuning recipe finetune.init selects); None when the
        directory does not say (its load will fail, with its own message)."""
        if self.pretrain_task is not None:
            return "gpt" if self.pretrain_task == "gpt_pretrain" else "bert"
        init = self.config.finetune.init
        if not init:
            return "bert"
        path = os.path.join(init, "config.json")
        try:
            found = read_json(path, "model config") if os.path.isfile(path) else {}
        except ValueError:
            return None
        kind = {"gpt_pretrain": "gpt", "gpt2": "gpt", "bert_pretrain": "bert", "bert": "bert",
                "finetune": "bert"}
        return kind.get(found.get("task") or found.get("model_type"))


def _reads_corpus(run: Run) -> bool:
    return run.task in ("bert_pretrain", "gpt_pretrain") or (
        run.task == "finetune" and run.config.finetune.dataset == PASSAGES)


def _corpus_unread(run: Run):
    if run.task == "finetune" and not _reads_corpus(run):
        return (f"{run.shown('finetune.dataset')} reads its own data, not config.data's "
                f"corpus (only {PASSAGES} does)")


def _files_unread(run: Run):
    if _reads_corpus(run) and run.config.data.corpus != "files":
        return (f"{run.shown('data.corpus')} reads no files; add "
                f"--config.{run.key('data.corpus')}=files to train on them")


def _text_key_unread(run: Run):
    if _reads_corpus(run) and run.config.data.corpus == "embedded":
        return (f"{run.shown('data.corpus')} is plain text (text_key names the jsonl field "
                f"of data.corpus='files' or the TFDS feature of a prepared corpus)")


def _vocabulary_given(run: Run):
    """data.vocab_size sizes a vocabulary trained on the corpus: not when one is given."""
    data = run.config.data
    if run.task == "finetune" and run.init:
        return f"{run.init} brings its own vocabulary"
    if run.task == "gpt_pretrain" and data.get("tokenizer_path"):
        return (f"{run.shown('data.tokenizer_path')} is the tokenizer (vocab_size sizes a BPE "
                f"trained on the corpus)")
    if run.task in ("bert_pretrain", "finetune") and data.get("vocab_path"):
        return (f"{run.shown('data.vocab_path')} is the vocabulary (vocab_size sizes one "
                f"trained on the corpus)")


def _wordpiece_unread(run: Run):
    """data.vocab_path and data.lowercase: the WordPiece a BERT run trains or loads."""
    if run.task == "finetune" and run.init:
        return f"{run.init} brings its own vocabulary"
    if run.task == "gpt_pretrain":
        return (f"{run.key('task')}='gpt_pretrain' reads a byte-level BPE "
                f"({run.key('data.tokenizer_path')}), not a WordPiece vocabulary")


def _finetune_data_dir_unread(run: Run):
    """A fine-tuning run's data.data_dir: its corpus (the passage task) and the cache of the
    vocabulary it trains (no finetune.init)."""
    if run.task == "finetune" and run.init and not _reads_corpus(run):
        return (f"{run.init} brings its vocabulary (nothing to cache) and "
                f"{run.shown('finetune.dataset')} reads no corpus; its TFDS data_dir is "
                f"{run.key('finetune.data_dir')}")


def _no_nsp(run: Run):
    if run.task == "bert_pretrain" and not run.config.data.nsp:
        return f"{run.shown('data.nsp')}: no sentence pairs, no random next segments"


def _dense(run: Run):
    if run.task == "gpt_pretrain" and not run.config.model.sparse_attention:
        return (f"{run.shown('model.sparse_attention')}: dense attention has no window; add "
                f"--config.{run.key('model.sparse_attention')}=true (the config arg "
                f"attention=sparse)")


def _path_unread(run: Run):
    if run.task == "finetune" and run.config.finetune.dataset == PASSAGES:
        return f"{run.shown('finetune.dataset')} reads config.data's corpus, no files"


def _tfds_dir_unread(run: Run):
    if run.task != "finetune":
        return None
    ft = run.config.finetune
    if ft.dataset == PASSAGES:
        return (f"{run.shown('finetune.dataset')} reads config.data's corpus (its TFDS "
                f"directory is {run.key('data.data_dir')})")
    if ft.dataset.startswith("swag/"):
        return f"{run.shown('finetune.dataset')} reads only the files in finetune.path"
    if ft.path:
        return f"{run.shown('finetune.path')} is read (the released files), not TFDS"


def _not_squad(run: Run):
    if run.task == "finetune" and not run.config.finetune.dataset.startswith("squad/"):
        return (f"{run.shown('finetune.dataset')} is not SQuAD (these fields window its "
                f"passages and decode its answers)")


def _not_passages(run: Run):
    if run.task == "finetune" and run.config.finetune.dataset != PASSAGES:
        return f"{run.shown('finetune.dataset')} is not {PASSAGES}"


def _not_gpt_init(run: Run):
    if run.task == "finetune" and run.init_kind() == "bert":
        what = (f"{run.init} is a BERT" if run.init else
                f"{run.shown('finetune.init')} fine-tunes a random BERT encoder")
        return f"{what}; lm_coef weighs the GPT recipe's auxiliary LM loss"


def _init_architecture(run: Run):
    if run.task == "finetune" and run.init:
        return (f"{run.init} brings its architecture (of config.model only dropout, dtypes, "
                f"attention_impl and scan_layers apply)")


def _transfer_sets(run: Run):
    if run.task == "transfer":
        return (f"{run.shown('task')} sets it: one fine-tuning stage starts from the pretrain "
                f"stage, the other from a random encoder of its size")


def _constant_rate(run: Run):
    if run.config.optimizer.get("decay") == "constant":
        return f"{run.shown('optimizer.decay')}: the learning rate does not decay"


def _not_random_blocks(run: Run):
    if run.task == "inpaint" and run.config.pretext.mask != "random_blocks":
        return (f"{run.shown('pretext.mask')} (block is the square size of "
                f"mask='random_blocks')")


def _digits(run: Run):
    if run.task in VISION_TASKS and run.config.data.source == "digits":
        return (f"{run.shown('data.source')} is embedded (data_dir is where a TFDS image "
                f"source is prepared)")


def _no_probe_finetuning(run: Run):
    if run.task in VISION_TASKS and run.config.probe.finetune_steps == 0:
        return f"{run.shown('probe.finetune_steps')}: the encoder is not fine-tuned"


def _all_labels(run: Run):
    if run.task in VISION_TASKS and run.config.probe.labels_per_class == 0:
        return f"{run.shown('probe.labels_per_class')}: one probe on all labels, no draws"


RULES: tuple[tuple[tuple[str, ...], Callable], ...] = (
    (("data.corpus", "data.files", "data.text_key"), _corpus_unread),
    (("data.files",), _files_unread),
    (("data.text_key",), _text_key_unread),
    (("data.vocab_size",), _vocabulary_given),
    (("data.vocab_path", "data.lowercase"), _wordpiece_unread),
    (("data.data_dir",), _finetune_data_dir_unread),
    (("data.data_dir",), _digits),
    (("data.random_next_prob",), _no_nsp),
    (("model.attention_window",), _dense),
    (("finetune.path",), _path_unread),
    (("finetune.data_dir",), _tfds_dir_unread),
    (SQUAD_FIELDS, _not_squad),
    (("finetune.num_documents",), _not_passages),
    (("finetune.lm_coef",), _not_gpt_init),
    (INIT_ARCHITECTURE, _init_architecture),
    (("finetune.finetune.init", "finetune.finetune.random_init"), _transfer_sets),
    (("optimizer.end_learning_rate",), _constant_rate),
    (("pretext.block",), _not_random_blocks),
    (("probe.finetune_learning_rate",), _no_probe_finetuning),
    (("probe.draws",), _all_labels),
)


def runs(config) -> list[Run]:
    """The runs a config holds: a transfer config, its pretrain and finetune stages (the
    latter fine-tunes the former); any other config, itself."""
    if config.get("task") != "transfer":
        return [Run(config)]
    return [Run(config), Run(config.pretrain, "pretrain."),
            Run(config.finetune, "finetune.", pretrain_task=config.pretrain.get("task", ""))]


def _value(config, field: str):
    for part in field.split("."):
        config = config[part]
    return config


class IgnoredField(ValueError):
    """An explicitly set field its run would ignore (a bad command line: one line, exit 2)."""


def why_ignored(config, field: str) -> str | None:
    """Why `config`'s run(s) would ignore `field` (e.g. "pretrain.data.files"), naming the
    field that decides; None when a run reads it."""
    for run in runs(config):
        if not field.startswith(run.prefix):
            continue
        name = field[len(run.prefix):]
        for fields, why in RULES:
            reason = why(run) if name in fields else None
            if reason:
                return reason
    return None


def refuse_ignored(config, explicit: dict[str, str]) -> None:
    """IgnoredField for the first field of `explicit` (field -> how it was set, e.g.
    "--config.data.files=a/*.txt") that its run would ignore. None (no value) is never
    refused."""
    for field, how in explicit.items():
        reason = None if _value(config, field) is None else why_ignored(config, field)
        if reason:
            raise IgnoredField(f"{how} is ignored: {reason}")
