"""A prepared directory (written by `python -m ssl_jax.data.prepare`), read back:

    DIR/manifest.json          what is in it: kind, the config fields that shaped it, the
                               tokenizer's hash, per split its shards and their counts
    DIR/tokenizer/             the tokenizer the examples were made with
    DIR/<split>-NNNNN-of-MMMMM.array_record   the examples (ssl_jax/data/records.py)
    DIR/<split>_token_counts.npy   token frequencies of the split's text (unigram baselines)

Only the shards the manifest lists are read, and the manifest is written last: a directory
whose preparation was interrupted has no manifest and is refused, never read half-written.
"""
from __future__ import annotations

import hashlib
import json
import os

import grain
import numpy as np

from ssl_jax.data import records
from ssl_jax.data.pretraining import masking_spec

FORMAT = "ssl_jax.prepared/1"
KINDS = ("bert_pretrain", "gpt_pretrain")
PREPARE = "python -m ssl_jax.data.prepare --config ... --output DIR"


def shaping_fields(config) -> dict:
    """The config fields the prepared examples depend on (a run must agree on every one)."""
    data = config.data
    fields = {"task": config.task, "max_seq_len": int(config.max_seq_len),
              "data.vocab_size": int(data.vocab_size)}
    if config.task == "bert_pretrain":
        spec = masking_spec(data, config.max_seq_len)
        fields.update({
            "data.vocab_path": data.get("vocab_path"), "data.lowercase": bool(data.lowercase),
            "data.nsp": bool(data.nsp), "data.masking": data.masking,
            "data.dupe_factor": int(data.dupe_factor),
            "data.short_seq_prob": float(data.short_seq_prob),
            "data.random_next_prob": float(data.random_next_prob),
            "data.mask_rate": float(data.mask_rate),
            "data.mask_token_prob": float(data.mask_token_prob),
            "data.random_token_prob": float(data.random_token_prob),
            "data.max_predictions_per_seq": spec.max_predictions,
            "data.whole_word_masking": bool(data.whole_word_masking)})
    else:
        fields["data.tokenizer_path"] = data.get("tokenizer_path")
    return fields


def corpus_fields(data_config) -> dict:
    """Where the text came from (recorded; a run does not read these again)."""
    return {k: data_config.get(k) for k in ("corpus", "files", "text_key", "data_dir")}


