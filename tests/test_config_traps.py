"""Silent fallbacks removed (issue 15): files= selects the files; a field set explicitly (an
override or a config arg) that its run would ignore is refused in one line naming the field
that decides (ssl_jax/ignored.py), before any data is read; ignored defaults are fine."""
import json
import os
import subprocess
import sys

import pytest

import launch
from ssl_jax import config as config_lib
from ssl_jax import sweep as sweep_lib
from ssl_jax.ignored import IgnoredField
from tests.conftest import ROOT

BERT = "experiments/bert/pretrain.py"
GPT = "experiments/gpt/pretrain.py"
GLUE = "experiments/finetune/glue.py:task=mrpc"
PASSAGES = "experiments/finetune/passage_source.py"
QUICKSTART = "experiments/quickstart.py"
GPT_TRANSFER = "experiments/gpt/transfer.py"


def build(spec: str, overrides=()):
    return config_lib.load_config(os.path.join(ROOT, spec), list(overrides))


def init_dir(tmp_path, **config) -> str:
    """A directory whose config.json says what model it holds (no weights: never loaded)."""
    (tmp_path / "init").mkdir(exist_ok=True)
    (tmp_path / "init" / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "init")


# (spec, overrides that set an ignored field, the ignored field, the deciding field,
#  the overrides that make the deciding field read it)
TRAPS = {
    "files_without_corpus": (BERT + ":tiny", {"data.files": "/x/*.txt"}, "data.files",
                             "data.corpus", {"data.corpus": "files"}),
    "gpt_files_without_corpus": (GPT + ":gpt-tiny", {"data.files": "/x/*.txt"}, "data.files",
                                 "data.corpus", {"data.corpus": "files"}),
    "text_key_embedded": (BERT + ":tiny", {"data.text_key": "body"}, "data.text_key",
                          "data.corpus", {"data.corpus": "files", "data.files": "/x/*.jsonl"}),
    "vocab_size_with_vocab_path": (BERT + ":tiny", {"data.vocab_path": "/v.txt",
                                                    "data.vocab_size": "100"},
                                   "data.vocab_size", "data.vocab_path",
                                   {"data.vocab_path": "None"}),
    "vocab_size_with_tokenizer": (GPT + ":gpt-tiny", {"data.tokenizer_path": "/gpt2",
                                                      "data.vocab_size": "300"},
                                  "data.vocab_size", "data.tokenizer_path",
                                  {"data.tokenizer_path": "None"}),
    "vocab_path_in_gpt": (GPT + ":gpt-tiny", {"data.vocab_path": "/v.txt"}, "data.vocab_path",
                          "data.tokenizer_path", None),
    "random_next_without_nsp": (BERT + ":tiny,nsp=False", {"data.random_next_prob": "0.3"},
                                "data.random_next_prob", "data.nsp", {"data.nsp": "true"}),
    "window_with_dense": (GPT + ":gpt-tiny", {"model.attention_window": "64"},
                          "model.attention_window", "model.sparse_attention",
                          {"model.sparse_attention": "true"}),
    "corpus_field_for_glue": (GLUE, {"data.files": "/x/*.txt"}, "data.files",
                              "finetune.dataset", None),
    "passages_path": (PASSAGES, {"finetune.path": "/p"}, "finetune.path", "finetune.dataset",
                      None),
    "tfds_dir_with_path": (GLUE + ",path=/p", {"finetune.data_dir": "/d"}, "finetune.data_dir",
                           "finetune.path", {"finetune.path": ""}),
    "tfds_dir_for_passages": (PASSAGES, {"finetune.data_dir": "/d"}, "finetune.data_dir",
                              "finetune.dataset", None),
    "squad_field_for_glue": (GLUE, {"finetune.doc_stride": "64"}, "finetune.doc_stride",
                             "finetune.dataset", None),
    "documents_for_glue": (GLUE, {"finetune.num_documents": "4"}, "finetune.num_documents",
                           "finetune.dataset", None),
    "lm_coef_random_bert": (GLUE, {"finetune.lm_coef": "0.2"}, "finetune.lm_coef",
                            "finetune.init", None),
    "init_vocab": (GLUE + ",init=/no/such/run", {"data.vocab_size": "100"}, "data.vocab_size",
                   "finetune.init", {"finetune.init": ""}),
    "init_lowercase": (GLUE + ",init=/no/such/run", {"data.lowercase": "false"},
                       "data.lowercase", "finetune.init", {"finetune.init": ""}),
    "init_size": (GLUE + ",init=/no/such/run", {"model.num_layers": "2"}, "model.num_layers",
                  "finetune.init", {"finetune.init": ""}),
    "init_data_dir": (GLUE + ",init=/no/such/run", {"data.data_dir": "/d"}, "data.data_dir",
                      "finetune.init", {"finetune.init": ""}),
    "constant_rate_end": (BERT + ":tiny", {"optimizer.decay": "constant",
                                           "optimizer.end_learning_rate": "1e-5"},
                          "optimizer.end_learning_rate", "optimizer.decay",
                          {"optimizer.decay": "linear"}),
    "block_without_blocks": ("experiments/vision/inpainting.py", {"pretext.block": "4"},
                             "pretext.block", "pretext.mask",
                             {"pretext.mask": "random_blocks"}),
    "image_dir_for_digits": ("experiments/vision/mae.py", {"data.data_dir": "/d"},
                             "data.data_dir", "data.source", {"data.source": "cifar10"}),
    "probe_rate_without_finetuning": ("experiments/vision/rotation.py",
                                      {"probe.finetune_learning_rate": "0.01"},
                                      "probe.finetune_learning_rate", "probe.finetune_steps",
                                      {"probe.finetune_steps": "10"}),
    "draws_with_all_labels": ("experiments/vision/jigsaw.py", {"probe.draws": "3"},
                              "probe.draws", "probe.labels_per_class",
                              {"probe.labels_per_class": "5"}),
    # a transfer config: each stage's fields, named with the stage
    "pretrain_files": (QUICKSTART, {"pretrain.data.files": "/x/*.txt"}, "pretrain.data.files",
                       "pretrain.data.corpus", {"pretrain.data.corpus": "files"}),
    "pretrain_window": (GPT_TRANSFER, {"pretrain.model.attention_window": "8"},
                        "pretrain.model.attention_window", "pretrain.model.sparse_attention",
                        {"pretrain.model.sparse_attention": "true"}),
    "transfer_sets_init": (QUICKSTART, {"finetune.finetune.init": "/x"},
                           "finetune.finetune.init", "task='transfer'", None),
    "transfer_stage_size": (QUICKSTART, {"finetune.model.num_layers": "2"},
                            "finetune.model.num_layers", "pretrain stage", None),
    "transfer_stage_vocab": (QUICKSTART, {"finetune.data.vocab_size": "100"},
                             "finetune.data.vocab_size", "pretrain stage", None),
    "transfer_lm_coef_bert": (QUICKSTART, {"finetune.finetune.lm_coef": "0.1"},
                              "finetune.finetune.lm_coef", "pretrain stage", None),
}


