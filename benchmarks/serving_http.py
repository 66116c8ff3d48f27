"""`mtlrec serve` under load: a real HTTP client against TF Serving's REST API, beside
the in-process `serving_default` call.

The model is one of `serving_latency.py`'s (the large-vocabulary configuration of
`train_throughput.py`: 20 categorical features with up to 1,000,000 buckets, dim 16,
5 numerics; MMoE by default), written with the project's export. Then:

1. in process: `--latency-calls` calls of `serving_default` at batch 1, one after
   another (what `serving_latency.py` measures): median and p99;
2. `mtlrec serve --model EXPORT_ROOT --port 0` in a process of its own, driven by an
   aiohttp client (one event loop, `concurrency` requests in flight, each a batch-1
   row-form request of a different row, sent again as soon as its answer is back) for
   `--seconds` at each of `--concurrency` (default 1 and 16), after `--warmup-seconds`
   at that concurrency: requests/s, p50/p99 latency, errors (any answer but 200, or no
   answer), and the CPU time of the server process (all its threads) and of the client
   per answered request, the figure a loaded machine moves least;
3. a version swap under load: at concurrency 16, a new version (a copy of the first,
   written aside and renamed into place as `export_model` writes one) appears after
   5 s; the load goes on until the server reports the new version AVAILABLE, then
   5 s more; errors must be 0.

The target: p99 at concurrency 16 within 5x the in-process p99 at batch 1. Client and
server share the machine's cores (loopback), so the client's own work is in the
figures; the machine's load average is printed.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/serving_http.py
"""

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import aiohttp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serving_latency as sl  # noqa: E402  (the in-process measurement)
import train_throughput as tt  # noqa: E402  (the shared benchmark configuration)

from mtlrec.models import build_model  # noqa: E402
from mtlrec.training.serving.export import export_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def request_bodies(features, names, count):
    """`count` row-form bodies of one row each (id lists cut after their items)."""
    bodies = []
    for i in range(count):
        row = {}
        for name in names:
            value = features[name][i]
            if value.ndim == 1:
                value = value[value != -1]
            row[name] = value.tolist()
        bodies.append(json.dumps({"instances": [row]}).encode())
    return bodies


async def load(url, bodies, concurrency, seconds, on_tick=None):
    """Send requests for `seconds` with `concurrency` in flight: (latencies of the
    answered requests, errors, elapsed seconds). `on_tick(elapsed)` is awaited every
    0.1 s; it may return True to stop the load."""
    latencies, errors = [], []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client(k):
            i = k
            while not stop.is_set():
                body = bodies[i % len(bodies)]
                i += concurrency
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        answer = await r.read()
                        if r.status != 200 or b"predictions" not in answer:
                            errors.append(f"{r.status}: {answer[:200]!r}")
                            continue
                except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                    errors.append(repr(err))
                    continue
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        tasks = [asyncio.create_task(client(k)) for k in range(concurrency)]
        while True:
            await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or (on_tick is not None and await on_tick(elapsed)):
                break
        stop.set()
        await asyncio.gather(*tasks)
        return latencies, errors, time.perf_counter() - start


