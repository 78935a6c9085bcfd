"""Sentence embeddings from a BERT encoder: the mean of the last hidden states over each
sentence's real tokens ([CLS] ... [SEP]; padding excluded), as sentence-transformers pools.

    python -m ssl_jax.embed --model all-MiniLM-L6-v2/ --input sentences.txt --output emb.npy
    python -m ssl_jax.embed --model runs/quickstart/pretrain --input s.txt --output e.npy \
        --normalize

--model: an HF BERT directory or a bert_pretrain workdir (ssl_jax.interop.pretrained). GPT
models are rejected: a causal decoder's states do not see the whole sentence, and there is
no [CLS]/[SEP] to frame it. --input: one sentence per line. The output is a float32
[sentences, hidden] .npy, written atomically; --normalize makes each row unit length.
Sentences are batched by length and padded to a power-of-two bucket, so the forward pass
compiles once per bucket, not per sentence.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.data.model_dir import add_model_argument, read_config_of_kind
from ssl_jax.files import read_text
from ssl_jax.models.bert import BertConfig, BertEncoder

MIN_BUCKET = 8
DEFAULT_MAX_SEQ_LEN = 128


def read_sentences(path: str) -> list[str]:
    """One sentence per line; a blank line is an error (it would be a silent empty row)."""
    text = read_text(path, "--input")
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline ends the last line
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"--input {path!r} line {number} is blank; give one sentence "
                             "per line")
    if not lines:
        raise ValueError(f"--input {path!r} holds no sentence")
    return lines


def frame(wordpiece, sentences: list[str], max_seq_len: int) -> list[np.ndarray]:
    """[CLS] tokens [SEP] per sentence, the tokens cut to fit max_seq_len."""
    return [np.concatenate([[wordpiece.cls_id], ids[:max_seq_len - 2], [wordpiece.sep_id]]
                           ).astype(np.int32) for ids in wordpiece.encode_batch(sentences)]


def bucket_length(length: int, max_seq_len: int) -> int:
    """The padded length: the next power of two >= length (at least MIN_BUCKET), capped."""
    return min(max(MIN_BUCKET, 1 << (length - 1).bit_length()), max_seq_len)


@functools.lru_cache(maxsize=8)
def mean_pool_fn(config: BertConfig):
    """jit(params, ids [batch, len], mask [batch, len]) -> mean last hidden state over the
    real tokens [batch, hidden] float32; one compilation per input shape."""
    model = BertEncoder(config)

    @jax.jit
    def run(params, ids, mask):
        sequence, _ = model.apply({"params": params}, ids, jnp.zeros_like(ids), mask)
        weights = mask[..., None].astype(jnp.float32)  # [batch, len, 1]
        total = jnp.sum(sequence.astype(jnp.float32) * weights, axis=1)
        return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)

    return run


def embed_ids(config: BertConfig, encoder_params, sequences: list[np.ndarray], *,
              batch_size: int = 32, max_seq_len: int = 128) -> np.ndarray:
    """Mean-pooled embeddings [n, hidden] of framed token id sequences, in input order.
    Batches are formed by length (little padding) and padded to `batch_size` rows (or n)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size={batch_size} must be >= 1")
    rows = min(batch_size, len(sequences))
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    forward = mean_pool_fn(config)
    out = np.zeros((len(sequences), config.hidden_size), np.float32)
    for start in range(0, len(order), rows):
        chunk = order[start:start + rows]
        width = bucket_length(max(len(sequences[i]) for i in chunk), max_seq_len)
        ids = np.zeros((rows, width), np.int32)
        mask = np.zeros((rows, width), np.int32)
        for row, i in enumerate(chunk):
            ids[row, :len(sequences[i])], mask[row, :len(sequences[i])] = sequences[i], 1
        out[chunk] = np.asarray(forward(encoder_params, ids, mask))[:len(chunk)]
    return out


def embed_sentences(pretrained, sentences: list[str], *, batch_size: int = 32,
                    max_seq_len: int | None = None, normalize: bool = False) -> np.ndarray:
    """float32 [len(sentences), hidden] embeddings of a BERT `Pretrained`
    (ssl_jax.interop.pretrained.load_pretrained). max_seq_len: tokens per sentence with
    [CLS] and [SEP] (None: DEFAULT_MAX_SEQ_LEN, or the position table if shorter)."""
    if pretrained.kind != "bert":
        raise ValueError(f"{pretrained.description} is a {pretrained.kind} model; embeddings "
                         "need a BERT encoder (mean of its states over [CLS] ... [SEP])")
    config = pretrained.config
    if max_seq_len is None:
        max_seq_len = min(DEFAULT_MAX_SEQ_LEN, config.max_position_embeddings)
    if not 3 <= max_seq_len <= config.max_position_embeddings:
        raise ValueError(f"--max-seq-len={max_seq_len} must be in [3, "
                         f"{config.max_position_embeddings}] (the model's position table)")
    params = jax.device_put(pretrained.params["encoder"])  # once, not per batch
    sequences = frame(pretrained.tokenizer, sentences, max_seq_len)
    embeddings = embed_ids(config, params, sequences, batch_size=batch_size,
                           max_seq_len=max_seq_len)
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.maximum(norms, 1e-12)
    return embeddings.astype(np.float32)


def check_output(path: str) -> str:
    """The directory `path` goes in; refused before any compute when it cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"--output directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"--output {path!r} is a directory; expected a .npy file name")
    return directory


def save_npy(path: str, array: np.ndarray) -> None:
    """Writes `path` whole or not at all (a temporary file, then a rename)."""
    directory = check_output(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_argument(parser, "the BERT encoder (a bert_pretrain run or an HF BERT directory)",
                       workdir_alias=False)
    parser.add_argument("--input", required=True, help="a text file: one sentence per line")
    parser.add_argument("--output", required=True, help="the .npy to write")
    parser.add_argument("--normalize", action="store_true", help="unit-length rows")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int,
                        help=f"tokens per sentence, [CLS] and [SEP] included (longer: cut); "
                             f"default {DEFAULT_MAX_SEQ_LEN}, or the model's position table "
                             "if shorter")
    args = parser.parse_args(argv)
    try:
        from ssl_jax.interop.pretrained import load_pretrained

        check_output(args.output)
        read_config_of_kind(args.model, "bert", "sentence embeddings")  # before any weight
        sentences = read_sentences(args.input)
        pretrained = load_pretrained(args.model)
        embeddings = embed_sentences(pretrained, sentences, batch_size=args.batch_size,
                                     max_seq_len=args.max_seq_len, normalize=args.normalize)
        save_npy(args.output, embeddings)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {embeddings.shape[0]} x {embeddings.shape[1]} float32 "
          f"embeddings from {pretrained.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
