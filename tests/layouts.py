"""Runs short training runs under given layouts and prints their losses as JSON: the child
process of the scale tests (it must start with the fake-device flag set before JAX loads).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/layouts.py RUNS.json
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/layouts.py RUNS.json \
        --coordinator 127.0.0.1:PORT --num-processes 2 --process-id I   # one of 2 processes

RUNS.json: [{"name", "config" (FILE[:arg] under experiments/), "overrides" {key: text},
"workdir", "stop_after" (optional)}]. Prints one JSON line {name: {"losses", "summary"}};
for a task that scores its predictions, also "scored" (the number of predictions each eval
scored) and "eval_examples" (the size of its held-out set).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The small runs the scale tests compare: BERT, GPT and a ViT (MAE), dropout on, 5 steps,
# batch 8 (one example per fake device), evaluated and checkpointed at the end.
COMMON = {"num_train_steps": "5", "log_every_steps": "1", "eval_every_steps": "5",
          "checkpoint_every_steps": "5", "num_eval_batches": "2", "data_threads": "1",
          "batch_size": "8"}
MODELS = {
    "bert": ("bert/pretrain.py:tiny", {"max_seq_len": "64", "data.vocab_size": "2000",
                                       "data.dupe_factor": "1"}),
    "gpt": ("gpt/pretrain.py:gpt-tiny,vocab=2000,seq_len=64,batch=8,steps=5", {}),
    "vit": ("vision/mae.py:steps=5,image_size=16,batch=8",
            {"model.num_layers": "2", "model.hidden_size": "64", "model.num_heads": "2",
             "model.mlp_dim": "128", "model.dropout_rate": "0.1",
             "model.attention_dropout_rate": "0.1", "data.limit": "400"}),
}
LAYOUTS = {  # name -> overrides
    "one": {},
    "dp8": {"mesh.data": "8"},
    "fsdp8": {"mesh.data": "1", "mesh.fsdp": "8", "sharding_rules": "fsdp"},
    "fsdp4_tp2": {"mesh.data": "1", "mesh.fsdp": "4", "mesh.tensor": "2",
                  "sharding_rules": "fsdp_tp"},
    "d2_f2_t2": {"mesh.data": "2", "mesh.fsdp": "2", "mesh.tensor": "2",
                 "sharding_rules": "fsdp_tp"},
    "pmap": {"parallel": "pmap"},
}


def run_spec(model: str, layout: str, workdir: str, **extra) -> dict:
    config, overrides = MODELS[model]
    return dict(name=f"{model}/{layout}", config=config, workdir=workdir,
                overrides={**COMMON, **overrides, **LAYOUTS[layout], **extra})


def run(spec: dict) -> dict:
    from ssl_jax import config as config_lib
    from ssl_jax.tasks import get_task
    from ssl_jax.train.loop import train_and_evaluate
    from ssl_jax.train.metrics import read_metrics

    config = config_lib.load_config(os.path.join(ROOT, "experiments", spec["config"]),
                                    list(spec["overrides"].items()))
    counts = {}

    def build(config, workdir):  # the task, its score() counting what it is given
        task = get_task(config.task)(config, workdir)
        if task.predict_outputs:
            score, counts["scored"] = task.score, []
            counts["eval_examples"] = len(task.eval_examples())

            def counted(outputs):
                counts["scored"].append(len(next(iter(outputs.values()))))
                return score(outputs)
            task.score = counted
        return task

    summary = train_and_evaluate(config, spec["workdir"], build, progress=False,
                                 stop_after=spec.get("stop_after"))
    records = read_metrics(os.path.join(spec["workdir"], "metrics.jsonl"))
    return dict(losses=[r["loss"] for r in records if "loss" in r],
                summary={k: v for k, v in summary.items() if isinstance(v, (int, float))},
                **counts)


if __name__ == "__main__":
    if len(sys.argv) > 2:  # one process of a multi-process run, through launch.py's flags
        import launch
        args, _ = launch.parse_args(["--config", "-", "--workdir", "-"] + sys.argv[2:])
        launch.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    specs = json.load(open(sys.argv[1]))
    print(json.dumps({s["name"]: run(s) for s in specs}))
