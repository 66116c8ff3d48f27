"""The demo's quality with collision-free lookups against the hashed tables it shipped before.

Runs `mtlrec demo` (`run_demo`: full training on days 1-2, the update on day 3, scored on
day 4) with its embedded config (`identity` for the small integer vocabularies, `dynamic`
for user and item ids and the string features: no id shares a row) and with the same
config hashed as in 0.4.0 (every `lookup` removed, `user_age` back to 16 buckets), over
`--seeds` seeds (`model.seed` and `training.seed`; the data are the same). Prints each
model's day-4 AUC per output, mean ± sd, the difference, and the collision warnings each
variant logged.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/demo_lookups.py --seeds 3
"""

import argparse
import logging
import tempfile
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np
import yaml

from mtlrec.training.demo import DEMO_CONFIG, run_demo


def variant(docs, hashed, seed):
    out = []
    for doc in docs:
        doc = yaml.safe_load(yaml.safe_dump(doc))
        doc["model"]["seed"] = doc["model"]["seed"] + seed
        doc["training"]["seed"] = doc["training"]["seed"] + seed
        if hashed:
            for section in ("categorical", "sequence"):
                for feature in doc["schema"].get(section, []):
                    feature.pop("lookup", None)
                    if feature["name"] == "user_age":
                        feature["num_buckets"] = 16
        out.append(doc)
    return out


class _Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.collisions = 0

    def emit(self, record):
        self.collisions += "share an embedding row" in record.getMessage()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=None, help="rows per day (default: the demo's)")
    args = ap.parse_args()
    logging.getLogger("mtlrec.training").setLevel(logging.INFO)
    counter = _Count()
    logging.getLogger("mtlrec.training").addHandler(counter)
    with open(DEMO_CONFIG) as f:
        docs = list(yaml.safe_load_all(f))
    results, warnings = {}, {}
    start = time.perf_counter()
    for seed in range(args.seeds):
        for label, hashed in (("hash (0.4.0)", True), ("identity + dynamic", False)):
            with tempfile.TemporaryDirectory(prefix="mtlrec_demo_lookups_") as tmp:
                path = f"{tmp}/demo.yaml"
                with open(path, "w") as f:
                    yaml.safe_dump_all(variant(docs, hashed, seed), f, sort_keys=False)
                counter.collisions = 0
                for result in run_demo(f"{tmp}/work", rows_per_day=args.rows, config_path=path, out=lambda *_: None):
                    for output, values in result["metrics"].items():
                        results.setdefault((result["name"], output, label), []).append(values["auc"])
                warnings.setdefault(label, []).append(counter.collisions)
            print(f"seed {seed} {label}: " + ", ".join(
                f"{m} {o} {v[-1]:.4f}" for (m, o, lab), v in results.items() if lab == label), flush=True)
    minutes = (time.perf_counter() - start) / 60
    header = ["model", "output", "hash (0.4.0)", "identity + dynamic", "difference"]
    rows = []
    for model, output in dict.fromkeys((m, o) for m, o, _ in results):
        before, now = results[(model, output, "hash (0.4.0)")], results[(model, output, "identity + dynamic")]
        rows.append([model, output, pc.fmt_mean_std(before), pc.fmt_mean_std(now),
                     f"{np.mean(now) - np.mean(before):+.4f}"])
    summary = (f"demo, {args.seeds} seeds, {minutes:.1f} minutes; collision warnings per demo run: "
               + ", ".join(f"{label} {np.mean(v):.0f}" for label, v in warnings.items()))
    pc.print_report(summary, header, rows)


if __name__ == "__main__":
    main()