@pytest.mark.parametrize("name", sorted(TRAPS))
def test_an_ignored_override_is_refused_naming_both_fields(name):
    spec, overrides, field, decider, allowed = TRAPS[name]
    with pytest.raises(IgnoredField) as e:
        build(spec, overrides.items())
    message = str(e.value)
    assert message.startswith(f"--config.{field}=") and " is ignored: " in message, message
    assert decider in message.split(" is ignored: ")[1] and "\n" not in message, message
    if allowed is not None:  # the deciding field set so that the run reads the field: fine
        build(spec, {**overrides, **allowed}.items())


@pytest.mark.parametrize("spec,field,decider,allowed", [
    (GPT + ":gpt-tiny,window=64", "model.attention_window", "model.sparse_attention",
     ",attention=sparse"),
    (GPT + ":gpt-tiny,tokenizer=/gpt2,vocab=1000", "data.vocab_size", "data.tokenizer_path",
     None),
    (GLUE + ",init=/no/such/run,variant=large", "model.", "finetune.init", None),
    (GLUE + ",lm_coef=0.2", "finetune.lm_coef", "finetune.init", None),
    (GLUE + ",path=/p,data_dir=/d", "finetune.data_dir", "finetune.path", None),
    (PASSAGES + ":path=/p", "finetune.path", "finetune.dataset", None),
    ("experiments/finetune/swag.py:path=/p,data_dir=/d", "finetune.data_dir",
     "finetune.dataset='swag/regular'", None),
    ("experiments/vision/inpainting.py:block=4", "pretext.block", "pretext.mask",
     ",mask=random_blocks"),
    ("experiments/vision/mae.py:finetune_steps=0,probe_labels=0", None, None, None),
])
def test_an_ignored_config_arg_is_refused_naming_the_arg(spec, field, decider, allowed):
    if field is None:  # args at their defaults are never refused
        build(spec)
        return
    with pytest.raises(IgnoredField) as e:
        build(spec)
    arg = spec.rpartition(",")[2] if "," in spec else spec.rpartition(":")[2]
    message = str(e.value)
    assert message.startswith(f"config arg {arg} (sets {field}") and decider in message, message
    if allowed is not None:
        build(spec + allowed)


def test_lm_coef_follows_what_init_is(tmp_path):
    spec = GLUE + ",init={},lm_coef=0.2"
    with pytest.raises(IgnoredField, match="is a BERT; lm_coef weighs the GPT recipe"):
        build(spec.format(init_dir(tmp_path, task="bert_pretrain")))
    assert build(spec.format(init_dir(tmp_path, task="gpt_pretrain"))).finetune.lm_coef == 0.2
    assert build(spec.format(init_dir(tmp_path, model_type="gpt2"))).finetune.lm_coef == 0.2
    with pytest.raises(IgnoredField, match="is a BERT"):
        build(spec.format(init_dir(tmp_path, model_type="bert")))
    # a transfer fine-tunes its pretrain stage: a GPT's reads lm_coef, a BERT's does not
    assert build(GPT_TRANSFER, [("finetune.finetune.lm_coef", "0.1")])


