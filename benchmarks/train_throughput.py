"""Training examples per second: mtlrec (lazy / dense embedding updates) vs DeepCTR.

For MMoE, PLE, ESMM and DUPN on a large-vocabulary configuration (20 categorical
features with up to 1,000,000 buckets each, dim 16, about 53M embedding
parameters, plus 5 numeric features) and on the same features with tiny
vocabularies (1,000 buckets each), all in one run:

- `mtlrec lazy`: the mtlrec `Trainer`'s own `tf.function` step (the one
  `train_day` runs) with `LazyAdam` on the embedding tables and Adam on the rest;
- `mtlrec per_lookup`: `mtlrec lazy` with `LazyAdam(row_momentum="per_lookup")`,
  the lazy Adam that was the default before `per_step` (its `vs mtlrec lazy` column is
  the default's cost: per_lookup's rate over the default's);
- `mtlrec dense`: the same step with Keras' stock `Adam` on the embedding tables
  (every step updates whole tables and both slots);
- `mtlrec dynamic`: `mtlrec lazy` with every categorical table on `lookup: dynamic`
  (a collision-free id -> row map of capacity = the vocabulary, admission at the
  first sighting); the step also counts and admits each batch's ids. Its
  `vs mtlrec lazy` column is its rate over `mtlrec lazy`'s, i.e. dynamic over hash
  (the goal of dynamic tables: >= 0.8 on the large vocabulary);
- `deepctr`: DeepCTR's MMOE / PLE / ESMM of the same shape (when `deepctr` is
  importable), `compile(Adam)` + `train_on_batch`; DeepCTR has no DUPN.

Every model is trained on the same in-memory batches (tensors built once, so no
input pipeline is timed): a few warm-up steps (tracing), then a timed window of
at least `--steps` steps and `--min-seconds` seconds. The machine is shared, so
the runs are interleaved in `--rounds` rounds and each configuration reports
its median; the ratios compare numbers from the same run.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/train_throughput.py --quick
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtlrec.training.config import config_from_dict  # noqa: E402
from mtlrec.training.trainer import Trainer  # noqa: E402

# (name, large vocabulary): 3,304,870 rows x 16 = 52.9M embedding parameters.
CATEGORICAL = [
    ("user_id", 1_000_000), ("item_id", 1_000_000), ("item_shop", 500_000),
    ("item_brand", 400_000), ("user_city", 200_000), ("item_category", 100_000),
    ("query_id", 50_000), ("c07", 20_000), ("c08", 10_000), ("c09", 10_000),
    ("c10", 5_000), ("c11", 5_000), ("c12", 2_000), ("c13", 1_000), ("c14", 1_000),
    ("c15", 500), ("c16", 200), ("c17", 100), ("c18", 50), ("c19", 20),
]
NUMERIC = [f"n{i}" for i in range(5)]
DIM = 16
SEQ_LEN = 20  # DUPN's behavior history (shares the item_id table) and its property sequence
MODELS = ("mmoe", "ple", "esmm", "dupn")
SYSTEMS = ("mtlrec lazy", "mtlrec per_lookup", "mtlrec dense", "mtlrec dynamic", "deepctr")
# The embedding optimizer of each mtlrec system (learning rate 0.001 for all).
EMBEDDING_OPTIMIZERS = {
    "mtlrec lazy": {"name": "lazy_adam"},
    "mtlrec per_lookup": {"name": "lazy_adam", "row_momentum": "per_lookup"},
    "mtlrec dense": {"name": "adam"},
    "mtlrec dynamic": {"name": "lazy_adam"},
}


def vocabularies(kind, tiny):
    return {name: (min(v, tiny) if kind == "tiny" else v) for name, v in CATEGORICAL}


def make_schema(kind, tiny, sequences, lookup="hash"):
    vocab = vocabularies(kind, tiny)
    schema = {
        "categorical": [
            {"name": n, "dtype": "int64", "num_buckets": vocab[n], "dim": DIM, "lookup": lookup}
            for n, _ in CATEGORICAL
        ],
        "numeric": [{"name": n, "normalize": "none"} for n in NUMERIC],
        "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
    }
    if sequences:
        schema["sequence"] = [
            {"name": "hist_item_id", "dtype": "int64", "max_len": SEQ_LEN, "shared_with": "item_id"},
            {"name": "hist_behavior", "dtype": "int64", "max_len": SEQ_LEN, "num_buckets": 8, "dim": 8},
        ]
    return schema


def model_section(model):
    if model == "mmoe":
        return {"type": "mmoe", "num_experts": 4, "expert_units": [256, 128], "tower_units": [64]}
    if model == "ple":  # 2 levels, 1 expert per task + 2 shared: 4 experts per level
        return {"type": "ple", "num_levels": 2, "num_task_experts": 1, "num_shared_experts": 2,
                "expert_units": [256, 128], "tower_units": [64]}
    if model == "esmm":  # DeepCTR's ESMM towers
        return {"type": "esmm", "tower_units": [256, 128, 64]}
    return {"type": "dupn", "lstm_units": 32, "attention_units": 32, "representation_dim": 128,
            "tower_units": [64]}


def tasks_section(model):
    if model == "esmm":
        return [{"name": "ctr", "label": "click"},
                {"name": "cvr", "label": "conversion", "parent": "ctr", "joint": "ctcvr"}]
    return [{"name": "ctr", "label": "click"},
            {"name": "cvr", "label": "conversion", "sample_space": "click"}]


def make_batches(args):
    """`args.num_batches` (features, labels) batches of raw ids, as tensors."""
    rng = np.random.default_rng(args.seed)
    batches = []
    for _ in range(args.num_batches):
        b = args.batch_size
        # Raw ids uniform over each feature's large vocabulary (the worst case for
        # a lazy update: most rows of a batch are distinct); mtlrec hashes them.
        features = {n: rng.integers(0, v, b, dtype=np.int64) for n, v in CATEGORICAL}
        for n in NUMERIC:
            features[n] = rng.standard_normal(b).astype(np.float32)
        lengths = rng.integers(1, SEQ_LEN + 1, b)
        pad = np.arange(SEQ_LEN)[None, :] >= lengths[:, None]
        hist = rng.integers(0, 1_000_000, (b, SEQ_LEN), dtype=np.int64)
        hist[pad] = -1
        behavior = rng.integers(0, 4, (b, SEQ_LEN), dtype=np.int64)
        behavior[pad] = -1
        features["hist_item_id"], features["hist_behavior"] = hist, behavior
        click = (rng.random(b) < 0.2).astype(np.float32)
        conversion = click * (rng.random(b) < 0.3).astype(np.float32)
        batches.append((features, {"click": click, "conversion": conversion}))
    return batches


def as_tensors(batch, names):
    features, labels = batch
    return ({n: tf.constant(features[n]) for n in names},
            {k: tf.constant(v) for k, v in labels.items()})


# ----------------------------------------------------------------- runners


def mtlrec_runner(model, kind, embedding_optimizer, args, batches, lookup="hash", training=None,
                  dense_optimizer=None):
    """A step callable on a batch index: the Trainer's own tf.function step (`training`:
    more keys of the config's training section; `dense_optimizer`: default Adam)."""
    config = config_from_dict({
        "name": f"bench_{model}",
        "run_dir": "/tmp/mtlrec_bench_unused",
        "data": {"root": "/tmp/mtlrec_bench_unused"},
        "schema": make_schema(kind, args.tiny_vocab, sequences=model == "dupn", lookup=lookup),
        "tasks": tasks_section(model),
        "model": {**model_section(model), "seed": 1},
        "optimizer": {"dense": dense_optimizer or {"name": "adam", "learning_rate": 0.001},
                      "embedding": {**embedding_optimizer, "learning_rate": 0.001}},
        "training": {"batch_size": args.batch_size, "seed": 0, **(training or {})},
    })
    trainer = Trainer(config, config.to_dict()["schema"])
    trainer.start_day("2024-01-01")  # what Trainer.train_day does before a day's first step
    step = trainer._build_step()  # what Trainer.train_day calls on every batch
    names = list(trainer.model.input.keys())
    data = [as_tensors(b, names) for b in batches]

    def run(i):
        features, labels = data[i % len(data)]
        return step(features, labels)[0]

    params = sum(int(np.prod(v.shape)) for v in trainer.embedding_variables)
    return run, params, trainer


