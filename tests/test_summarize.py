"""Zero-shot summarisation (GPT-2 section 3.6): data, prompts, baselines, ROUGE, evaluate, CLI."""
import importlib
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from rouge_score import rouge_scorer

from ssl_jax.data import corpora
from ssl_jax.eval import generation, summarize

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "summaries.jsonl")


class WordTokenizer:
    """Whitespace words as tokens: enough to count and cut prompts in pure-function tests."""

    def __init__(self):
        self.vocab, self.words = {}, []

    def encode(self, text):
        ids = []
        for word in text.split():
            if word not in self.vocab:
                self.vocab[word] = len(self.words)
                self.words.append(word)
            ids.append(self.vocab[word])
        return ids

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


class CharTokenizer:
    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class EchoModel:
    """A deterministic stand-in with the LanguageModel interface. After a TL;DR prompt it
    "generates" the prompt's first sentence and then fixed sentences; without the hint, fixed
    text. It records every call."""

    def __init__(self, max_len):
        self.max_len, self.tokenizer, self.calls = max_len, WordTokenizer(), []

    def generate(self, prompts, *, max_new_tokens, sampling=None, stop=None, seed=0):
        self.calls.append(dict(prompts=list(prompts), max_new_tokens=max_new_tokens,
                               sampling=sampling, stop=stop, seed=seed))
        return [" " + corpora.split_sentences(p)[0] + " It was news. Readers agreed. Also this."
                if p.endswith("\nTL;DR:") else " Nothing to add\nat all. Really."
                for p in prompts]


# ----------------------------------------------------------------------------- ROUGE

def test_rouge_equals_rouge_score_and_hand_computation():
    # prediction: police arrested the man                      (4 tokens)
    # reference:  the man was arrested by police on friday     (8 tokens; stems agree)
    # ROUGE-1: overlap {police, arrested, the, man} = 4; P = 4/4, R = 4/8, F1 = 2/3
    # ROUGE-2: prediction bigrams police-arrested, arrested-the, the-man (3), reference has
    #          7 bigrams; overlap {the-man} = 1; P = 1/3, R = 1/7, F1 = (2/21)/(10/21) = 0.2
    # ROUGE-L: LCS "the man" = 2; P = 2/4, R = 2/8, F1 = (1/4)/(3/4) = 1/3
    scores = summarize.rouge(["police arrested the man"],
                             ["the man was arrested by police on friday"])
    assert scores["rouge1"] == pytest.approx(2 / 3)
    assert scores["rouge2"] == pytest.approx(0.2)
    assert scores["rougeL"] == pytest.approx(1 / 3)

    predictions = ["Police arrested the man.\nHe was 42.", "The cats were sitting on mats.",
                   "", "Rain fell all day.\nRoads flooded.\nSchools closed."]
    references = ["The man was arrested by police on Friday.\nHe is 42 years old.",
                  "A cat sat on the mat.", "Nothing was predicted.",
                  "Schools closed after rain.\nFlooded roads closed the town centre."]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"],
                                      use_stemmer=True)
    expected = {m: np.mean([scorer.score(r, p)[m].fmeasure
                            for p, r in zip(predictions, references)])
                for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    assert summarize.rouge(predictions, references) == pytest.approx(expected)
    assert expected["rougeLsum"] != pytest.approx(expected["rougeL"])  # lines matter there
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        summarize.rouge(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="prediction 1 is a list"):
        summarize.rouge(["a", ["b"]], ["a", "b"])


# ----------------------------------------------------------------------------- summaries

ARTICLE = ("Alpha opened the meeting. Bravo read the minutes! Charlie asked a question? "
           "Delta answered it.\nEcho closed the door. Foxtrot went home.")
SENTENCES = ["Alpha opened the meeting.", "Bravo read the minutes!", "Charlie asked a question?",
             "Delta answered it.", "Echo closed the door.", "Foxtrot went home."]


def test_lead_and_random_sentences():
    assert summarize.sentences_of(ARTICLE) == SENTENCES
    assert summarize.lead_sentences(ARTICLE) == SENTENCES[:3]
    picks = [summarize.random_sentences(ARTICLE, 3, np.random.default_rng([seed, 0]))
             for seed in range(8)]
    for pick in picks:
        indices = [SENTENCES.index(s) for s in pick]
        assert len(set(indices)) == 3 and indices == sorted(indices)  # distinct, article order
    assert picks[0] == summarize.random_sentences(ARTICLE, 3, np.random.default_rng([0, 0]))
    assert len({tuple(p) for p in picks}) > 1  # the seed matters
    assert summarize.random_sentences("One. Two.", 3, np.random.default_rng(0)) == ["One.",
                                                                                      "Two."]


def test_first_three_generated_sentences():
    generated = " The man was arrested. He is 42! Police said more. Then a fourth."
    assert corpora.split_sentences(generated) == [generated.strip()]  # why lines are stripped
    assert summarize.first_sentences(generated) == ["The man was arrested.", "He is 42!",
                                                   "Police said more."]
    assert summarize.first_sentences(" Short one.\nA bullet without period\nThree. Four.") == [
        "Short one.", "A bullet without period", "Three."]
    assert summarize.first_sentences("  \n") == []


def test_prompt_ends_with_hint_and_fits_the_context():
    tokenizer = WordTokenizer()
    article = " ".join(f"w{i}" for i in range(50))
    prompt = summarize.build_prompt(article, tokenizer, max_len=30, max_new_tokens=10)
    assert prompt.endswith("\nTL;DR:")
    assert len(tokenizer.encode(prompt)) == 20  # = max_len - max_new_tokens
    assert prompt == " ".join(f"w{i}" for i in range(19)) + "\nTL;DR:"  # the beginning kept
    short = "A short article."
    assert summarize.build_prompt(short, tokenizer, max_len=30, max_new_tokens=10) == (
        short + "\nTL;DR:")
    chars = summarize.build_prompt("x" * 100, CharTokenizer(), max_len=50, max_new_tokens=10)
    assert chars == "x" * 33 + "\nTL;DR:" and len(chars) == 40
    with pytest.raises(ValueError, match="alone is more than 5 tokens"):
        summarize.build_prompt(article, CharTokenizer(), max_len=15, max_new_tokens=10)


# ----------------------------------------------------------------------------- data

def test_jsonl_fixture_and_reader_errors(tmp_path):
    articles = summarize.load_articles(FIXTURE)
    assert len(articles) == 5
    assert articles[0].text.startswith("(CNN) -- A small coastal town in northern Norway")
    assert summarize.sentences_of(articles[0].highlights)[0] == (
        "A Norwegian town has opened a library on a converted fishing boat.")
    assert len(summarize.load_articles(FIXTURE, limit=2)) == 2

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"article": "A.", "highlights": "B."}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not valid JSON"):
        summarize.load_articles(str(bad))
    bad.write_text('{"article": "A.", "highlights": "B."}\n\n{"article": "C."}\n')
    with pytest.raises(ValueError, match="bad.jsonl:3 has no string field 'highlights'"):
        summarize.load_articles(str(bad))
    bad.write_text('["A.", "B."]\n')
    with pytest.raises(ValueError, match="bad.jsonl:1 is not a JSON object"):
        summarize.load_articles(str(bad))
    bad.write_text("\n")
    with pytest.raises(ValueError, match="holds no article"):
        summarize.load_articles(str(bad))
    with pytest.raises(FileNotFoundError, match="no such file"):
        summarize.load_articles(str(tmp_path / "none.jsonl"))
    with pytest.raises(ValueError, match="neither tfds:NAME"):
        summarize.load_articles("articles.txt")


class CnnDailymailStandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Files in the layout and features of a locally prepared cnn_dailymail (v3.4.0)."""

    name = "cnn_dailymail"
    VERSION = tfds.core.Version("3.4.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"article": tfds.features.Text(), "highlights": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples(3)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"article": f"Story {i} begins. It ends.", "highlights": f"Story {i} .\nEnd ."}


def test_tfds_prepared_locally(tmp_path):
    tfds.disable_progress_bar()
    CnnDailymailStandIn(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
    articles = summarize.load_articles("tfds:cnn_dailymail", data_dir=str(tmp_path))  # test split
    assert sorted(a.text for a in articles) == [f"Story {i} begins. It ends." for i in range(3)]
    assert all(a.highlights == f"{a.text[:7]} .\nEnd ." for a in articles)  # bytes decoded
    assert len(summarize.load_articles("tfds:cnn_dailymail:test", limit=2,
                                       data_dir=str(tmp_path))) == 2
    with pytest.raises(ValueError, match="tfds build cnn_dailymail --data_dir"):
        summarize.load_articles("tfds:cnn_dailymail:validation", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"split 'test' is prepared under .*Prepare it first"):
        summarize.load_articles("tfds:cnn_dailymail", data_dir=str(tmp_path / "empty"))


def test_tfds_mock_data():
    # mock_data mocks a registered builder; `import tensorflow_datasets` leaves the catalog
    # unregistered (lazy imports), so register it by importing the module.
    importlib.import_module("tensorflow_datasets.summarization")

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        articles = summarize.load_articles("tfds:cnn_dailymail:test", limit=3)
        source = tfds.data_source("cnn_dailymail", split="test")
        assert [(a.text, a.highlights) for a in articles] == [
            (source[i]["article"], source[i]["highlights"]) for i in range(3)]
        assert len(summarize.load_articles("tfds:cnn_dailymail:test")) == 4
    assert all(isinstance(a.text, str) and a.text for a in articles)


# ----------------------------------------------------------------------------- evaluate

def _expected_scores(articles, seed=0):
    """Each method's summaries for EchoModel, written out independently of evaluate()."""
    first = [summarize.lead_sentences(a.text)[0] for a in articles]
    outputs = {
        "TL;DR": [f"{s}\nIt was news.\nReaders agreed." for s in first],
        "no hint": ["Nothing to add\nat all.\nReally."] * len(articles),
        "random-3": ["\n".join(summarize.random_sentences(a.text, 3,
                                                          np.random.default_rng([seed, i])))
                     for i, a in enumerate(articles)],
        "lead-3": ["\n".join(summarize.lead_sentences(a.text)) for a in articles],
    }
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"],
                                      use_stemmer=True)
    scores = {method: {m: np.mean([scorer.score(a.highlights, o)[m].fmeasure
                                   for a, o in zip(articles, outs)])
                       for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
              for method, outs in outputs.items()}
    return outputs, scores


def test_evaluate_end_to_end_with_a_stand_in_model():
    articles = summarize.load_articles(FIXTURE)
    lm = EchoModel(max_len=60)
    results = summarize.evaluate(lm, articles, num_articles=5, max_new_tokens=20, batch_size=2)
    outputs, scores = _expected_scores(articles)
    for method in summarize.METHODS:
        assert results["scores"][method] == pytest.approx(scores[method]), method
    assert results["scores"]["lead-3"]["rouge1"] > results["scores"]["no hint"]["rouge1"]
    assert results["examples"][0]["TL;DR"] == (
        "(CNN) -- A small coastal town in northern Norway has opened the world's first library "
        "that can only be reached by boat.\nIt was news.\nReaders agreed.")
    assert results["examples"][1]["lead-3"] == outputs["lead-3"][1]

    assert [c["seed"] for c in lm.calls] == [0, 2, 4] * 2  # 3 batches per prompted method
    assert all(c["sampling"] == generation.Sampling(temperature=1.0, top_k=2) and
               c["max_new_tokens"] == 20 for c in lm.calls)
    hinted, plain = ([p for c in lm.calls[i:i + 3] for p in c["prompts"]] for i in (0, 3))
    assert all(len(lm.tokenizer.encode(p)) <= 60 - 20 for p in hinted + plain)
    assert [h[:-len("\nTL;DR:")] for h in hinted] == plain  # same article, hint or not
    assert all(len(lm.tokenizer.encode(p)) == 40 for p in hinted)  # articles were truncated

    again = summarize.evaluate(EchoModel(max_len=60), articles, num_articles=5,
                               max_new_tokens=20, batch_size=2)
    assert again == results
    table = summarize.format_table(results).splitlines()
    assert table[0] == "| method | R-1 | R-2 | R-L | articles |"
    lead = results["scores"]["lead-3"]
    assert table[5] == (f"| lead-3 | {100 * lead['rouge1']:.2f} | {100 * lead['rouge2']:.2f} | "
                        f"{100 * lead['rougeL']:.2f} | 5 |")


def test_evaluate_rejects_bad_settings_before_generating():
    lm, articles = EchoModel(max_len=60), summarize.load_articles(FIXTURE)
    for kwargs, message in [(dict(num_articles=6), "only 5 articles"),
                            (dict(num_articles=0), "num_articles=0"),
                            (dict(num_articles=2, top_k=-1), "top_k=-1"),
                            (dict(num_articles=2, batch_size=0), "batch_size=0"),
                            (dict(num_articles=2, max_new_tokens=59), "leaves no room")]:
        with pytest.raises(ValueError, match=message):
            summarize.evaluate(lm, articles, **kwargs)
    assert lm.calls == []


def test_cli_prints_table_then_json_and_writes_files(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(generation.LanguageModel, "from_pretrained",
                        staticmethod(lambda model: EchoModel(max_len=60)))
    (tmp_path / "config.json").write_text('{"task": "gpt_pretrain"}')
    args = ["--workdir", str(tmp_path), "--data", FIXTURE, "--num-articles", "4",
            "--max-new-tokens", "20", "--batch-size", "3"]
    assert summarize.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    results = json.loads(lines[-1])
    assert results["num_articles"] == 4 and results["data"] == FIXTURE
    assert lines[:-1] == summarize.format_table(results).splitlines()
    assert json.loads((tmp_path / "summarize.json").read_text()) == results
    assert (tmp_path / "summarize.md").read_text() == "\n".join(lines[:-1]) + "\n"
    assert sorted(os.listdir(tmp_path)) == ["config.json", "summarize.json", "summarize.md"]

    assert summarize.main(args[:3] + [str(tmp_path / "none.jsonl")]) == 2
    assert summarize.main(args + ["--top-k", "-3"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no such file" in captured.err and "top_k=-3" in captured.err