def test_ignored_defaults_and_unset_values_are_fine():
    """Only what the command line sets is refused: a config's own defaults that its run
    ignores (random_next_prob without NSP, lm_coef with a BERT, the window of dense
    attention, the finetune stage's model of a transfer), and None (no value), pass."""
    assert build(BERT + ":tiny,nsp=False").data.random_next_prob == 0.5
    assert build(GLUE).finetune.lm_coef == 0.5
    assert build(GPT + ":gpt-tiny").model.attention_window == 32
    assert build(QUICKSTART).finetune.model.num_layers == 4
    assert build(BERT + ":tiny", [("data.files", "None")]).data.files is None
    assert build(PASSAGES + ":init=/no/such/run", [("model.dropout_rate", "0.0")])


def test_files_arg_selects_the_files():
    for spec in (BERT + ":tiny,files=/x/*.txt", GPT + ":gpt-tiny,files=/x/*.txt"):
        data = build(spec).data
        assert (data.corpus, data.files) == ("files", "/x/*.txt")
    assert build(BERT + ":tiny,files=/x/*.txt,corpus=files").data.corpus == "files"
    assert build(BERT + ":tiny").data.corpus == "embedded"
    assert build(BERT + ":tiny,corpus=wikipedia").data.corpus == "wikipedia"
    with pytest.raises(ValueError, match=r"config args corpus='embedded' and "
                                         r"files='/x/\*.txt' conflict"):
        build(BERT + ":tiny,corpus=embedded,files=/x/*.txt")


def test_a_vit_size_needs_the_vit_encoder():
    with pytest.raises(ValueError, match=r"config arg variant='vit-mini' is a ViT size: it "
                                         r"needs encoder=vit"):
        build("experiments/vision/rotation.py:vit-mini")
    assert build("experiments/vision/rotation.py:vit-mini,encoder=vit").model.variant == "vit-mini"
    assert build("experiments/vision/jigsaw.py:encoder=vit").model.variant == "vit-tiny"
    assert build("experiments/vision/inpainting.py").model.encoder == "convnet"


def test_a_sweep_refuses_a_setting_one_of_its_points_ignores():
    module = config_lib.load_module(os.path.join(ROOT, GPT))
    with pytest.raises(IgnoredField, match=r"^sweep point 'size=gpt-tiny': config arg "
                                           r"window=64 .* is ignored: "
                                           r"model.sparse_attention=False"):
        sweep_lib.plan_sweep(module, "gpt-tiny,window=64")
    points = sweep_lib.plan_sweep(module, "gpt-tiny,window=64", only=["attention=sparse"])
    assert points[0].config.model.attention_window == 64


def test_launch_refuses_files_without_corpus_in_one_line_before_any_compute(tmp_path):
    """The issue's case, as a new user types it: the files were ignored for the embedded
    corpus; now the run stops at once, writing nothing."""
    (tmp_path / "mine.txt").write_text("My own text. Two sentences.\n\nAnother document.\n")
    workdir = tmp_path / "w"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
         f"{BERT}:tiny,steps=1", "--workdir", str(workdir), "--no-progress",
         f"--config.data.files={tmp_path / '*.txt'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: --config.data.files=") and \
        "data.corpus='embedded'" in done.stderr and "--config.data.corpus=files" in done.stderr
    assert not workdir.exists()


def _launch(capsys, workdir, spec):
    code = launch.main(["--config", os.path.join(ROOT, spec), "--workdir", str(workdir),
                        "--no-progress"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    return code, errors


def test_files_that_match_nothing_or_hold_nothing_fail_fast(capsys, tmp_path):
    pattern = str(tmp_path / "none" / "*.txt")
    code, errors = _launch(capsys, tmp_path / "a", f"{BERT}:tiny,steps=1,files={pattern}")
    assert code == 2 and errors == [f"error: config.data.files={pattern!r} matches no file"]
    (tmp_path / "empty.txt").write_text("")
    code, errors = _launch(capsys, tmp_path / "b",
                           f"{GPT}:gpt-tiny,steps=1,files={tmp_path / 'empty.txt'}")
    assert code == 2 and len(errors) == 1 and "empty.txt' is empty" in errors[0], errors
    (tmp_path / "blank.txt").write_text("\n \n")  # not empty, but no text
    code, errors = _launch(capsys, tmp_path / "c", f"{BERT}:tiny,steps=1,files={tmp_path}/*.txt")
    assert code == 2 and len(errors) == 1 and "is empty" in errors[0], errors
    for run in "abc":
        assert not (tmp_path / run).exists()