def deepctr_net(model, vocab):
    """DeepCTR's `model` on this benchmark's features (`vocab`: name -> vocabulary size),
    compiled with Adam 0.001: `(net, its input names)`."""
    from deepctr.feature_column import DenseFeat, SparseFeat, get_feature_names
    from deepctr.models import ESMM, MMOE, PLE

    columns = [SparseFeat(n, vocabulary_size=vocab[n], embedding_dim=DIM) for n, _ in CATEGORICAL]
    columns += [DenseFeat(n, 1) for n in NUMERIC]
    common = dict(l2_reg_embedding=0.0, task_types=("binary", "binary"), task_names=("ctr", "cvr"))
    if model == "mmoe":
        net = MMOE(columns, num_experts=4, expert_dnn_hidden_units=(256, 128),
                   tower_dnn_hidden_units=(64,), **common)
    elif model == "ple":
        net = PLE(columns, shared_expert_num=2, specific_expert_num=1, num_levels=2,
                  expert_dnn_hidden_units=(256, 128), tower_dnn_hidden_units=(64,), **common)
    else:
        net = ESMM(columns, tower_dnn_hidden_units=(256, 128, 64), **common)
    net.compile(keras.optimizers.Adam(0.001), loss=["binary_crossentropy", "binary_crossentropy"])
    return net, get_feature_names(columns)


