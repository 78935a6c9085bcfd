"""One `--model PATH` everywhere: a random HF GPT-2 of odd sizes, written here in transformers'
file format with the safetensors library (not by transformers), is read by every command that
reads a model, gives what a NumPy GPT-2 gives, and generates the greedy tokens of an
independent loop; workdirs and their HF exports give equal numbers; bad paths fail in one line.
"""
import io
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ssl_jax import embed, generate
from ssl_jax.data import bpe, tokenize
from ssl_jax.data import tokenizer as wordpiece_lib
from ssl_jax.eval import fewshot, summarize
from ssl_jax.interop import export
from ssl_jax.interop.pretrained import load_pretrained
from ssl_jax.models.gpt import GptLM
from tests.conftest import ROOT, run_main, tiny_config

SUMMARIES = os.path.join(ROOT, "tests/fixtures/summaries.jsonl")
LAYERS, HIDDEN, HEADS, INNER, POSITIONS, EPS = 2, 48, 3, 136, 96, 1e-5
EOT_ID = 50256


def _hf_gpt2_tensors(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel's state dict as transformers saves it: "transformer." names, Conv1D
    weights [in, out], the causal-mask buffer attn.bias, no lm_head (tied to wte)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape, scale=0.2: (scale * rng.standard_normal(shape)).astype(np.float32)
    t = {"wte.weight": normal(vocab, HIDDEN), "wpe.weight": normal(POSITIONS, HIDDEN),
         "ln_f.weight": 1 + normal(HIDDEN), "ln_f.bias": normal(HIDDEN)}
    for i in range(LAYERS):
        h = f"h.{i}."
        t.update({h + "ln_1.weight": 1 + normal(HIDDEN), h + "ln_1.bias": normal(HIDDEN),
                  h + "attn.c_attn.weight": normal(HIDDEN, 3 * HIDDEN),
                  h + "attn.c_attn.bias": normal(3 * HIDDEN),
                  h + "attn.c_proj.weight": normal(HIDDEN, HIDDEN),
                  h + "attn.c_proj.bias": normal(HIDDEN),
                  h + "ln_2.weight": 1 + normal(HIDDEN), h + "ln_2.bias": normal(HIDDEN),
                  h + "mlp.c_fc.weight": normal(HIDDEN, INNER), h + "mlp.c_fc.bias": normal(INNER),
                  h + "mlp.c_proj.weight": normal(INNER, HIDDEN),
                  h + "mlp.c_proj.bias": normal(HIDDEN),
                  h + "attn.bias": np.tril(np.ones((POSITIONS, POSITIONS), np.float32))[None, None]})
    return {"transformer." + k: v for k, v in t.items()}


def _hf_config(vocab: int) -> dict:
    """A config.json as recent transformers writes it (no n_ctx, n_inner not 4 x n_embd)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
            "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_inner": INNER,
            "n_positions": POSITIONS, "activation_function": "gelu_new",
            "layer_norm_epsilon": EPS, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
            "initializer_range": 0.02, "bos_token_id": EOT_ID, "eos_token_id": EOT_ID,
            "scale_attn_weights": True, "reorder_and_upcast_attn": False, "use_cache": True,
            "summary_type": "cls_index", "torch_dtype": "float32",
            "transformers_version": "4.46.0"}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, gpt2_bpe_dir):
    """(HF GPT-2 dir with vocab.json + merges.txt, the same with tokenizer.json instead,
    the raw tensors without their prefix)."""
    root = tmp_path_factory.mktemp("hf_gpt2")
    vocab = bpe.gpt2_bpe(gpt2_bpe_dir).vocab_size
    tensors = _hf_gpt2_tensors(vocab)
    files = root / "files"
    os.makedirs(files)
    save_file(tensors, str(files / "model.safetensors"), metadata={"format": "pt"})
    (files / "config.json").write_text(json.dumps(_hf_config(vocab)))
    shutil.copy(os.path.join(gpt2_bpe_dir, "encoder.json"), files / "vocab.json")
    shutil.copy(os.path.join(gpt2_bpe_dir, "vocab.bpe"), files / "merges.txt")
    fast = root / "fast"
    os.makedirs(fast)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(files / name, fast / name)
    _fast_tokenizer_file(gpt2_bpe_dir, str(fast / "tokenizer.json"))
    raw = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in tensors.items()}
    return str(files), str(fast), raw


def _fast_tokenizer_file(gpt2_bpe_dir: str, path: str) -> None:
    """GPT-2's tokenizer.json as transformers' fast tokenizer writes it: byte-level BPE with
    a ByteLevel post-processor and "<|endoftext|>" an added special token."""
    from tokenizers import processors

    tokenizer = bpe.gpt2_bpe(gpt2_bpe_dir).tokenizer
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.save(path)


def _numpy_gpt2(t: dict, ids: list[int]) -> np.ndarray:
    """GPT-2's forward pass in float64 NumPy (pre-LN blocks, causal attention, gelu_new,
    final LayerNorm, output tied to wte) -> logits [len(ids), vocab]."""
    def layer_norm(x, name):
        centred = x - x.mean(-1, keepdims=True)
        return (centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + EPS)
                * t[name + ".weight"] + t[name + ".bias"])

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    n, head_dim = len(ids), HIDDEN // HEADS
    x = t["wte.weight"][ids] + t["wpe.weight"][np.arange(n)]
    for i in range(LAYERS):
        h = f"h.{i}."
        qkv = layer_norm(x, h + "ln_1") @ t[h + "attn.c_attn.weight"] + t[h + "attn.c_attn.bias"]
        heads = []
        for head in range(HEADS):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            q, k, v = (qkv[:, part * HIDDEN:(part + 1) * HIDDEN][:, cols] for part in range(3))
            scores = q @ k.T / np.sqrt(head_dim)
            scores[np.triu_indices(n, 1)] = -np.inf
            weights = np.exp(scores - scores.max(1, keepdims=True))
            heads.append(weights / weights.sum(1, keepdims=True) @ v)
        x = x + np.concatenate(heads, 1) @ t[h + "attn.c_proj.weight"] + t[h + "attn.c_proj.bias"]
        hidden = gelu_new(layer_norm(x, h + "ln_2") @ t[h + "mlp.c_fc.weight"]
                          + t[h + "mlp.c_fc.bias"])
        x = x + hidden @ t[h + "mlp.c_proj.weight"] + t[h + "mlp.c_proj.bias"]
    return layer_norm(x, "ln_f") @ t["wte.weight"].T


def test_the_import_equals_a_numpy_gpt2(hf_dir):
    files, _, raw = hf_dir
    pretrained = load_pretrained(files)
    assert pretrained.kind == "gpt" and pretrained.tokenizer.eot_id == EOT_ID
    c = pretrained.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.mlp_dim, c.max_len) == (
        LAYERS, HIDDEN, HEADS, INNER, POSITIONS)
    ids = pretrained.tokenizer.encode("Hello world, the quick brown fox")
    ours = np.asarray(GptLM(c).apply({"params": pretrained.params}, jnp.asarray([ids])))[0]
    assert np.abs(ours - _numpy_gpt2(raw, ids)).max() < 1e-4


def test_older_gpt2_files_load_the_same(hf_dir, tmp_path):
    """No "transformer." prefix, lm_head.weight stored (= wte), masked_bias and n_ctx (as in
    OpenAI's converted checkpoints): the same params; an untied lm_head is refused."""
    files, _, _ = hf_dir
    tensors = {k.removeprefix("transformer."): v
               for k, v in load_file(os.path.join(files, "model.safetensors")).items()}
    tensors["lm_head.weight"] = tensors["wte.weight"]
    tensors["h.0.attn.masked_bias"] = np.float32([-1e4])
    old = tmp_path / "old"
    shutil.copytree(files, old)
    save_file(tensors, str(old / "model.safetensors"))
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "n_ctx": POSITIONS}))
    new, older = load_pretrained(files), load_pretrained(str(old))
    assert older.config == new.config
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params),
                                                    jax.tree.leaves(older.params)))
    tensors["lm_head.weight"] = tensors["wte.weight"] + 1
    save_file(tensors, str(old / "model.safetensors"))
    with pytest.raises(ValueError, match="lm_head.weight differs from wte.weight"):
        load_pretrained(str(old))


