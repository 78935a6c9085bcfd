"""Export of fine-tuned BERT models as transformers' BertFor{SequenceClassification,
TokenClassification,QuestionAnswering}: tensor names and shapes as transformers names them,
id2label in the task's labels, a bit-identical re-import with equal logits; transformers' own
logits where installed. (A fine-tuned run through `interop.export` and `load_pretrained`:
tests/test_predict.py, which holds the tiny run.)"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from ssl_jax.data import conll
from ssl_jax.data.tokenizer import SPECIAL_TOKENS, load_vocab
from ssl_jax.interop import hf_bert
from ssl_jax.models.bert import BertConfig
from ssl_jax.models.heads import BertWithHead
from ssl_jax.models.partitioning import init_unboxed

CONFIG = BertConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=24,
                    max_position_embeddings=12, dropout_rate=0.0, attention_dropout_rate=0.0)
HEADS = {"sequence": {"head": "sequence", "labels": ["entailment", "neutral", "contradiction"],
                      "regression": False, "pooling": "pooler"},
         "regression": {"head": "sequence", "labels": None, "regression": True,
                        "pooling": "pooler"},
         "token": {"head": "token", "labels": list(conll.NER_TAGS), "regression": False,
                   "pooling": "pooler"},
         "span": {"head": "span", "labels": None, "regression": False, "pooling": "pooler"}}


def expected_names(head: str, num_layers: int) -> list[str]:
    """transformers' state-dict names of each class (written out by hand, not derived)."""
    names = ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
             "bert.embeddings.LayerNorm.bias"]
    for i in range(num_layers):
        p = f"bert.encoder.layer.{i}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense"):
            names += [p + part + ".weight", p + part + ".bias"]
        names += [p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias",
                  p + "output.LayerNorm.weight", p + "output.LayerNorm.bias"]
    if head == "sequence":  # only BertForSequenceClassification builds BertModel's pooler
        names += ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    out = "qa_outputs" if head == "span" else "classifier"
    return sorted(names + [f"{out}.weight", f"{out}.bias"])


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    words = [f"w{i}" for i in range(CONFIG.vocab_size - len(SPECIAL_TOKENS))]
    path.write_text("".join(t + "\n" for t in list(SPECIAL_TOKENS) + words))
    return load_vocab(str(path))


def outputs_of(head: dict) -> int:
    return 2 if head["head"] == "span" else 1 if head["regression"] else len(head["labels"])


def model_and_params(head: dict, seed: int = 0):
    """The model and random params of its shapes (drawn in NumPy: no init to run)."""
    model = BertWithHead(CONFIG, head["head"], outputs_of(head))
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: init_unboxed(model, jax.random.PRNGKey(0), ids, ids,
                                                 ids))["params"]
    rng = np.random.default_rng(seed)
    return model, jax.tree.map(
        lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def inputs(batch: int = 3, seq: int = 8):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, CONFIG.vocab_size, (batch, seq)).astype(np.int32)
    segments = (np.arange(seq)[None, :] >= 4).astype(np.int32).repeat(batch, 0)
    mask = np.ones((batch, seq), np.int32)
    mask[0, 6:] = 0
    return ids, segments, mask


def export_and_reimport(kind: str, vocab, tmp_path):
    """Saves a random model with HEADS[kind], checks the files and the re-imported params;
    returns (model, params, the re-imported config and params)."""
    head = HEADS[kind]
    model, params = model_and_params(head)
    hf_bert.save(str(tmp_path / "out"), CONFIG, params, vocab, head=head)
    tensors = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(tensors) == expected_names(head["head"], CONFIG.num_layers)
    out = "qa_outputs" if head["head"] == "span" else "classifier"
    assert tensors[f"{out}.weight"].shape == (outputs_of(head), CONFIG.hidden_size)  # [out, in]
    np.testing.assert_array_equal(tensors[f"{out}.weight"], params["classifier"]["kernel"].T)
    hf = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf["architectures"] == [hf_bert.HEAD_CLASSES[head["head"]]]
    if head["labels"]:
        assert hf["id2label"] == {str(i): n for i, n in enumerate(head["labels"])}
        assert hf["label2id"] == {n: i for i, n in enumerate(head["labels"])}
    if head["head"] == "sequence":
        assert hf["problem_type"] == ("regression" if head["regression"]
                                      else "single_label_classification")
        assert len(hf["id2label"]) == outputs_of(head)  # num_labels

    config, back, _ = hf_bert.load(str(tmp_path / "out"))
    if head["head"] != "sequence":  # the pooler is not part of these classes (unused here)
        back["encoder"]["pooler"] = params["encoder"]["pooler"]
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(back),
                                                    jax.tree_util.tree_leaves(params)))
    assert hf_bert.head_of(hf) == {k: head[k] for k in ("head", "labels", "regression")}
    return model, params, config, back


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_each_head_exports_and_reimports_bit_identically(kind, vocab, tmp_path):
    model, params, config, back = export_and_reimport(kind, vocab, tmp_path)
    again = BertWithHead(config, HEADS[kind]["head"], outputs_of(HEADS[kind]))
    np.testing.assert_array_equal(again.apply({"params": back}, *inputs()),
                                  model.apply({"params": params}, *inputs()))


def test_mean_pooling_is_refused(vocab, tmp_path):
    head = dict(HEADS["sequence"], pooling="mean")
    _, params = model_and_params(head)
    with pytest.raises(ValueError, match="finetune.pooling='mean'"):
        hf_bert.save(str(tmp_path / "out"), CONFIG, params, vocab, head=head)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_transformers_gives_our_logits(vocab, tmp_path):
    """Only where transformers + torch are installed (not a requirement: skipped in CI)."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    classes = {"sequence": transformers.AutoModelForSequenceClassification,
               "regression": transformers.AutoModelForSequenceClassification,
               "token": transformers.AutoModelForTokenClassification,
               "span": transformers.AutoModelForQuestionAnswering}
    ids, segments, mask = inputs()
    for kind, head in HEADS.items():
        model, params = model_and_params(head, seed=1)
        hf_bert.save(str(tmp_path / kind), CONFIG, params, vocab, head=head)
        ours = np.asarray(model.apply({"params": params}, ids, segments, mask))
        theirs = classes[kind].from_pretrained(str(tmp_path / kind)).eval()
        with torch.no_grad():
            out = theirs(input_ids=torch.tensor(ids).long(),
                         token_type_ids=torch.tensor(segments).long(),
                         attention_mask=torch.tensor(mask).long())
        got = (np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
               if kind == "span" else out.logits.numpy())
        real = mask.astype(bool) if got.ndim == 3 else np.ones(len(got), bool)
        difference = float(np.max(np.abs(got[real] - ours[real])))
        print(f"{kind}: max |transformers - ours| = {difference:.2e}")
        assert difference < 1e-5, kind
