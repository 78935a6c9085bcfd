"""Pre-training data at corpus scale: preparation throughput, loader throughput against the
train step's consumption, and a training run's start-up time and peak memory on a small and
a large prepared corpus.

    python benchmarks/data.py                       # 10 MB and 300 MB corpora (~15 min here)
    python benchmarks/data.py --small-mb 2 --large-mb 20 --rounds 1     # a quick look

The corpora are real text: the embedded corpus's sentences (CPython's documentation)
reshuffled into new documents of 4-40 sentences, written as .txt files (a blank line between
documents) under --scratch. Measured, each in a fresh process:
  1. `python -m ssl_jax.data.prepare` of the BERT-mini config (static masking, dupe_factor
     10, seq 128) on the small corpus with 1 and 2 workers (--shard-size documents per
     shard), alternating --rounds times:
     MB of text per second of shard writing (the tokenizer is trained once, before).
  2. the loader (the run's grain iterator over the prepared shards, config.data_threads
     threads) in examples/s at the BERT-mini benchmark's batch (32 x 128) and the GPT-mini
     one's (16 x 256), against what the BERT-mini train step consumes (examples/s of
     benchmarks/throughput.py's step at the same sizes).
  3. `launch.py` of gpt_pretrain (gpt-mini, seq 256) on the small and the large prepared
     corpus: seconds from start until the first training step is logged, and peak RSS.
Prints a table, then as the last line one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BERT = "experiments/bert/pretrain.py:mini"
GPT = "experiments/gpt/pretrain.py:gpt-mini,seq_len=256"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small-mb", type=float, default=10.0)
    p.add_argument("--large-mb", type=float, default=300.0)
    p.add_argument("--rounds", type=int, default=2, help="alternating 1/2-worker pairs")
    p.add_argument("--scratch", default=os.path.join("/tmp", "ssl_jax_data_bench"))
    p.add_argument("--loader-batches", type=int, default=200)
    p.add_argument("--shard-size", type=int, default=250,
                   help="documents per shard for the 1 vs 2 workers preparation (~18 shards of "
                        "the 10 MB corpus, so two workers share them evenly)")
    p.add_argument("--only", choices=["prepare", "loader", "startup"],
                   help="run one of the three measurements")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    for name in ("small_mb", "large_mb"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be > 0")
    if args.rounds < 1:
        p.error(f"--rounds={args.rounds} must be >= 1")
    return args


def write_corpus(directory: str, megabytes: float, seed: int = 0) -> float:
    """Text files of the embedded corpus's sentences reshuffled into new documents; returns
    the MB written. Kept between runs (same size and seed: same files)."""
    done = os.path.join(directory, "DONE")
    if os.path.exists(done):
        return float(open(done).read())
    from ssl_jax.data.corpora import pydoc_documents

    sentences = [s for d in pydoc_documents() for s in d.split("\n")[1:] if len(s) > 20]
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    target, written, part = megabytes * 1e6, 0, 0
    while written < target:
        with open(os.path.join(directory, f"part-{part:04d}.txt"), "w") as f:
            chunk = 0
            while chunk < 50e6 and written + chunk < target:
                document = "\n".join(rng.choices(sentences, k=rng.randint(4, 40)))
                f.write(document + "\n\n")
                chunk += len(document) + 2
        written += chunk
        part += 1
    with open(done, "w") as f:
        f.write(str(written / 1e6))
    return written / 1e6


def _run_measured(cmd, metrics_path=None, timeout=3600):
    """Runs cmd; returns (stdout, wall seconds, seconds until metrics_path has its first
    line, peak RSS MB of the process)."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    first = None
    while proc.poll() is None:
        if first is None and metrics_path and os.path.exists(metrics_path) and os.path.getsize(
                metrics_path) > 0:
            first = time.time() - start
        time.sleep(0.02)
        if time.time() - start > timeout:
            proc.kill()
            raise SystemExit(f"{' '.join(cmd)} ran past {timeout} s")
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    rss = _child_rss()
    return out, time.time() - start, first, rss


