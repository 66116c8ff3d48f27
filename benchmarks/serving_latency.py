"""Latency and throughput of exported mtlrec SavedModels (the `serving_default` signature).

Each model (MMoE, PLE, ESMM, DUPN; the large-vocabulary configuration of
`train_throughput.py`: 20 categorical features with up to 1,000,000 buckets,
dim 16, 5 numerics) is built, written with the project's own export
(`mtlrec.training.serving.export.export_model`), loaded back with `tf.saved_model.load`
and called through its signatures with raw features, as a server would:

- batch 1: `--latency-calls` calls one after another, median and p99 latency;
- batch 1024: examples per second over `--throughput-calls` calls.

For DUPN it also times scoring 1,000 candidate items for one user two ways:
`user_representation` once (the user's profile and behavior history) plus
`score_items` on the 1,000 candidates with that representation, against
`serving_default` on 1,000 full rows (the same user's features repeated beside
each candidate), and checks that both give the same scores; and `score_items`
alone, for a server that keeps the representation for the user's session.
Each path is timed twice: as a Python client sees it (one signature call after
another; every call pays TensorFlow's Python dispatch of its inputs, about 0.5
to 1 ms for DUPN's 18 user inputs here), and in the graph (`--graph-calls`
calls of the loaded signatures chained in one `tf.while_loop`, each call's
inputs depending on the previous call's result, no Python between them), which
is closer to what a C++ server such as TensorFlow Serving pays per request
(not measured here: TensorFlow Serving is not installable from PyPI).

`--intra-op-threads` / `--inter-op-threads` set TensorFlow's thread pools (0: its
default, one thread per core for each), as a server's flags of the same names do.

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
from mtlrec.training.serving.export import export_model, read_metadata  # noqa: E402


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


def graph_times(call, inputs, calls, rounds):
    """Seconds per call of ``call(**inputs)`` (a dict of tensors -> dict of tensors)
    run ``calls`` times in one ``tf.while_loop``: one value per round.

    Each call's inputs are rolled along the batch by an amount that depends on the
    previous call's result, so the calls run one after another and none can be
    hoisted out of the loop."""

    @tf.function
    def loop():
        def body(i, acc):
            shift = i + tf.cast(tf.math.is_nan(acc), tf.int32)
            rolled = {k: tf.roll(v, shift, axis=0) for k, v in inputs.items()}
            out = call(**rolled)
            return i + 1, acc + tf.add_n([tf.reduce_sum(v) for v in out.values()])

        return tf.while_loop(lambda i, acc: i < calls, body, (tf.constant(0), tf.constant(0.0)),
                             parallel_iterations=1)[1]

    loop().numpy()
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        loop().numpy()
        out.append((time.perf_counter() - start) / calls)
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
    parser.add_argument("--graph-calls", type=int, default=200,
                        help="calls per in-graph round (1,000 full rows: a tenth of it)")
    parser.add_argument("--graph-rounds", type=int, default=5)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--export-dir", default=None, help="default: a temporary directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

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

            def split_graph(**inputs):
                rep = users(**{k: inputs[k] for k in user_names})["representation"]
                return scorer(representation=rep, **{k: inputs[k] for k in item_names})

            rep_one = users(**user_one)["representation"]
            score_t = call_times(scorer, {"representation": rep_one, **candidates},
                                 args.candidate_calls)
            split_inputs = {**user_one, **candidates}
            split_g = graph_times(split_graph, split_inputs, args.graph_calls, args.graph_rounds)
            score_g = graph_times(lambda **c: scorer(representation=rep_one, **c), candidates,
                                  args.graph_calls, args.graph_rounds)
            full_g = graph_times(serve, full, max(args.graph_calls // 10, 1), args.graph_rounds)
            dupn = (n, statistics.median(split_t), percentile(split_t, 99),
                    statistics.median(full_t), percentile(full_t, 99), max_diff,
                    len(user_names), len(item_names),
                    statistics.median(split_g), statistics.median(full_g),
                    statistics.median(score_t), percentile(score_t, 99), statistics.median(score_g))
    load_after = os.getloadavg()

    print()
    print(f"machine: {tt.cpu_name()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"before / {load_after[0]:.2f} after | Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    threads = {k: v or "default" for k, v in (("intra-op", args.intra_op_threads),
                                               ("inter-op", args.inter_op_threads))}
    print(f"TensorFlow threads: intra-op {threads['intra-op']}, inter-op {threads['inter-op']}")
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
        (n, s_med, s_p99, f_med, f_p99, diff, nu, ni, s_graph, f_graph,
         c_med, c_p99, c_graph) = dupn
        print()
        print(f"DUPN, {n:,} candidate items for one user (max |score difference| {diff:.2e}); "
              f"Python client: {args.candidate_calls} calls of each path; in the graph: "
              f"median of {args.graph_rounds} rounds of chained calls")
        print()
        print("| path | Python client median ms | p99 ms | speed-up | in-graph ms per call "
              "| speed-up |")
        print("|------|------------------------:|-------:|---------:|---------------------:"
              "|---------:|")
        print(f"| serving_default on {n:,} full rows | {f_med * 1e3:.2f} | {f_p99 * 1e3:.2f} "
              f"| 1.0x | {f_graph * 1e3:.2f} | 1.0x |")
        print(f"| user_representation (1 row, {nu} inputs) + score_items ({n:,} rows, "
              f"{ni} item inputs) | {s_med * 1e3:.2f} | {s_p99 * 1e3:.2f} | {f_med / s_med:.1f}x "
              f"| {s_graph * 1e3:.2f} | {f_graph / s_graph:.1f}x |")
        print(f"| score_items alone (representation cached for the session) | {c_med * 1e3:.2f} "
              f"| {c_p99 * 1e3:.2f} | {f_med / c_med:.1f}x | {c_graph * 1e3:.2f} "
              f"| {f_graph / c_graph:.1f}x |")


if __name__ == "__main__":
    main()