def deepctr_runner(model, kind, args, batches):
    vocab = vocabularies(kind, args.tiny_vocab)
    net, names = deepctr_net(model, vocab)
    data = []
    for features, labels in batches:
        # DeepCTR has no hashing: ids must already be row indices of its tables.
        x = {n: tf.constant((features[n] % vocab[n]).reshape(-1, 1)) if n in vocab
             else tf.constant(features[n].reshape(-1, 1)) for n in names}
        second = labels["click"] * labels["conversion"] if model == "esmm" else labels["conversion"]
        data.append((x, [tf.constant(labels["click"]), tf.constant(second)]))

    def run(i):
        x, y = data[i % len(data)]
        return net.train_on_batch(x, y, return_dict=False)

    params = sum(int(np.prod(w.shape)) for w in net.trainable_weights if "emb" in w.name.lower())
    return run, params, net


def deepctr_available():
    try:
        import deepctr  # noqa: F401
        from deepctr.models import MMOE  # noqa: F401
    except Exception as err:  # noqa: BLE001 (any import failure means "not available")
        return False, f"{type(err).__name__}: {err}"
    return True, getattr(sys.modules["deepctr"], "__version__", "?")


def timed(run, args):
    """(examples per second, examples per CPU-second) over one window of >= args.steps
    steps and >= args.min_seconds. CPU time is this process's, over all its threads: on
    a shared machine it moves less than wall time with the other jobs' load."""
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while steps < args.steps or time.perf_counter() - start < args.min_seconds:
        out = run(steps)
        steps += 1
    np.asarray(out)  # the last step has finished
    examples = steps * args.batch_size
    return (examples / (time.perf_counter() - start),
            examples / max(time.process_time() - cpu, 1e-9))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--vocabs", default="large,tiny")
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--num-batches", type=int, default=16, help="distinct batches, cycled")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (at least)")
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="untimed seconds (at least): the first tens of steps after "
                             "tracing are slower (first touches of the slot memory, caches)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per window (at least)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="timed seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="timed windows per configuration")
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps: --warmup 3 --warmup-seconds 3 --steps 5 "
                             "--min-seconds 2 --rounds 3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.warmup_seconds, args.steps, args.min_seconds, args.rounds = (
            3, 3.0, 5, 2.0, 3)

    models = [m for m in args.models.split(",") if m]
    systems = [s for s in args.systems.split(",") if s]
    kinds = [k for k in args.vocabs.split(",") if k]
    have_deepctr, deepctr_info = deepctr_available()
    if "deepctr" in systems and not have_deepctr:
        print(f"deepctr not importable ({deepctr_info}); its rows are skipped")
        systems = [s for s in systems if s != "deepctr"]

    batches = make_batches(args)
    load_before = os.getloadavg()
    results, params, started = {}, {}, time.perf_counter()
    for model in models:
        # Build every configuration of this model, warm each up, then time them in
        # turns (round r of every configuration before round r + 1 of any), so a
        # change in the machine's load hits all of them alike.
        keras.backend.clear_session()
        gc.collect()
        runners = {}
        for kind in kinds:
            for system in systems:
                if system == "deepctr" and model == "dupn":
                    continue
                if system == "deepctr":
                    run, n, obj = deepctr_runner(model, kind, args, batches)
                else:
                    lookup = "dynamic" if system == "mtlrec dynamic" else "hash"
                    run, n, obj = mtlrec_runner(model, kind, EMBEDDING_OPTIMIZERS[system], args,
                                                batches, lookup)
                i, start = 0, time.perf_counter()
                while i < args.warmup or time.perf_counter() - start < args.warmup_seconds:
                    np.asarray(run(i))
                    i += 1
                runners[kind, system] = (run, obj)
                params[model, kind, system] = n
        for _ in range(args.rounds):
            for (kind, system), (run, _obj) in runners.items():
                results.setdefault((model, kind, system), []).append(timed(run, args))
        for (kind, system) in runners:
            rates = results[model, kind, system]
            print(f"  {model:<5} {kind:<5} {system:<17} "
                  f"{params[model, kind, system] / 1e6:6.1f}M emb params  examples/s: "
                  + "  ".join(f"{w:,.0f}" for w, _ in rates) + "  per CPU-s: "
                  + "  ".join(f"{c:,.0f}" for _, c in rates), flush=True)
        del runners
    load_after = os.getloadavg()

    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"before / {load_after[0]:.2f} after | Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"deepctr {deepctr_info if have_deepctr else 'not installed'}")
    print(f"batch {args.batch_size}; each configuration: >= {args.warmup} warm-up steps and "
          f">= {args.warmup_seconds:g} s, then "
          f"{args.rounds} windows of >= {args.steps} steps and >= {args.min_seconds:g} s, "
          f"median reported; total {time.perf_counter() - started:.0f} s")
    print()
    def table(index, title):
        med = {k: statistics.median(r[index] for r in v) for k, v in results.items()}
        print(title)
        print()
        print("| model | vocab | system            | emb params | examples/s | vs deepctr "
              "| vs mtlrec dense | vs mtlrec lazy | large / tiny |")
        print("|-------|-------|-------------------|-----------:|-----------:|-----------:"
              "|----------------:|---------------:|-------------:|")
        for model in models:
            for kind in kinds:
                for system in systems:
                    key = (model, kind, system)
                    if key not in med:
                        continue
                    rate = med[key]
                    peer = med.get((model, kind, "deepctr"))
                    dense = med.get((model, kind, "mtlrec dense"))
                    tiny = med.get((model, "tiny", system))
                    hashed = med.get((model, kind, "mtlrec lazy"))
                    cols = [
                        f"{rate / peer:.2f}x" if peer else "",
                        f"{rate / dense:.2f}x" if dense else "",
                        f"{rate / hashed:.2f}" if system in ("mtlrec dynamic", "mtlrec per_lookup")
                        and hashed else "",
                        f"{rate / tiny:.2f}" if kind == "large" and tiny else "",
                    ]
                    print(f"| {model:<5} | {kind:<5} | {system:<17} | "
                          f"{params[key] / 1e6:9.1f}M | {rate:>10,.0f} | {cols[0]:>10} "
                          f"| {cols[1]:>15} | {cols[2]:>14} | {cols[3]:>12} |")
        print()

    table(0, "Wall clock (examples per second, median of the windows):")
    table(1, "CPU time (examples per CPU-second of this process, all threads; median):")


if __name__ == "__main__":
    main()
