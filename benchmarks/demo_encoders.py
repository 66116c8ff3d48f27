"""Which history encoder the demo's data rewards: the demo with each `sequence_encoders` choice.

Runs `mtlrec demo` (`run_demo`: full training on days 1-2, the update on day 3, scored on
day 4) with its embedded config as it is (`hist_item_id` mean-pooled, outside the FM
block) and with `hist_item_id` read by each `--encoders` entry through
`model.sequence_encoders` (then also a field of the config's FM block), over `--seeds`
seeds (`model.seed` and `training.seed`; the data are the same). Prints each model's
day-4 AUC per output, mean ± sd, and each encoder's difference from the config as shipped.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/demo_encoders.py --seeds 3
"""

import argparse
import tempfile
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np
import yaml

from mtlrec.training.demo import DEMO_CONFIG, run_demo

SHIPPED = "as shipped"


def variant(docs, encoder, seed):
    out = []
    for doc in docs:
        doc = yaml.safe_load(yaml.safe_dump(doc))
        doc["model"]["seed"] = doc["model"]["seed"] + seed
        doc["training"]["seed"] = doc["training"]["seed"] + seed
        if encoder != SHIPPED:
            doc["model"]["sequence_encoders"] = {"hist_item_id": encoder}
        out.append(doc)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=None, help="rows per day (default: the demo's)")
    ap.add_argument("--encoders", type=lambda s: [e.strip() for e in s.split(",") if e.strip()],
                    default=["mean", "target_attention", "self_attention"],
                    help="encoders of hist_item_id, comma-separated, compared with the config as shipped")
    args = ap.parse_args()
    with open(DEMO_CONFIG) as f:
        docs = list(yaml.safe_load_all(f))
    labels = [SHIPPED] + [e for e in args.encoders if e != SHIPPED]
    results = {}
    start = time.perf_counter()
    for seed in range(args.seeds):
        for label in labels:
            with tempfile.TemporaryDirectory(prefix="mtlrec_demo_encoders_") as tmp:
                path = f"{tmp}/demo.yaml"
                with open(path, "w") as f:
                    yaml.safe_dump_all(variant(docs, label, seed), f, sort_keys=False)
                for result in run_demo(f"{tmp}/work", rows_per_day=args.rows, config_path=path, out=lambda *_: None):
                    for output, values in result["metrics"].items():
                        results.setdefault((result["name"], output, label), []).append(values["auc"])
            print(f"seed {seed} {label}: " + ", ".join(
                f"{m} {o} {v[-1]:.4f}" for (m, o, lab), v in results.items() if lab == label), flush=True)
    minutes = (time.perf_counter() - start) / 60
    header = ["model", "output"] + labels + [f"{e} − {SHIPPED}" for e in labels[1:]]
    rows = []
    for model, output in dict.fromkeys((m, o) for m, o, _ in results):
        base = np.mean(results[(model, output, SHIPPED)])
        rows.append([model, output] + [pc.fmt_mean_std(results[(model, output, e)]) for e in labels]
                    + [f"{np.mean(results[(model, output, e)]) - base:+.4f}" for e in labels[1:]])
    pc.print_report(f"demo, {args.seeds} seeds, {minutes:.1f} minutes", header, rows)


if __name__ == "__main__":
    main()