def _greedy(config, params, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding without a cache: the whole sequence's logits each step (right-padded
    to one width: causal, so the padding changes nothing before it), argmax at the last real
    position; stops at the end-of-text token (excluded)."""
    forward = jax.jit(GptLM(config).apply)
    new = []
    for _ in range(steps):
        sequence = ids + new
        padded = np.zeros((1, len(ids) + steps), np.int32)
        padded[0, :len(sequence)] = sequence
        logits = forward({"params": params}, jnp.asarray(padded))
        token = int(np.argmax(np.asarray(logits)[0, len(sequence) - 1]))
        if token == EOT_ID:
            break
        new.append(token)
    return new


def test_generate_model_hf_dir_equals_an_independent_greedy_loop(hf_dir, capsys):
    files, fast, _ = hf_dir
    prompt, steps = "The meaning of life is", 5
    outputs = []
    for directory in (files, fast):
        done = run_main(capsys, generate.main, "--model", directory, "--prompt", prompt,
                        "--max-new-tokens", steps)
        assert done.returncode == 0, done.stderr
        outputs.append(json.loads(done.stdout.splitlines()[-1])["completions"])
    pretrained = load_pretrained(files)
    tokens = _greedy(pretrained.config, pretrained.params,
                     pretrained.tokenizer.encode(prompt), steps)
    assert len(tokens) >= 1
    assert outputs[0] == outputs[1] == [pretrained.tokenizer.decode(tokens)]


def test_tokenizer_json_gives_the_ids_of_vocab_and_merges(hf_dir, capsys, monkeypatch):
    files, fast, _ = hf_dir
    texts = ["Hello world", " caf\u00e9  123\n", "a<|endoftext|>b"]
    stdin = "".join(json.dumps(t) + "\n" for t in texts).encode()
    ids = []
    for directory in (files, fast):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        done = run_main(capsys, tokenize.main, "--model", directory)
        assert done.returncode == 0, done.stderr
        ids.append([json.loads(line) for line in done.stdout.splitlines()])
    assert ids[0] == ids[1] and ids[0][0] == [15496, 995] and EOT_ID in ids[0][2]
    assert load_pretrained(fast).tokenizer.eot_id == EOT_ID


# --- workdirs and their HF exports ------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    """(a gpt_pretrain workdir with a random checkpoint, its HF export)."""
    from ssl_jax import config as config_lib
    from ssl_jax.models.gpt import gpt_config
    from tests.test_interop import TEXTS, _fake_run

    root = tmp_path_factory.mktemp("gpt_run")
    run = config_lib.load_config(os.path.join(ROOT, "experiments/gpt/pretrain.py:gpt-tiny"),
                                 [("model.hidden_size", "32"), ("model.mlp_dim", "64"),
                                  ("model.max_len", "64")])
    tokenizer = bpe.train_bpe([t * 3 for t in TEXTS] * 4 + ["1 2 3 4 5 6 7 8 9 0 + - = ?"], 300)
    config = gpt_config(run.model, tokenizer.vocab_size)
    _fake_run(str(root / "run"), run, GptLM(config), (jnp.zeros((1, 4), jnp.int32),),
              tokenizer.save, losses=[1.0])
    assert export.main(["--model", str(root / "run"), "--output", str(root / "hf")]) == 0
    return str(root / "run"), str(root / "hf")


def test_fewshot_gives_equal_numbers_on_a_run_and_its_export(gpt_run, capsys):
    run, hf = gpt_run
    before = sorted(os.listdir(hf))
    rows = []
    for directory in (run, hf):
        done = run_main(capsys, fewshot.main, "--model", directory, "--tasks", "arithmetic_2d+",
                        "--shots", "0", "--num-examples", "2")
        assert done.returncode == 0, done.stderr
        rows.append(json.loads(done.stdout.splitlines()[-1])["rows"])
    assert rows[0] == rows[1] and rows[0][0]["results"][0]["scored"] == 2
    assert os.path.exists(os.path.join(run, "fewshot.json"))
    assert sorted(os.listdir(hf)) == before  # an HF directory is left as it is


@pytest.mark.slow
def test_summarize_gives_equal_numbers_on_a_run_and_its_export(gpt_run, capsys, tmp_path):
    run, hf = gpt_run
    before = sorted(os.listdir(hf))
    results = []
    for directory in (run, hf):
        done = run_main(capsys, summarize.main, "--model", directory, "--data", SUMMARIES,
                        "--num-articles", "1", "--max-new-tokens", "4",
                        "--output", tmp_path / "s.json")
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.splitlines()[-1]))
        assert json.loads((tmp_path / "s.json").read_text()) == results[-1]
    assert results[0]["scores"] == results[1]["scores"]
    assert [e["TL;DR"] for e in results[0]["examples"]] == [
        e["TL;DR"] for e in results[1]["examples"]]
    assert sorted(os.listdir(hf)) == before


@pytest.mark.slow
def test_fewshot_scramble_words_on_an_hf_dir(gpt_run, capsys, tmp_path):
    _, hf = gpt_run
    words = tmp_path / "words.txt"
    words.write_text("apple banana cherry orange lemon melon grape " * 3 + "\n")
    done = run_main(capsys, fewshot.main, "--workdir", hf, "--shots", "0", "--num-examples", "1",
                    "--tasks", "cl", "--words", words)
    assert done.returncode == 0, done.stderr
    row, = json.loads(done.stdout.splitlines()[-1])["rows"]
    result = row["results"][0]  # the words are --words' (an HF directory has no corpus)
    assert row["task"] == "cl" and result["scored"] + result["too_long"] == 1


def test_model_and_workdir_are_one_argument(gpt_run, capsys):
    _, hf = gpt_run
    for command in (generate, fewshot, summarize, export):
        with pytest.raises(SystemExit):
            command.main(["--model", hf, "--workdir", hf])
        assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """(a bert_pretrain workdir with a random checkpoint, its HF export)."""
    from ssl_jax.models.bert import BertForPreTraining, bert_config
    from tests.test_interop import _fake_run, _wordpiece

    root = tmp_path_factory.mktemp("bert_run")
    run = tiny_config()
    wp = _wordpiece(str(root / "vocab"))
    config = bert_config(run.model, wp.vocab_size)
    ids = jnp.zeros((1, 4), jnp.int32)
    _fake_run(str(root / "run"), run, BertForPreTraining(config), (ids, ids, ids),
              lambda d: wordpiece_lib.save(wp, d), losses=[1.0])
    assert export.main(["--workdir", str(root / "run"), "--output", str(root / "hf")]) == 0
    return str(root / "run"), str(root / "hf")


def test_embed_and_tokenize_on_a_run_and_its_export(bert_run, capsys, monkeypatch, tmp_path):
    run, hf = bert_run
    sentences = tmp_path / "s.txt"
    sentences.write_text("the man is playing guitar\nhello world\n")
    stdin = b'"The man is playing guitar, hello world!"\n'
    embeddings, ids = [], []
    for n, directory in enumerate((run, hf)):
        out = tmp_path / f"e{n}.npy"
        done = run_main(capsys, embed.main, "--model", directory, "--input", sentences,
                        "--output", out)
        assert done.returncode == 0, done.stderr
        embeddings.append(np.load(out))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        done = run_main(capsys, tokenize.main, "--model", directory)
        assert done.returncode == 0, done.stderr
        ids.append(json.loads(done.stdout))
    assert embeddings[0].shape == (2, 128) and np.array_equal(embeddings[0], embeddings[1])
    vocab = dict(enumerate(open(os.path.join(hf, "vocab.txt")).read().split()))
    assert ids[0] == ids[1] and [vocab[i] for i in ids[0]][:3] == ["the", "man", "is"]


def test_bad_models_fail_in_one_line(hf_dir, bert_run, gpt_run, tmp_path, capsys):
    files, _, _ = hf_dir
    run, hf_bert = bert_run
    os.makedirs(tmp_path / "noconfig")
    gpt_needed = "generation and scoring need a GPT (a gpt_pretrain run or an HF GPT-2 directory)"
    cases = [
        (generate, ["--model", tmp_path / "missing", "--prompt", "x"], "is not a directory"),
        (generate, ["--model", tmp_path / "noconfig", "--prompt", "x"], "has no config.json"),
        (generate, ["--model", hf_bert, "--prompt", "x"], "is an HF BERT checkpoint; "
         + gpt_needed),
        (generate, ["--workdir", run, "--prompt", "x"], "is a 'bert_pretrain' run; " + gpt_needed),
        (fewshot, ["--model", hf_bert], "is an HF BERT checkpoint; " + gpt_needed),
        (summarize, ["--model", hf_bert, "--data", SUMMARIES], "is an HF BERT checkpoint"),
        (embed, ["--model", files, "--input", SUMMARIES, "--output", tmp_path / "e.npy"],
         "is an HF GPT-2 checkpoint; sentence embeddings need a BERT (a bert_pretrain run"),
        (export, ["--model", tmp_path / "missing", "--output", tmp_path / "out"],
         "is not a directory"),
    ]
    for command, argv, message in cases:
        done = run_main(capsys, command.main, *argv)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (argv, done.stderr)
        assert lines[0].startswith("error: ") and message in lines[0], (argv, lines[0])
