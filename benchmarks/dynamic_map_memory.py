"""Memory of a `lookup: dynamic` id map: bytes per admitted id, peak of a 1M-row map.

For int64 and for string ids (`"item-<n>"`, 10-12 bytes), a fresh child process builds one
`DynamicIdMap` of capacity `--ids` (default 1,000,000) and admits `--ids` distinct ids,
`--batch` per `observe` call (one `tf.function`, as in the training step). It reports the
resident memory (`VmRSS`) before and after, and the peak (`VmHWM`) while admitting; the
map alone, without its embedding rows (those are `capacity x dim x 4` bytes, plus the
optimizer slots, as for `hash`).

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/dynamic_map_memory.py
"""

import argparse
import json
import os
import subprocess
import sys


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(key_dtype, ids, batch):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    from mtlrec.layers.embedding.dynamic_id_map import DynamicIdMap

    id_map = DynamicIdMap(key_dtype=key_dtype, capacity=ids, oov_buckets=1)
    id_map.build()
    id_map.start_day(1)
    observe = tf.function(id_map.observe)
    values = np.arange(ids, dtype=np.int64) * 7919 + 11
    chunks = [values[i : i + batch] for i in range(0, ids, batch)]
    if key_dtype == "string":
        chunks = [np.char.add("item-", c.astype(str)).astype(object) for c in chunks]
    observe(tf.constant(chunks[0][:1]))  # trace once before measuring
    before, peak_before = status("VmRSS"), status("VmHWM")
    for chunk in chunks:
        observe(tf.constant(chunk))
    after, peak = status("VmRSS"), status("VmHWM")
    report = id_map.report()
    print(json.dumps({
        "key_dtype": key_dtype, "admitted": report["rows_in_use"], "rss_before": before,
        "rss_after": after, "peak": peak, "peak_before": peak_before,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--child", choices=("int64", "string"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.ids, args.batch)
    print("| key dtype | admitted | RSS growth | bytes per admitted id | peak RSS while admitting |")
    print("|-----|---------:|-----------:|----------------------:|-------------------------:|")
    for key_dtype in ("int64", "string"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", key_dtype, "--ids", str(args.ids), "--batch", str(args.batch)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        grown = r["rss_after"] - r["rss_before"]
        print(f"| {key_dtype} | {r['admitted']:,} | {grown / 2**20:,.0f} MiB | {grown / r['admitted']:,.0f} "
              f"| {r['peak'] / 2**20:,.0f} MiB (process; {r['peak_before'] / 2**20:,.0f} MiB before) |")


if __name__ == "__main__":
    main()
