"""Latency and throughput of exported mtlrec SavedModels (the `serving_default` signature).

Each model (MMoE, PLE, ESMM, DUPN; the large-vocabulary configuration of
`train_throughput.py`: 20 categorical features with up to 1,000,000 buckets,
dim 16, 5 numerics) is built, written with the project's own export
(`mtlrec.training.export.export_model`), loaded back with `tf.saved_model.load`
and called through its signatures with raw features, as a server would:

- batch 1: `--latency-calls` calls one after another, median and p99 latency;
- batch 1024: examples per second over `--throughput-calls` calls.

For DUPN it also times scoring 1,000 candidate items for one user two ways:
`user_representation` once (the user's profile and behavior history) plus
`score_items` on the 1,000 candidates with that representation, against
`serving_default` on 1,000 full rows (the same user's features repeated beside
each candidate), and checks that both give the same scores.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/serving_latency.py
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput as tt  # noqa: E402  (the shared benchmark configuration)

from mtlrec.models import build_model  # noqa: E402
from mtlrec.training.export import export_model, read_metadata  # noqa: E402


def rows(features, names, start, count):
    return {n: tf.constant(features[n][start:start + count]) for n in names}


def signature_names(fn):
    return sorted(fn.structured_input_signature[1])


def call_times(fn, inputs, calls):
    """Seconds per call of `fn(**inputs)`, each call finished before the next starts."""
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        result = fn(**inputs)
        for v in result.values():
            v.numpy()
        out.append(time.perf_counter() - start)
    return out


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(tt.MODELS))
    parser.add_argument("--vocab", default="large", choices=("large", "tiny"))
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--throughput-calls", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--candidate-calls", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--export-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data_args = argparse.Namespace(num_batches=1, batch_size=max(1024, args.candidates),
                                   seed=args.seed)
    (features, _labels), = tt.make_batches(data_args)
    root = args.export_dir or tempfile.mkdtemp(prefix="mtlrec_serving_")
    load_before = os.getloadavg()
    table, dupn = [], None
    for name in [m for m in args.models.split(",") if m]:
        keras.backend.clear_session()
        schema = tt.make_schema(args.vocab, args.tiny_vocab, sequences=name == "dupn")
        model = build_model({**tt.model_section(name), "seed": 1}, schema, tt.tasks_section(name))
        params = model.count_params()
        path = export_model(model, os.path.join(root, name))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
        names = signature_names(serve)
        one = rows(features, names, 0, 1)
        big = rows(features, names, 0, 1024)
        call_times(serve, one, args.warmup)
        call_times(serve, big, 3)
        lat = call_times(serve, one, args.latency_calls)
        thr = call_times(serve, big, args.throughput_calls)
        table.append((name, params, size, statistics.median(lat), percentile(lat, 99),
                      1024 / statistics.median(thr)))
        print(f"  {name}: exported {path} ({size / 1e6:.0f} MB), signatures "
              f"{sorted(read_metadata(path).get('signatures', {}))}", flush=True)

        if name == "dupn":
            meta = read_metadata(path)
            for needed in ("user_representation", "score_items"):
                if needed not in loaded.signatures:
                    raise SystemExit(f"DUPN export has no {needed!r} signature: {meta}")
            users = loaded.signatures["user_representation"]
            scorer = loaded.signatures["score_items"]
            user_names = signature_names(users)
            item_names = [n for n in signature_names(scorer) if n != "representation"]
            n = args.candidates
            # One user (row 0's user side) and n candidates (rows 0..n-1's item side).
            user_one = rows(features, user_names, 0, 1)
            candidates = rows(features, item_names, 0, n)
            full = {k: tf.repeat(v, n, axis=0) for k, v in user_one.items()}
            full.update(candidates)
            full = {k: full[k] for k in names}

            def split():
                rep = users(**user_one)["representation"]
                return scorer(representation=rep, **candidates)

            task = tt.tasks_section("dupn")[0]["name"]
            a, b = split()[task].numpy(), serve(**full)[task].numpy()
            max_diff = float(np.max(np.abs(a - b)))
            call_times(lambda: split(), {}, args.warmup)
            call_times(serve, full, args.warmup)
            split_t = call_times(lambda: split(), {}, args.candidate_calls)
            full_t = call_times(serve, full, args.candidate_calls)
            dupn = (n, statistics.median(split_t), percentile(split_t, 99),
                    statistics.median(full_t), percentile(full_t, 99), max_diff,
                    len(user_names), len(item_names))
    load_after = os.getloadavg()

    print()
    print(f"machine: {tt.cpu_name()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"before / {load_after[0]:.2f} after | Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"{args.vocab} vocabularies; batch 1: {args.latency_calls} sequential calls after "
          f"{args.warmup} warm-up; batch 1024: {args.throughput_calls} calls (median call time)")
    print()
    print("| model | params | SavedModel MB | batch 1 median ms | batch 1 p99 ms "
          "| batch 1024 examples/s |")
    print("|-------|-------:|--------------:|------------------:|---------------:"
          "|----------------------:|")
    for name, params, size, med, p99, rate in table:
        print(f"| {name:<5} | {params / 1e6:5.1f}M | {size / 1e6:13.0f} | {med * 1e3:17.2f} "
              f"| {p99 * 1e3:14.2f} | {rate:21,.0f} |")
    if dupn:
        n, s_med, s_p99, f_med, f_p99, diff, nu, ni = dupn
        print()
        print(f"DUPN, {n:,} candidate items for one user ({args.candidate_calls} calls each; "
              f"max |score difference| {diff:.2e}):")
        print()
        print("| path | median ms | p99 ms | speed-up (median) |")
        print("|------|----------:|-------:|------------------:|")
        print(f"| serving_default on {n:,} full rows | {f_med * 1e3:.2f} | {f_p99 * 1e3:.2f} | 1.0x |")
        print(f"| user_representation (1 row, {nu} inputs) + score_items ({n:,} rows, "
              f"{ni} item inputs) | {s_med * 1e3:.2f} | {s_p99 * 1e3:.2f} | {f_med / s_med:.1f}x |")


if __name__ == "__main__":
    main()
