"""Prepares a pre-training config's corpus once, into ArrayRecord shards that training streams.

    python -m ssl_jax.data.prepare --config experiments/bert/pretrain.py:mini --output data/bert_mini
    python -m ssl_jax.data.prepare --config experiments/gpt/pretrain.py:corpus=files,files='text/*.txt' \\
        --output data/gpt_text --workers 4
    python launch.py --config experiments/bert/pretrain.py:mini --workdir runs/bert_mini \\
        --config.data.prepared=data/bert_mini

The tokenizer is trained (or loaded: data.vocab_path / data.tokenizer_path) once and copied
into DIR/tokenizer; then worker processes write the shards, `--shard-size` documents each:
  * BERT: sentence-pair instances exactly as the in-memory path builds them (every draw is
    keyed by seed, copy and document: the examples do not depend on the shard size or the
    number of workers). A random-next B segment comes from any document of the corpus: each
    worker holds the whole split open (random access to the TFDS document source) and
    tokenises the document it draws. Static masking writes `data.dupe_factor` masked copies;
    dynamic masking writes the unmasked instances (masked when read, every epoch anew).
  * GPT: two passes. Each document shard is tokenised into DIR/parts/ (the stream
    EOT doc EOT doc ...); then the stream, continuous across shards, is cut into windows of
    max_seq_len + 1 tokens (consecutive windows share one token, as in memory), with the
    documents' ids for data.mask_documents.
Both splits of the corpus are prepared (train and the held-out validation split).

Resumable and atomic: a shard is written under a temporary name and renamed when complete,
then its record (DIR/parts/*.json) is written; a re-run of the same command skips finished
shards. DIR/manifest.json is written last: training refuses a directory without one.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from ssl_jax.data import bpe, corpora, pretraining, records, tokenizer
from ssl_jax.data.masking import mask_tokens
from ssl_jax.data.prepared import FORMAT, KINDS, corpus_fields, files_hash, shaping_fields
from ssl_jax.files import write_atomic

USAGE_ERROR = 2
DEFAULT_SHARD_SIZE = 1000  # documents per shard
SPLITS = ("train", "validation")
WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheap random access


def check(config) -> None:
    """The checks that need no data (bad input fails before anything is read or written)."""
    if config.task not in KINDS:
        raise ValueError(f"config task {config.task!r} has no prepared data; expected one of "
                         f"{list(KINDS)} (or a transfer config, whose pretrain is prepared)")
    if config.data.get("prepared") or config.data.get("mixture"):
        raise ValueError("config.data.prepared / config.data.mixture is set: prepare reads "
                         "the corpus; set them when training on what it wrote")
    if config.task == "bert_pretrain":
        if config.max_seq_len < 8:
            raise ValueError(f"max_seq_len={config.max_seq_len} is too short (>= 8)")
        if config.data.masking not in ("static", "dynamic"):
            raise ValueError(f"data.masking={config.data.masking!r}; expected 'static' or "
                             f"'dynamic'")
        if config.data.dupe_factor < 1:
            raise ValueError(f"data.dupe_factor={config.data.dupe_factor} must be >= 1")
        for name in ("short_seq_prob", "random_next_prob"):
            if not 0.0 <= config.data[name] <= 1.0:
                raise ValueError(f"data.{name}={config.data[name]} must be in [0, 1]")
    elif config.max_seq_len < 2:
        raise ValueError(f"max_seq_len={config.max_seq_len} must be >= 2")
    shaping_fields(config)  # validates the masking rates


def plan_of(config, shard_size: int) -> dict:
    """What a preparation makes: a re-run with the same plan resumes it."""
    return {"format": FORMAT, "kind": config.task, "fields": shaping_fields(config),
            "corpus": corpus_fields(config.data), "seed": int(config.seed),
            "shard_size": shard_size}


def prepare(config, output: str, *, workers: int = 1, shard_size: int = DEFAULT_SHARD_SIZE,
            log=lambda message: print(message, file=sys.stderr)) -> dict:
    """Prepares `config`'s corpus into `output`; returns the manifest."""
    check(config)
    if workers < 1:
        raise ValueError(f"--workers={workers} must be >= 1")
    if shard_size < 1:
        raise ValueError(f"--shard-size={shard_size} must be >= 1")
    plan = plan_of(config, shard_size)
    _claim(output, plan)
    manifest_path = os.path.join(output, "manifest.json")
    if os.path.exists(manifest_path):
        log(f"{output} is already prepared (manifest.json); nothing to do")
        with open(manifest_path, encoding="utf-8") as f:
            return json.load(f)
    started = time.time()
    os.makedirs(os.path.join(output, "parts"), exist_ok=True)
    for stale in glob.glob(os.path.join(output, ".*.tmp-*")):  # an interrupted writer's
        os.remove(stale)
    documents = {split: corpora.Documents(config.data, split) for split in SPLITS}
    tok = _tokenizer(config, output, documents["train"])
    tokenizer_done = time.time()
    vocab_size = tok.vocab_size
    dtype = records.record_dtype(vocab_size, config.max_seq_len)
    jobs = {split: [dict(split=split, index=i, start=start,
                         stop=min(start + shard_size, len(documents[split])))
                    for i, start in enumerate(range(0, len(documents[split]), shard_size))]
            for split in SPLITS}
    context = dict(config=config.to_json(), output=output, dtype=dtype, shard_size=shard_size)
    with _Pool(workers, context) as pool:
        if config.task == "bert_pretrain":  # each pass over both splits at once
            pool.run("sentences", jobs, log)
            done = pool.run("bert", jobs, log)
        else:
            tokens = pool.run("tokens", jobs, log)
            done = pool.run("windows", {split: _window_jobs(split, tokens[split],
                                                            config.max_seq_len)
                                        for split in SPLITS}, log)
    splits = {}
    for split in SPLITS:
        counts = np.zeros(vocab_size, np.int64)
        for i in range(len(jobs[split])):
            counts += np.load(os.path.join(output, "parts", f"{split}-{i:05d}.counts.npy"))
        np.save(os.path.join(output, f"{split}_token_counts.npy"), counts)
        shards = [{k: d[k] for k in ("file", "records", "bytes")} for d in done[split]]
        splits[split] = {"shards": shards, "records": sum(s["records"] for s in shards),
                         "documents": len(documents[split]), "tokens": int(counts.sum())}
        if config.task == "gpt_pretrain":
            splits[split]["targets"] = sum(d["targets"] for d in done[split])
    manifest = dict(plan, dtype=dtype, splits=splits,
                    tokenizer={"files": sorted(os.listdir(os.path.join(output, "tokenizer"))),
                               "sha256": files_hash(os.path.join(output, "tokenizer")),
                               "vocab_size": vocab_size},
                    seconds=round(time.time() - started, 2),
                    setup_seconds=round(tokenizer_done - started, 2),  # corpus index + tokenizer
                    shard_seconds=round(time.time() - tokenizer_done, 2), workers=workers)
    write_atomic(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return manifest


def _claim(output: str, plan: dict) -> None:
    """Makes `output` this preparation's: new or empty, or one started with the same plan."""
    plan_path = os.path.join(output, "plan.json")
    if os.path.exists(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            before = json.load(f)
        for key in sorted(set(plan) | set(before)):
            if before.get(key) != plan.get(key):
                diff = _first_difference(before.get(key), plan.get(key), key)
                raise ValueError(f"--output {output!r} holds a preparation made with {diff}: "
                                 f"use another --output (or delete it to start over)")
        return
    if os.path.isdir(output) and os.listdir(output):
        raise ValueError(f"--output {output!r} is not empty and holds no preparation "
                         f"(plan.json); choose a new or empty directory")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file; expected a directory")
    os.makedirs(output, exist_ok=True)
    write_atomic(plan_path, json.dumps(plan, indent=1) + "\n")


def _first_difference(before, now, key: str) -> str:
    if isinstance(before, dict) and isinstance(now, dict):
        for k in sorted(set(before) | set(now)):
            if before.get(k) != now.get(k):
                return f"{k}={before.get(k)!r} (this command: {now.get(k)!r})"
    return f"{key}={before!r} (this command: {now!r})"


def _tokenizer(config, output: str, train_documents):
    """Trained (or loaded) once, kept in output/tokenizer; a resumed run reuses it."""
    data = config.data
    directory = os.path.join(output, "tokenizer")
    cache_root = data.get("data_dir") or corpora.default_data_dir()
    corpus_id = corpora.corpus_id(data)
    if config.task == "bert_pretrain":
        texts = lambda: (s for i in range(len(train_documents)) for s in train_documents[i])
        return tokenizer.load_or_train(data, directory, texts, corpus_id, cache_root)
    texts = lambda: (" ".join(d) for d in (train_documents[i]
                                          for i in range(len(train_documents))) if d)
    return bpe.load_or_train_bpe(data, directory, texts, corpus_id, cache_root)


def _window_jobs(split: str, token_parts: list[dict], seq_len: int) -> list[dict]:
    """The window shards of a split's stream (continuous over its token parts): about as
    many as it has document shards."""
    length = sum(p["tokens"] for p in token_parts)
    windows = max(1, -(-(length - 1) // seq_len))
    per_shard = max(1, -(-windows // max(1, len(token_parts))))
    starts = range(0, windows, per_shard)
    return [dict(split=split, index=j, of=len(starts), start=w,
                 stop=min(w + per_shard, windows),
                 parts=[{k: p[k] for k in ("index", "tokens", "documents")} for p in token_parts],
                 stream_length=length)
            for j, w in enumerate(starts)]


class _Pool:
    """Runs jobs inline (--workers 1) or in spawned worker processes; skips finished ones."""

    def __init__(self, workers: int, context: dict):
        self.workers, self.context = workers, context
        self.executor = None

    def __enter__(self):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the workers are the parallelism
        if self.workers > 1:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.context,))
        else:
            _init_worker(self.context)
        return self

    def __exit__(self, *exc):
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def run(self, phase: str, jobs: dict[str, list[dict]], log) -> dict[str, list[dict]]:
        """Every split's jobs of one pass (together, so no worker waits for a split's last
        shard); returns each split's results in job order."""
        output = self.context["output"]
        results: dict[tuple[str, int], dict] = {}
        todo = []
        for split, split_jobs in jobs.items():
            for job in split_jobs:
                marker = _marker(output, phase, job)
                if os.path.exists(marker):
                    with open(marker, encoding="utf-8") as f:
                        results[split, job["index"]] = json.load(f)
                else:
                    todo.append(job)
            done = sum(1 for job in split_jobs if (split, job["index"]) in results)
            if done:
                log(f"{phase} {split}: {done} of {len(split_jobs)} shards already done")
        if self.executor is None:
            for job in todo:
                results[job["split"], job["index"]] = _run_job(phase, job)
                _log_done(log, phase, job, len(jobs[job["split"]]),
                          results[job["split"], job["index"]])
        else:
            futures = {self.executor.submit(_run_job, phase, job): job for job in todo}
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                results[job["split"], job["index"]] = future.result()
                _log_done(log, phase, job, len(jobs[job["split"]]),
                          results[job["split"], job["index"]])
        return {split: [results[split, job["index"]] for job in split_jobs]
                for split, split_jobs in jobs.items()}


def _log_done(log, phase, job, total, result) -> None:
    log(f"{phase} {job['split']} shard {job['index'] + 1}/{total}: "
        f"{result.get('records', result.get('tokens'))} "
        f"{'tokens' if phase in ('tokens', 'sentences') else 'examples'}")


def _marker(output: str, phase: str, job: dict) -> str:
    suffix = {"sentences": ".sentences", "bert": "", "tokens": ".tokens",
              "windows": ".windows"}[phase]
    return os.path.join(output, "parts", f"{job['split']}-{job['index']:05d}{suffix}.json")


_STATE: dict = {}


def _init_worker(context: dict) -> None:
    import ml_collections

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    config = ml_collections.ConfigDict(json.loads(context["config"]))
    directory = os.path.join(context["output"], "tokenizer")
    if config.task == "bert_pretrain":
        tok = tokenizer.load_vocab(os.path.join(directory, "vocab.txt"), config.data.lowercase)
    else:
        tok = bpe.load_tokenizer(directory)
    _STATE.clear()
    _STATE.update(context, config=config, tokenizer=tok, documents={})


def _documents(split: str):
    if split not in _STATE["documents"]:
        _STATE["documents"][split] = corpora.Documents(_STATE["config"].data, split)
    return _STATE["documents"][split]


def _tokenized(split: str) -> "_SentenceParts":
    """The split's tokenised documents, read from pass 1's parts (memory-mapped)."""
    key = ("tokenized", split)
    if key not in _STATE:
        _STATE[key] = _SentenceParts(_STATE["output"], split, len(_documents(split)),
                                     _STATE["shard_size"])
    return _STATE[key]


class _SentenceParts:
    """[i] -> document i's tokenised sentences (as `pretraining.tokenize_documents` gives
    them), from the part of pass 1 that holds it: any document of the split at the cost of
    a slice, so a random-next segment never tokenises again."""

    def __init__(self, output: str, split: str, length: int, shard_size: int):
        self.output, self.split, self.length, self.shard_size = output, split, length, shard_size
        self._parts: dict[int, tuple] = {}
        self._recent: dict[int, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def _part(self, index: int):
        if index not in self._parts:
            if len(self._parts) >= 64:  # keep a bounded number of parts open
                self._parts.pop(next(iter(self._parts)))
            tokens = np.load(_part_path(self.output, self.split, index, "tokens"),
                             mmap_mode="r")
            lengths = np.load(_part_path(self.output, self.split, index, "sentence_lengths"))
            per_doc = np.load(_part_path(self.output, self.split, index, "doc_sentences"))
            starts = np.concatenate([[0], np.cumsum(lengths)])
            first = np.concatenate([[0], np.cumsum(per_doc)])
            self._parts[index] = (tokens, starts, first)
        return self._parts[index]

    def __getitem__(self, i: int) -> list[np.ndarray]:
        if i in self._recent:
            return self._recent[i]
        part, within = divmod(i, self.shard_size)
        tokens, starts, first = self._part(part)
        a, b = first[within], first[within + 1]
        piece = np.asarray(tokens[starts[a]:starts[b]], np.int32)
        bounds = (starts[a:b + 1] - starts[a]).tolist()
        document = [piece[bounds[k]:bounds[k + 1]] for k in range(b - a)]
        if len(self._recent) >= 256:  # the documents read last (one is read several times)
            self._recent.pop(next(iter(self._recent)))
        self._recent[i] = document
        return document


def _sentence_part(job: dict) -> dict:
    """Pass 1 of BERT: a document shard tokenised, its sentences' tokens in one array."""
    wp, output, split = _STATE["tokenizer"], _STATE["output"], job["split"]
    docs = pretraining.tokenize_documents(_documents(split), range(job["start"], job["stop"]),
                                          wp)
    sentences = [s for d in docs for s in d]
    arrays = {"tokens": (np.concatenate(sentences) if sentences else np.zeros(0, np.int64)
                         ).astype(_STATE["dtype"]),
              "sentence_lengths": np.array([len(s) for s in sentences], np.int64),
              "doc_sentences": np.array([len(d) for d in docs], np.int64)}
    for what, array in arrays.items():
        path = _part_path(output, split, job["index"], what)
        np.save(path + ".tmp.npy", array)
        os.replace(path + ".tmp.npy", path)
    return {"index": job["index"], "tokens": int(len(arrays["tokens"])),
            "documents": len(docs)}


def _run_job(phase: str, job: dict) -> dict:
    started = time.time()
    result = {"sentences": _sentence_part, "bert": _bert_shard, "tokens": _token_part,
              "windows": _window_shard}[phase](job)
    result["seconds"] = round(time.time() - started, 3)
    write_atomic(_marker(_STATE["output"], phase, job), json.dumps(result) + "\n")
    return result


class _ShardWriter:
    """An ArrayRecord file written under a temporary name, renamed into place on close."""

    def __init__(self, output: str, name: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self.path = os.path.join(output, name)
        self.tmp = os.path.join(output, f".{name}.tmp-{os.getpid()}")
        self.writer = ArrayRecordWriter(self.tmp, WRITER_OPTIONS)
        self.records = 0

    def write(self, record: bytes) -> None:
        self.writer.write(record)
        self.records += 1

    def close(self) -> dict:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return {"file": os.path.basename(self.path), "records": self.records,
                "bytes": os.path.getsize(self.path)}


def _shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def _bert_shard(job: dict) -> dict:
    config, wp = _STATE["config"], _STATE["tokenizer"]
    data, S = config.data, config.max_seq_len
    split = job["split"]
    documents = _tokenized(split)
    spec = pretraining.masking_spec(data, S)
    if split == "train":  # the in-memory path's seeds (ssl_jax/tasks/bert_pretrain.py)
        seed, copies, mask_seed = config.seed, data.dupe_factor, config.seed + 1
        masked = data.masking == "static"
    else:
        seed, copies, mask_seed, masked = config.seed + 7, 1, config.seed + 11, True
    count = -(-len(documents) // _STATE["shard_size"])
    writer = _ShardWriter(_STATE["output"], _shard_name(split, job["index"], count))
    counts = np.zeros(wp.vocab_size, np.int64)
    dtype = _STATE["dtype"]
    for d in range(job["start"], job["stop"]):
        for sentence in documents[d]:
            counts += np.bincount(sentence, minlength=wp.vocab_size)
        for inst in pretraining.keyed_instances(
                documents, d, wp, S, data.short_seq_prob, bool(data.nsp), seed=seed,
                copies=copies, random_next_prob=data.random_next_prob):
            if masked:  # pretraining.masked_example's draws, not padded
                input_ids, positions, _, weights = mask_tokens(
                    inst.tokens, spec, wp, np.random.default_rng((mask_seed, *inst.key)))
                writer.write(records.encode_masked(inst, input_ids, positions, weights, dtype))
            else:
                writer.write(records.encode_instance(inst, dtype))
    np.save(os.path.join(_STATE["output"], "parts", f"{split}-{job['index']:05d}.counts.npy"),
            counts)
    return writer.close()


def _part_path(output: str, split: str, index: int, what: str) -> str:
    return os.path.join(output, "parts", f"{split}-{index:05d}.{what}.npy")


def _token_part(job: dict) -> dict:
    """Pass 1 of GPT: a document shard's piece of the stream, EOT doc EOT doc ..."""
    tok, output, split = _STATE["tokenizer"], _STATE["output"], job["split"]
    documents = _documents(split)
    texts = [" ".join(d) for d in (documents[i] for i in range(job["start"], job["stop"])) if d]
    encoded = [e for e in (tok.encode_batch(texts) if texts else []) if len(e)]
    eot = np.array([tok.eot_id], np.int64)
    stream = (np.concatenate([x for e in encoded for x in (eot, e)]) if encoded
              else np.zeros(0, np.int64))
    lengths = np.array([len(e) + 1 for e in encoded], np.int64)
    for what, array in (("tokens", stream.astype(_STATE["dtype"])), ("lengths", lengths)):
        path = _part_path(output, split, job["index"], what)
        np.save(path + ".tmp.npy", array)
        os.replace(path + ".tmp.npy", path)
    np.save(os.path.join(output, "parts", f"{split}-{job['index']:05d}.counts.npy"),
            np.bincount(stream, minlength=tok.vocab_size)[:tok.vocab_size])
    return {"index": job["index"], "tokens": int(len(stream)), "documents": len(encoded)}


def _window_shard(job: dict) -> dict:
    """Pass 2 of GPT: windows [start, stop) of the split's stream (read from the parts it
    overlaps; the tail past the stream's end is padding, the last document's id)."""
    output, split, S = _STATE["output"], job["split"], _STATE["config"].max_seq_len
    length = job["stream_length"]
    a, b = job["start"] * S, job["stop"] * S + 1
    piece, piece_docs = _stream_slice(output, split, job["parts"], a, min(b, length))
    pad = b - a - len(piece)
    piece = np.pad(piece, (0, pad))
    piece_docs = np.pad(piece_docs, (0, pad), mode="edge") if len(piece_docs) else np.zeros(
        b - a, np.int64)
    writer = _ShardWriter(output, _shard_name(split, job["index"], job["of"]))
    targets = 0
    for w in range(job["stop"] - job["start"]):
        lo = w * S
        n_valid = int(max(0, min(S + 1, length - (a + lo))))
        window_docs = piece_docs[lo:lo + S + 1]
        writer.write(records.encode_window(piece[lo:lo + S + 1], window_docs - window_docs[0],
                                           n_valid, _STATE["dtype"]))
        targets += max(0, n_valid - 1)
    return dict(writer.close(), targets=targets)


def _stream_slice(output: str, split: str, parts: list[dict], a: int, b: int):
    """Tokens [a, b) of a split's stream and their document ids, from the parts (memory
    mapped) that overlap it."""
    tokens, docs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    offset = doc_offset = 0
    for part in parts:
        lo, hi = offset, offset + part["tokens"]
        if hi > a and lo < b:
            piece = np.load(_part_path(output, split, part["index"], "tokens"), mmap_mode="r")
            lengths = np.load(_part_path(output, split, part["index"], "lengths"))
            ids = np.repeat(np.arange(len(lengths)) + doc_offset, lengths)
            tokens.append(np.asarray(piece[max(a, lo) - lo:min(b, hi) - lo], np.int64))
            docs.append(ids[max(a, lo) - lo:min(b, hi) - lo])
        offset, doc_offset = hi, doc_offset + part["documents"]
    return np.concatenate(tokens), np.concatenate(docs)


def main(argv=None) -> int:
    from ssl_jax import config as config_lib

    try:
        overrides, rest = config_lib.parse_override_args(
            list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    parser = argparse.ArgumentParser(prog="python -m ssl_jax.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="FILE.py[:arg] (+ --config.KEY=VALUE)")
    parser.add_argument("--output", required=True, help="the prepared directory")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                        help=f"documents per shard ({DEFAULT_SHARD_SIZE})")
    args = parser.parse_args(rest)
    try:
        config = config_lib.load_config(args.config, overrides)
        if config.task == "transfer":  # the quickstart: prepare its pre-training data
            config = config.pretrain
        manifest = prepare(config, args.output, workers=args.workers,
                           shard_size=args.shard_size)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    print(json.dumps({"output": args.output, "kind": manifest["kind"],
                      "seconds": manifest["seconds"],
                      **{f"{s}_examples": manifest["splits"][s]["records"] for s in SPLITS}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