def start_server(root, extra):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlrec.cli", "serve", "--model", root, "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"mtlrec serve did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc, line.split(" at ")[-1].strip()


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid`, all its threads (Linux; nan elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def summary(latencies, errors, elapsed, server_cpu=float("nan"), client_cpu=float("nan")):
    ms = np.asarray(latencies) * 1e3
    count = max(len(latencies), 1)
    return dict(requests=len(latencies), errors=len(errors), rate=len(latencies) / elapsed,
                p50=float(np.percentile(ms, 50)) if len(ms) else float("nan"),
                p99=float(np.percentile(ms, 99)) if len(ms) else float("nan"),
                server_cpu=server_cpu * 1e3 / count, client_cpu=client_cpu * 1e3 / count,
                first_errors=errors[:3])


def measured(proc, run):
    """`summary` of `run()` (a `load` result), with the server's and this process's CPU
    milliseconds per answered request."""
    server, client = cpu_seconds(proc.pid), time.process_time()
    result = run()
    return summary(*result, cpu_seconds(proc.pid) - server, time.process_time() - client)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mmoe", choices=tt.MODELS)
    parser.add_argument("--vocab", default="large", choices=("large", "tiny"))
    parser.add_argument("--tiny-vocab", type=int, default=1000)
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--swap-concurrency", type=int, default=16, help="0: no version swap")
    parser.add_argument("--server-args", default="", help="more `mtlrec serve` flags, e.g. '--batch-wait-ms 0'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data_args = argparse.Namespace(num_batches=1, batch_size=1024, seed=args.seed)
    (features, _labels), = tt.make_batches(data_args)
    root = tempfile.mkdtemp(prefix="mtlrec_serving_http_")
    export_root = os.path.join(root, "export")
    keras.backend.clear_session()
    schema = tt.make_schema(args.vocab, args.tiny_vocab, sequences=args.model == "dupn")
    model = build_model({**tt.model_section(args.model), "seed": 1}, schema, tt.tasks_section(args.model))
    params = model.count_params()
    first = export_model(model, export_root, metadata={"name": args.model, "schema": schema})
    del model
    keras.backend.clear_session()

    load_before = os.getloadavg()
    serve = tf.saved_model.load(str(first)).signatures["serving_default"]
    names = sl.signature_names(serve)
    one = sl.rows(features, names, 0, 1)
    sl.call_times(serve, one, 20)
    cpu = time.process_time()
    in_process = sl.call_times(serve, one, args.latency_calls)
    cpu = (time.process_time() - cpu) * 1e3 / args.latency_calls
    local = (statistics.median(in_process) * 1e3, sl.percentile(in_process, 99) * 1e3)
    del serve
    print(f"in process, batch 1: median {local[0]:.2f} ms, p99 {local[1]:.2f} ms "
          f"({args.latency_calls} sequential calls)", flush=True)

    bodies = request_bodies(features, names, 1024)
    proc, url = start_server(export_root, args.server_args.split())
    results = {}
    try:
        for concurrency in [int(c) for c in args.concurrency.split(",") if c]:
            asyncio.run(load(url + ":predict", bodies, concurrency, args.warmup_seconds))
            results[concurrency] = r = measured(
                proc, lambda: asyncio.run(load(url + ":predict", bodies, concurrency, args.seconds)))
            print(f"HTTP, concurrency {concurrency}: {r['requests']} requests in {args.seconds:.0f} s, "
                  f"{r['rate']:.0f}/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, server CPU "
                  f"{r['server_cpu']:.2f} ms a request, errors {r['errors']} {r['first_errors']}", flush=True)

        swap = None
        if args.swap_concurrency:
            marks = {}

            async def on_tick(elapsed):
                if "written" not in marks and elapsed >= 5:
                    tmp = os.path.join(export_root, ".tmp-2")
                    shutil.copytree(first, tmp)
                    os.rename(tmp, os.path.join(export_root, "2"))
                    marks["written"] = elapsed
                if "written" in marks and "available" not in marks:
                    async with aiohttp.ClientSession() as session:
                        async with session.get(url + "/versions/2") as r:
                            status = await r.json()
                    if r.status == 200 and status["model_version_status"][0]["state"] == "AVAILABLE":
                        marks["available"] = elapsed
                return "available" in marks and elapsed >= marks["available"] + 5

            swap = measured(proc, lambda: asyncio.run(
                load(url + ":predict", bodies, args.swap_concurrency, 600, on_tick)))
            swap.update(marks)
            print(f"version swap at concurrency {args.swap_concurrency}: version 2 written at "
                  f"{marks.get('written', float('nan')):.1f} s, AVAILABLE at {marks.get('available', float('nan')):.1f} s; "
                  f"{swap['requests']} requests, {swap['rate']:.0f}/s, p50 {swap['p50']:.2f} ms, "
                  f"p99 {swap['p99']:.2f} ms, errors {swap['errors']} {swap['first_errors']}", flush=True)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=120)
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    batching = [line for line in stderr.splitlines() if "model calls" in line]

    print()
    print(f"machine: {tt.cpu_name()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"before / {load_after[0]:.2f} after | Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, aiohttp {aiohttp.__version__}")
    print(f"{args.model}, {args.vocab} vocabularies, {params / 1e6:.1f}M parameters; server flags: "
          f"{args.server_args or '(defaults)'}; {batching[-1].split(' ', 1)[-1] if batching else ''}")
    print()
    print("| path | requests/s | p50 ms | p99 ms | server CPU ms a request | client CPU ms a request | errors |")
    print("|------|-----------:|-------:|-------:|------------------------:|------------------------:|-------:|")
    print(f"| in process, `serving_default`, batch 1, sequential | {1e3 / local[0]:.0f} | {local[0]:.2f} "
          f"| {local[1]:.2f} | {cpu:.2f} | - | - |")
    rows = [(f"HTTP, batch 1, concurrency {c}", r) for c, r in results.items()]
    if swap is not None:
        rows.append((f"HTTP, batch 1, concurrency {args.swap_concurrency}, a new version loaded during the run", swap))
    for label, r in rows:
        print(f"| {label} | {r['rate']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['server_cpu']:.2f} "
              f"| {r['client_cpu']:.2f} | {r['errors']} |")
    if 16 in results:
        ratio = results[16]["p99"] / local[1]
        print()
        print(f"p99 at concurrency 16 / in-process p99: {ratio:.1f}x (target: within 5x): "
              f"{'met' if ratio <= 5 else 'missed'}")


if __name__ == "__main__":
    main()