def files_hash(directory: str) -> str:
    """sha256 over the names and bytes of every file in `directory` (sorted)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


class Prepared:
    """One prepared directory, checked against the run's config before anything trains."""

    def __init__(self, directory: str, config, what: str = "config.data.prepared"):
        self.directory = directory
        label = f"{what}={directory!r}"
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"{label} does not exist (prepare it: {PREPARE})")
        path = os.path.join(directory, "manifest.json")
        if not os.path.isfile(path):
            state = ("its preparation did not finish (re-run the same prepare command to "
                     "complete it)" if os.path.exists(os.path.join(directory, "plan.json"))
                     else f"it is not a prepared directory (prepare one: {PREPARE})")
            raise FileNotFoundError(f"{label} has no manifest.json: {state}")
        try:
            with open(path, encoding="utf-8") as f:
                self.manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{label}: manifest.json is unreadable ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{label}: manifest.json has format "
                             f"{self.manifest.get('format')!r}; expected {FORMAT!r}")
        want = shaping_fields(config)
        have = self.manifest["fields"]
        for key, value in want.items():
            if have.get(key) != value:
                raise ValueError(
                    f"{label} was prepared with {key}={have.get(key)!r} but this run has "
                    f"{key}={value!r}: prepare a directory for this config ({PREPARE}) or "
                    f"run with the settings it was made with")
        self.dtype = self.manifest["dtype"]
        self.tokenizer_dir = os.path.join(directory, "tokenizer")
        if files_hash(self.tokenizer_dir) != self.manifest["tokenizer"]["sha256"]:
            raise ValueError(f"{label}: the files in {self.tokenizer_dir!r} are not the "
                             f"tokenizer its examples were made with (hash differs)")

    @property
    def tokenizer_hash(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    def split(self, name: str) -> dict:
        if name not in self.manifest["splits"]:
            raise ValueError(f"prepared directory {self.directory!r} has no split {name!r}; "
                             f"it has {sorted(self.manifest['splits'])}")
        return self.manifest["splits"][name]

    def source(self, name: str) -> grain.sources.ArrayRecordDataSource:
        """The split's records, random access over all its shards, in shard order. Each
        shard is checked (present, its size and record count as the manifest says)."""
        shards = self.split(name)["shards"]
        paths = []
        for shard in shards:
            path = os.path.join(self.directory, shard["file"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"prepared shard {path!r} is missing (the manifest "
                                        f"lists it)")
            size = os.path.getsize(path)
            if size != shard["bytes"]:
                raise ValueError(f"prepared shard {path!r} is corrupt: {size} bytes, the "
                                 f"manifest says {shard['bytes']}")
            paths.append(path)
        if not paths or not self.split(name)["records"]:
            raise ValueError(f"prepared directory {self.directory!r} has no {name} examples "
                             f"(its corpus yields none at this max_seq_len)")
        try:
            source = grain.sources.ArrayRecordDataSource(paths)
        except Exception as e:  # array_record raises RuntimeError/ValueError on a bad file
            raise ValueError(f"a prepared shard of {self.directory!r} is corrupt: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                             ) from None
        if len(source) != self.split(name)["records"]:
            raise ValueError(f"prepared directory {self.directory!r}: its {name} shards hold "
                             f"{len(source)} records, the manifest says "
                             f"{self.split(name)['records']} (a shard is corrupt)")
        return source

    def token_counts(self, name: str) -> np.ndarray:
        return np.load(os.path.join(self.directory, f"{name}_token_counts.npy"))

    # decoders of this directory's records
    def bert_decoder(self, *, masked: bool, max_predictions: int, pad_id: int,
                     max_seq_len: int):
        dtype = self.dtype
        if masked:
            return lambda record: records.decode_example(record, dtype, max_predictions,
                                                         pad_id, max_seq_len)
        return lambda record: records.decode_instance(record, dtype)

    def gpt_decoder(self):
        dtype = self.dtype
        return lambda record: records.decode_window(record, dtype)


def open_all(config) -> list[tuple[str, float, Prepared]]:
    """(name, weight, Prepared) of `data.prepared` (one, weight 1) or of each source of
    `data.mixture`; a mixture's sources must share one tokenizer."""
    data = config.data
    mixture = parse_mixture(data.get("mixture"))
    if mixture and data.get("prepared"):
        raise ValueError("set config.data.prepared or config.data.mixture, not both")
    if not mixture:
        return [("prepared", 1.0, Prepared(data.prepared, config))]
    out = [(name, weight, Prepared(path, config, f"config.data.mixture source {name!r}"))
           for name, weight, path in mixture]
    first = out[0][2]
    for name, _, prepared in out[1:]:
        if prepared.tokenizer_hash != first.tokenizer_hash:
            raise ValueError(f"config.data.mixture: source {name!r} was made with another "
                             f"tokenizer than {out[0][0]!r}; every source needs the same one "
                             f"(prepare them with one data.vocab_path / data.tokenizer_path)")
    return out


def train_view(entries) -> tuple[dict, np.ndarray, dict]:
    """What a task takes from `open_all`'s entries: each source's train records by name,
    their summed training-token counts (the unigram baselines), and each source's split
    sizes for the report."""
    sources = {name: p.source("train") for name, _, p in entries}
    counts = sum(p.token_counts("train") for _, _, p in entries)
    sizes = {name: {s: {k: p.split(s)[k] for k in ("documents", "tokens", "records")}
                    for s in ("train", "validation")}
             for name, _, p in entries}
    return sources, counts, sizes


def origins(entries) -> dict:
    """Where each source's text came from (its manifest's corpus fields) and its directory."""
    return {name: dict(p.manifest["corpus"], prepared=p.directory) for name, _, p in entries}


def parse_mixture(value) -> list[tuple[str, float, str]]:
    """`data.mixture` -> [(name, weight normalised to sum 1, dir)]. Accepts 'DIR:W,DIR:W'
    (the command line) or a list of (dir, weight) pairs (a config file). The name is the
    directory's base name."""
    if value in (None, "", [], ()):
        return []
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            path, sep, weight = item.strip().rpartition(":")
            if not sep or not path:
                raise ValueError(f"config.data.mixture={value!r}: {item!r} is not DIR:WEIGHT")
            pairs.append((path, weight))
    else:
        pairs = list(value)
    parsed = []
    for pair in pairs:
        try:
            path, weight = pair
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"config.data.mixture={value!r}: {pair!r} is not (DIR, WEIGHT)"
                             ) from None
        if not weight > 0:
            raise ValueError(f"config.data.mixture={value!r}: weight {weight} of {path!r} "
                             f"must be > 0")
        parsed.append((str(path), weight))
    if len(parsed) < 2:
        raise ValueError(f"config.data.mixture={value!r} has one source; use "
                         f"config.data.prepared for one directory")
    total = sum(w for _, w in parsed)
    names = [os.path.basename(os.path.normpath(p)) for p, _ in parsed]
    if len(set(names)) != len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    return [(n, w / total, p) for n, (p, w) in zip(names, parsed)]
