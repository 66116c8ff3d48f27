"""Input pipeline throughput: pyarrow's own scan vs the mtlrec Parquet -> tf.data stream.

One run prints:
  * synthetic funnel generation rate (numpy only, and with Parquet writing),
  * rows/s of pyarrow scanning one day (same files, same projected columns),
  * rows/s of `make_dataset` over that day (Parquet; unshuffled and shuffled) and the
    ratio to pyarrow's rate (target >= 0.7),
  * rows/s of `make_dataset` over the same day converted to TFRecord,
  * peak RSS of a fresh process streaming a day 5x (and one 10x) larger than its shuffle
    buffer: bounded by the buffer, not by the day.

Usage (from the repository root):
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/data_throughput.py --rows 400000
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

DAY = "2024-01-01"


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def best_of(fn, repeats):
    """(rows, best wall seconds, best process CPU seconds) over `repeats` runs (the machine
    is shared: take the least disturbed run; CPU seconds count all threads)."""
    walls, cpus, rows = [], [], 0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        rows = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return rows, min(walls), min(cpus)


def pyarrow_scan(files, columns):
    rows = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65536, columns=columns, use_threads=True):
            rows += batch.num_rows
    return rows


def stream(ds):
    rows = 0
    for _, labels in ds:
        rows += int(labels["click"].shape[0])
    return rows


def memory_child(root, rows, shuffle_buffer, batch_size, knobs):
    """Runs in a fresh process: stream one day; print RSS (MB) after the first batch, the
    highest RSS sampled every 5 ms while streaming, the rows, and RSS after imports.
    (Not ru_maxrss: Linux carries the parent's peak across exec.)"""
    import threading

    from mtlrec.data_pipeline import funnel_schema_dict, make_dataset

    schema = funnel_schema_dict(**knobs)
    imported = rss_mb()
    ds = make_dataset(root, DAY, schema, batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=0)
    it = iter(ds)
    n = int(next(it)[1]["click"].shape[0])
    first = rss_mb()
    highest, done = [first], threading.Event()

    def sample():  # a monitor thread of this benchmark, not part of the pipeline
        while not done.is_set():
            highest[0] = max(highest[0], rss_mb())
            time.sleep(0.005)

    monitor = threading.Thread(target=sample, daemon=True)
    monitor.start()
    for _, labels in it:
        n += int(labels["click"].shape[0])
    done.set()
    monitor.join()
    print(f"{first:.1f} {highest[0]:.1f} {n} {imported:.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=400_000, help="rows of the day streamed for throughput")
    p.add_argument("--files", type=int, default=4, help="Parquet files per day")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shuffle-buffer", type=int, default=50_000, help="buffer of the shuffled stream")
    p.add_argument("--memory-rows", type=int, default=1_000_000, help="rows of the smaller day streamed for "
                   "peak RSS; the shuffle buffer is 1/5 of it, a second day is twice as large")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (best is reported)")
    p.add_argument("--root", default=None, help="work directory (default: a temporary one, removed)")
    p.add_argument("--memory-child", nargs=3, metavar=("ROOT", "ROWS", "BUFFER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    knobs = dict(num_users=50_000, num_items=20_000, files_per_day=args.files)

    if args.memory_child:
        root, rows, buffer = args.memory_child
        memory_child(root, int(rows), int(buffer), args.batch_size, knobs)
        return

    from mtlrec.data_pipeline import convert_day, funnel_schema_dict, generate_funnel, make_dataset
    from mtlrec.data_pipeline.columns import column_plan
    from mtlrec.data_pipeline.synthetic.synthetic_funnel import KNOBS, _impressions, _World

    work = args.root or tempfile.mkdtemp(prefix="mtlrec_bench_")
    os.makedirs(work, exist_ok=True)
    pq_root, tf_root, mem_root = (os.path.join(work, n) for n in ("parquet", "tfrecord", "memory"))
    schema = funnel_schema_dict(**knobs)
    columns = [c.name for c in column_plan(schema)]
    results = []
    try:
        # generation: numpy only (one part), then the whole day with Parquet writing
        k = dict(KNOBS, **knobs)
        world = _World(0, k)
        pool = world.user_pools(np.random.default_rng(0), world.live_items(0), 2 * k["max_len"])
        pop = world.popularity(0, 0)
        n_gen = min(args.rows, 200_000)
        _, t_gen, c_gen = best_of(lambda: _impressions(world, 0, 0, 0, n_gen, pop, pool, 0).num_rows, args.repeats)
        results.append(("generate_funnel rows, numpy only", n_gen, t_gen, c_gen))
        t, c = time.perf_counter(), time.process_time()
        generate_funnel(pq_root, DAY, 1, args.rows, seed=0, **knobs)
        results.append(("generate_funnel whole call (world + Parquet write)", args.rows, time.perf_counter() - t,
                        time.process_time() - c))
        files = sorted(os.path.join(pq_root, f"dt={DAY}", f) for f in os.listdir(os.path.join(pq_root, f"dt={DAY}")))
        t, c = time.perf_counter(), time.process_time()
        convert_day(pq_root, tf_root, DAY, schema, "tfrecord")
        results.append(("convert_day Parquet -> TFRecord", args.rows, time.perf_counter() - t, time.process_time() - c))

        results.append(("pyarrow ParquetFile.iter_batches, projected", *best_of(lambda: pyarrow_scan(files, columns), args.repeats)))
        for label, kw in [
            ("mtlrec make_dataset parquet", {}),
            (f"mtlrec make_dataset parquet, shuffle {args.shuffle_buffer}", dict(shuffle_buffer=args.shuffle_buffer, seed=0)),
            ("mtlrec make_dataset tfrecord", dict(fmt="tfrecord")),
            (f"mtlrec make_dataset tfrecord, shuffle {args.shuffle_buffer}", dict(fmt="tfrecord", shuffle_buffer=args.shuffle_buffer, seed=0)),
        ]:
            root = tf_root if kw.get("fmt") == "tfrecord" else pq_root
            ds = make_dataset(root, DAY, schema, batch_size=args.batch_size, **kw)
            stream(ds.take(2))  # build and trace once, outside the timing
            results.append((label, *best_of(lambda: stream(ds), args.repeats)))

        # memory: days 5x and 10x the shuffle buffer, each streamed in a fresh process
        mem_buffer = args.memory_rows // 5
        memory = []
        for factor in (5, 10):
            mem_rows = mem_buffer * factor
            root = f"{mem_root}{factor}"
            generate_funnel(root, DAY, 1, mem_rows, seed=1, **knobs)
            day_dir = os.path.join(root, f"dt={DAY}")
            on_disk = sum(os.path.getsize(os.path.join(day_dir, f)) for f in os.listdir(day_dir))
            arrow_bytes = sum(pq.ParquetFile(os.path.join(day_dir, f)).read(columns=columns).nbytes
                              for f in sorted(os.listdir(day_dir)))
            out = subprocess.run(
                [sys.executable, __file__, "--batch-size", str(args.batch_size), "--files", str(args.files),
                 "--memory-child", root, str(mem_rows), str(mem_buffer)],
                capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=os.getcwd()),
            ).stdout.split()
            memory.append((factor, mem_rows, on_disk, arrow_bytes, float(out[3]), float(out[0]), float(out[1]),
                           int(out[2])))
            shutil.rmtree(root, ignore_errors=True)
    finally:
        if args.root is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nbatch_size {args.batch_size}, {args.files} files per day, {len(columns)} projected columns "
          f"(features + labels), load average {os.getloadavg()[0]:.2f}, best of {args.repeats}\n")
    arrow = next(r for r in results if r[0].startswith("pyarrow"))
    arrow_rate, arrow_cpu = arrow[1] / arrow[2], arrow[3] / arrow[1]
    print(f"| {'measurement':<52} | {'rows':>9} | {'seconds':>7} | {'rows/s':>10} | {'vs pyarrow':>10} "
          f"| {'CPU us/row':>10} | {'CPU vs pyarrow':>14} |")
    print(f"|{'-' * 54}|{'-' * 10}:|{'-' * 8}:|{'-' * 11}:|{'-' * 11}:|{'-' * 11}:|{'-' * 15}:|")
    for name, rows, secs, cpu in results:
        streamed = name.startswith(("mtlrec", "pyarrow"))
        ratio = f"{rows / secs / arrow_rate:.2f}" if streamed else ""
        cpu_ratio = f"{arrow_cpu / (cpu / rows):.2f}" if streamed else ""
        print(f"| {name:<52} | {rows:>9,} | {secs:>7.3f} | {rows / secs:>10,.0f} | {ratio:>10} "
              f"| {cpu / rows * 1e6:>10.2f} | {cpu_ratio:>14} |")
    print("\n(CPU us/row: process CPU time over all threads per row; 'CPU vs pyarrow' = pyarrow's CPU per row / this "
          "one's, i.e. the rate ratio if both had the same cores to themselves.)")
    print(f"\nMemory, shuffle_buffer {mem_buffer:,} rows, batch {args.batch_size}, fresh process per day "
          "(MB; RSS includes TensorFlow itself):")
    print(f"| {'day rows':>10} | {'x buffer':>8} | {'Parquet MB':>10} | {'Arrow MB':>8} | {'RSS imports done':>16} "
          f"| {'RSS 1st batch':>13} | {'peak RSS while streaming':>24} |")
    print(f"|{'-' * 11}:|{'-' * 9}:|{'-' * 11}:|{'-' * 9}:|{'-' * 17}:|{'-' * 14}:|{'-' * 25}:|")
    for factor, rows, on_disk, arrow_bytes, imported, base, seen, n in memory:
        assert n == rows, (n, rows)
        print(f"| {rows:>10,} | {factor:>8} | {on_disk / 2**20:>10.0f} | {arrow_bytes / 2**20:>8.0f} | {imported:>16.0f} "
              f"| {base:>13.0f} | {seen:>24.0f} |")


if __name__ == "__main__":
    main()