def _child_rss() -> float:
    """Peak RSS (MB) of the process just waited for: RUSAGE_CHILDREN keeps the largest of all
    children, so each measured run goes through a fresh wrapper process (see _measure)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _measure(cmd, metrics_path=None) -> dict:
    """cmd in a fresh wrapper process (its RUSAGE_CHILDREN is cmd's alone)."""
    wrapper = [sys.executable, os.path.abspath(__file__), "--measure-child",
               json.dumps({"cmd": cmd, "metrics": metrics_path})]
    done = subprocess.run(wrapper, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure_child(spec: str) -> None:
    spec = json.loads(spec)
    out, wall, first, rss = _run_measured(spec["cmd"], spec["metrics"])
    print(json.dumps({"stdout": out, "wall_s": wall, "first_step_s": first, "rss_mb": rss}))


def prepare_cmd(config: str, output: str, corpus: str, workers: int, *extra) -> list[str]:
    return [sys.executable, "-m", "ssl_jax.data.prepare", "--config",
            os.path.join(ROOT, config), "--output", output, "--workers", str(workers),
            "--config.data.corpus=files", f"--config.data.files={corpus}/*.txt", *extra]


def prepare_throughput(args, corpus: str, megabytes: float) -> dict:
    """Shard-writing MB/s of BERT-mini's recipe, 1 vs 2 workers, alternating."""
    # warm: the TFDS document index of the files and the WordPiece vocabulary, both cached
    warm = os.path.join(args.scratch, "prep_warm")
    shutil.rmtree(warm, ignore_errors=True)
    _measure(prepare_cmd(BERT, warm, corpus, 2, "--config.data.dupe_factor=1"))
    seconds = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers in (1, 2):
            out = os.path.join(args.scratch, f"prep_bert_{workers}")
            shutil.rmtree(out, ignore_errors=True)
            _measure(prepare_cmd(BERT, out, corpus, workers, "--shard-size",
                                 str(args.shard_size)))
            manifest = json.load(open(os.path.join(out, "manifest.json")))
            seconds[workers].append(manifest["shard_seconds"])
    med = {w: statistics.median(s) for w, s in seconds.items()}
    return {"text_mb": round(megabytes, 1), "examples": manifest["splits"]["train"]["records"],
            "shard_seconds": seconds, "mb_per_s_1_worker": round(megabytes / med[1], 3),
            "mb_per_s_2_workers": round(megabytes / med[2], 3),
            "speedup_2_workers": round(med[1] / med[2], 2), "shard_size": args.shard_size}


LOADER_CHILD = """
import json, sys, time, tempfile
sys.path.insert(0, {root!r})
import grain
from ssl_jax import config as config_lib
from ssl_jax.tasks import get_task
config = config_lib.load_config({config!r}, {overrides!r})
with tempfile.TemporaryDirectory() as tmp:
    task = get_task(config.task)(config, tmp)
    it = iter(task.train_dataset(0, 1).to_iter_dataset(
        grain.ReadOptions(num_threads=config.data_threads, prefetch_buffer_size=8)))
    next(it)
    start = time.perf_counter()
    for _ in range({batches}):
        next(it)
    seconds = time.perf_counter() - start
print(json.dumps({{"examples_per_s": {batches} * config.batch_size / seconds}}))
"""


def loader_throughput(config: str, prepared_dir: str, batch: int, batches: int) -> float:
    code = LOADER_CHILD.format(root=ROOT, config=os.path.join(ROOT, config), batches=batches,
                               overrides=[("data.prepared", prepared_dir),
                                          ("batch_size", str(batch))])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["examples_per_s"]


def step_consumption() -> float:
    """Examples/s the BERT-mini train step consumes (benchmarks/throughput.py, ours only)."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "throughput.py"),
                           "--model", "bert", "--layers", "4", "--hidden", "256", "--heads",
                           "4", "--vocab", "30522", "--batch", "32", "--seq-len", "128",
                           "--peer", "off"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["tokens_per_s"] / 128


def startup(args, small: str, large: str) -> dict:
    """gpt-mini training on each prepared corpus: seconds to the first step, peak RSS."""
    rows = {}
    for name, corpus in (("small", small), ("large", large)):
        prepared_dir = os.path.join(args.scratch, f"prep_gpt_{name}")
        if not os.path.exists(os.path.join(prepared_dir, "manifest.json")):
            extra = []
            if name == "large":  # the small corpus's BPE: no second tokenizer training
                extra = [f"--config.data.tokenizer_path={args.scratch}/prep_gpt_small/tokenizer"]
            _measure(prepare_cmd(GPT, prepared_dir, corpus, 2, *extra))
        manifest = json.load(open(os.path.join(prepared_dir, "manifest.json")))
        workdir = os.path.join(args.scratch, f"run_gpt_{name}")
        shutil.rmtree(workdir, ignore_errors=True)
        cmd = [sys.executable, os.path.join(ROOT, "launch.py"), "--config",
               os.path.join(ROOT, GPT + ",steps=3"), "--workdir", workdir, "--no-progress",
               f"--config.data.prepared={prepared_dir}", "--config.log_every_steps=1",
               "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=1000",
               "--config.num_eval_batches=1"]
        if name == "large":
            cmd.append(f"--config.data.tokenizer_path={args.scratch}/prep_gpt_small/tokenizer")
        got = _measure(cmd, os.path.join(workdir, "metrics.jsonl"))
        rows[name] = {"train_windows": manifest["splits"]["train"]["records"],
                      "first_step_s": round(got["first_step_s"], 2),
                      "peak_rss_mb": round(got["rss_mb"], 1)}
    rows["startup_ratio"] = round(rows["large"]["first_step_s"] / rows["small"]["first_step_s"], 3)
    rows["rss_ratio"] = round(rows["large"]["peak_rss_mb"] / rows["small"]["peak_rss_mb"], 3)
    return rows


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--measure-child":
        _measure_child(sys.argv[2])
        return 0
    args = parse(argv)
    os.makedirs(args.scratch, exist_ok=True)
    os.environ.setdefault("SSL_JAX_DATA_DIR", os.path.join(args.scratch, "tfds"))
    small = os.path.join(args.scratch, f"corpus_{args.small_mb:g}mb")
    large = os.path.join(args.scratch, f"corpus_{args.large_mb:g}mb")
    small_mb = write_corpus(small, args.small_mb)
    write_corpus(large, args.large_mb, seed=1)

    result = {}
    if args.only in (None, "prepare"):
        prep = result["prepare"] = prepare_throughput(args, small, small_mb)
        print(f"prepare BERT-mini (dupe 10) on {prep['text_mb']} MB: "
              f"{prep['mb_per_s_1_worker']} MB/s with 1 worker, {prep['mb_per_s_2_workers']} "
              f"MB/s with 2 ({prep['speedup_2_workers']}x; goal >= 1.6x)")
    if args.only in (None, "startup"):
        start = result["startup"] = startup(args, small, large)
        for name in ("small", "large"):
            row = start[name]
            print(f"gpt-mini run on the {name} corpus ({row['train_windows']} windows): first "
                  f"step after {row['first_step_s']} s, peak RSS {row['peak_rss_mb']} MB")
        print(f"large/small: start-up {start['startup_ratio']}x, RSS {start['rss_ratio']}x "
              f"(goal: within 10%)")
    if args.only in (None, "loader"):
        bert_dir = os.path.join(args.scratch, "prep_bert_1")
        gpt_dir = os.path.join(args.scratch, "prep_gpt_small")
        for needed in (bert_dir, gpt_dir):
            if not os.path.exists(os.path.join(needed, "manifest.json")):
                raise SystemExit(f"{needed} is not prepared: run the prepare and startup parts")
        consumed = step_consumption()
        bert_loader = loader_throughput(BERT, bert_dir, 32, args.loader_batches)
        gpt_loader = loader_throughput(GPT, gpt_dir, 16, args.loader_batches)
        result["loader"] = {
            "bert_examples_per_s": round(bert_loader, 1),
            "gpt_examples_per_s": round(gpt_loader, 1),
            "bert_mini_step_examples_per_s": round(consumed, 1),
            "bert_loader_over_step": round(bert_loader / consumed, 1)}
        print(f"loader: BERT {bert_loader:.0f} examples/s (B32 x 128), GPT {gpt_loader:.0f} "
              f"(B16 x 256); the BERT-mini step consumes {consumed:.1f} examples/s "
              f"({bert_loader / consumed:.0f}x; goal >= 5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
