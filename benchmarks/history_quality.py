"""What a behavior history is worth: mtlrec's history encoders against DeepCTR, with the bound.

Data: `mtlrec.data_pipeline.generate_taste_days` (`mtlrec generate --world taste`): many
users with few impressions a day each, whose taste drives their history (the items they
clicked or viewed before, `hist_item_id` and `hist_category`, reading the candidate's
`item_id` and `item_category` tables). Train on the first `--train-days` days, score the
next day. Features, both systems: `user_id`, `item_id`, `item_category`, `position`,
log1p(`price`) and the two history sequences.

- mtlrec, through its runner (`Experiment.train`, what `mtlrec train` runs, with the
  config's defaults), once per `--encoders` entry: `mean` is the model as it is without
  `model.sequence_encoders` (every history mean-pooled); any other encoder reads
  `hist_item_id` and `hist_category` together as one history (`ENCODER_KEY`).
- DeepCTR 0.9.4's ESMM and MMOE (optional: `pip install -e '.[deepctr]'`; skipped with
  a message when not importable), the histories as `VarLenSparseFeat` with the mean
  combiner and the embedding of `item_id` / `item_category` (`embedding_name`), ids
  index-encoded (id + 1; 0 is DeepCTR's padding).

Same embedding dim, towers, experts, batch, epochs and learning rate for both; MMoE's CVR
learns on clicked rows, ESMM's over all impressions through pCTCVR (as in
`quality_vs_peers.py`, whose helpers drive both systems). Per model, system and encoder,
over `--seeds` seeds (initialisation and shuffling; the data are the same): CTR AUC, CTCVR
AUC, CVR AUC on the clicked rows, calibration; mean ± sd. The bound: the AUCs of the
generator's own probabilities on the evaluation day, from the true taste (oracle), from
the history alone (`history_ctr`, `history_ctcvr`) and without the history (`prior_*`).

`--data DIR` keeps the generated days for the next run; `--results FILE` appends each
finished run and reads back those already there (a run interrupted resumes; a new encoder
adds its rows without rerunning mean and DeepCTR); `--write` puts the table into
docs/results/quality.md.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/history_quality.py --encoders mean,target_attention
"""

import argparse
import copy
import ctypes
import json
import logging
import os
import tempfile
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import keras
import numpy as np

from mtlrec.data_pipeline import generate_taste_days, taste_schema_dict
from mtlrec.data_pipeline.synthetic.synthetic_taste import BOUND_COLUMNS
from mtlrec.metrics import auc
from mtlrec.training.config import ConfigError, config_from_dict
from quality_vs_peers import deepctr_fit_predict, deepctr_net, model_config, run_mtlrec, scores, with_overrides
from train_throughput import deepctr_available, tasks_section

#: the model config key that chooses the history encoders (`sequence_encoders`); the
#: benchmark sets `{HISTORY: {"encoder": <encoder>, "features": HISTORY_FEATURES}}` under it
ENCODER_KEY = "model.sequence_encoders"
HISTORY = "behavior"
HISTORY_FEATURES = ("hist_item_id", "hist_category")
MODELS = ("esmm", "mmoe")
METRICS = (
    ("ctr_auc", "CTR AUC"),
    ("ctcvr_auc", "CTCVR AUC"),
    ("cvr_auc_clicked", "CVR AUC (clicks)"),
    ("ctr_calibration", "CTR calib."),
    ("ctcvr_calibration", "CTCVR calib."),
)


def encoder_overrides(encoder):
    """`--set`-style overrides that make a config read the histories with `encoder`
    (none for `mean`: the model as it is without the key, every history mean-pooled).
    `<encoder>+dot` (or `+fm`) also names the interaction block, with the history one of
    its fields: `mean+dot` adds the inner product of the mean-pooled history with the
    candidate's item embedding."""
    encoder, _, interaction = encoder.partition("+")
    overrides = [f"model.interaction={json.dumps({'type': interaction})}"] if interaction else []
    if encoder == "mean" and not interaction:
        return overrides
    value = {HISTORY: {"encoder": encoder, "features": list(HISTORY_FEATURES)}}
    return overrides + [f"{ENCODER_KEY}={json.dumps(value)}"]


def knobs_of(args):
    return dict(num_users=args.num_users, num_items=args.num_items, num_categories=args.num_categories,
                max_len=args.max_len, dim=args.dim)


def make_days(args, root):
    """Generate (or reuse, when `root` holds the same generation) the days; returns the
    day names."""
    spec = {"rows": args.rows, "days": args.train_days + 1, "seed": args.data_seed, "knobs": knobs_of(args)}
    marker = os.path.join(root, "_generation.json")
    if os.path.exists(marker):
        with open(marker) as f:
            saved = json.load(f)
        if saved["spec"] == spec and all(os.path.exists(f"{root}/dt={d}/part-00000.parquet") for d in saved["days"]):
            return saved["days"]
        os.remove(marker)
    start = time.perf_counter()
    days = generate_taste_days(root, "2024-01-01", spec["days"], args.rows, seed=args.data_seed, **spec["knobs"])
    with open(marker, "w") as f:
        json.dump({"spec": spec, "days": days}, f)
    print(f"generated {len(days)} days x {args.rows:,} impressions in {time.perf_counter() - start:.0f} s", flush=True)
    return days


def bounds(test):
    """AUCs the generator's own probabilities reach on the evaluation day."""
    labels = test[1]
    click = labels["click"]
    ctcvr = click * labels["conversion"]
    return {
        "oracle (true taste)": (auc(click, labels["true_ctr"]), auc(ctcvr, labels["true_ctr"] * labels["true_cvr"])),
        "from the history alone": (auc(click, labels["history_ctr"]), auc(ctcvr, labels["history_ctcvr"])),
        "without the history": (auc(click, labels["prior_ctr"]), auc(ctcvr, labels["prior_ctcvr"])),
    }


def deepctr_columns(schema, args):
    from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat

    tables = {f["name"]: f["num_buckets"] + 1 for f in schema["categorical"]}  # id + 1; 0 pads
    columns = [SparseFeat(name, vocabulary_size=size, embedding_dim=args.dim) for name, size in tables.items()]
    columns += [DenseFeat(f["name"], 1) for f in schema["numeric"]]
    for f in schema["sequence"]:
        owner = f["shared_with"]
        columns.append(VarLenSparseFeat(
            SparseFeat(f["name"], vocabulary_size=tables[owner], embedding_dim=args.dim, embedding_name=owner),
            maxlen=f["max_len"], combiner="mean"))
    return columns


def deepctr_inputs(features, schema):
    """mtlrec's padded arrays -> DeepCTR's inputs: ids + 1 (the padding -1 becomes 0,
    DeepCTR's mask), log1p of the numerics."""
    def shifted(name):
        out = features[name].astype(np.int32)
        out += 1
        return out

    x = {f["name"]: shifted(f["name"]).reshape(-1, 1) for f in schema["categorical"]}
    x.update({f["name"]: shifted(f["name"]) for f in schema["sequence"]})
    x.update({f["name"]: np.log1p(np.maximum(features[f["name"]], 0.0)).astype(np.float32).reshape(-1, 1)
              for f in schema["numeric"]})
    return x


def release_freed_memory():
    """Give the heap that the day's read batches left free back to the system (glibc keeps
    it otherwise: a 3M-row day read in batches would hold twice its size)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_encoders(args, schema, root, days):
    """Fail fast (one line) when this mtlrec does not know an asked encoder."""
    for encoder in args.encoders:
        for model in args.models:
            config = with_overrides({"name": "check", "run_dir": "unused", "data": {"root": root}, "schema": schema,
                                     "tasks": tasks_section(model), "model": model_config(model, args)},
                                    encoder_overrides(encoder))
            try:
                config_from_dict(config)
            except ConfigError as err:
                raise SystemExit(f"encoder {encoder!r} with {model}: this mtlrec refuses the config ({err})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3_000_000, help="impressions per day")
    ap.add_argument("--train-days", type=int, default=1, help="days trained on; the next day is scored")
    ap.add_argument("--num-users", type=int, default=1_000_000)
    ap.add_argument("--num-items", type=int, default=50_000)
    ap.add_argument("--num-categories", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=30)
    ap.add_argument("--data-seed", type=int, default=11)
    ap.add_argument("--data", help="directory to generate the days into and reuse them from (default: a temporary one)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--encoders", type=lambda s: [e.strip() for e in s.split(",") if e.strip()], default=["mean"],
                    help="mtlrec's history encoders, comma-separated, e.g. mean,target_attention,target_attention+dot "
                         "(+dot or +fm: with that interaction block, the history one of its fields)")
    ap.add_argument("--systems", nargs="+", default=["mtlrec", "deepctr"], choices=["mtlrec", "deepctr"])
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--tower-units", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--expert-units", type=int, nargs="+", default=[64])
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--learning-rate", type=float, default=0.001,
                    help="DeepCTR's Adam (mtlrec uses its config defaults, also Adam 0.001)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY.PATH=JSON",
                    help="override an mtlrec config key for a variant run")
    ap.add_argument("--results", help="JSON-lines file of finished runs: appended to, and the runs it holds "
                                       "are not run again (resume after an interruption)")
    ap.add_argument("--write", action="store_true", help="write the section into docs/results/quality.md")
    args = ap.parse_args()

    have_deepctr, info = deepctr_available()
    systems = list(args.systems)
    if "deepctr" in systems and not have_deepctr:
        print(f"deepctr not importable ({info}); its rows are skipped "
              "(pip install -e '.[deepctr]' to compare)")
        systems.remove("deepctr")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("mtlrec.training").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # DeepCTR's predict retracing notes

    schema = taste_schema_dict(**knobs_of(args))
    results = {}  # (model, system label) -> list of score dicts
    seconds = {}
    done = {}
    if args.results and os.path.exists(args.results):
        with open(args.results) as f:
            for line in f:
                run = json.loads(line)
                done[(run["seed"], run["model"], run["label"])] = run
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtlrec_history_") as tmp:
        root = args.data or f"{tmp}/data"
        days = make_days(args, root)
        train_days, eval_day = days[:args.train_days], days[args.train_days]
        # the runs see the training days only (no evaluation of their own: all are scored here)
        train_root = f"{tmp}/train"
        os.makedirs(train_root)
        for day in train_days:
            os.symlink(os.path.abspath(f"{root}/dt={day}"), f"{train_root}/dt={day}")
        if "mtlrec" in systems:
            check_encoders(args, schema, train_root, days)
        test = pc.funnel_day_arrays(root, eval_day, schema, extra_columns=("true_ctr", "true_cvr", *BOUND_COLUMNS))
        bound = bounds(test)
        click = test[1]["click"]
        print(f"eval day {eval_day}: {len(click):,} impressions, {int(click.sum()):,} clicks, "
              f"{int((click * test[1]['conversion']).sum()):,} conversions; "
              f"{len(np.unique(test[0]['user_id'])):,} users", flush=True)
        for name, (ctr, ctcvr) in bound.items():
            print(f"bound {name}: CTR AUC {ctr:.4f}, CTCVR AUC {ctcvr:.4f}", flush=True)
        deepctr_train = deepctr_test = None
        if "deepctr" in systems:  # DeepCTR's inputs (int32) built once; mtlrec reads the days itself
            deepctr_test = deepctr_inputs(test[0], schema)
            inputs, labels = [], []
            for day in train_days:
                features, day_labels = pc.funnel_day_arrays(root, day, schema, extra_columns=())
                inputs.append(deepctr_inputs(features, schema))
                labels.append(day_labels)
                del features
            deepctr_train = ({k: np.concatenate([x[k] for x in inputs]) for k in inputs[0]},
                             {k: np.concatenate([y[k] for y in labels]) for k in labels[0]})
            del inputs, labels
        release_freed_memory()
        for seed in range(args.seeds):
            for model in args.models:
                runs = [(f"mtlrec, {e}", e) for e in args.encoders] if "mtlrec" in systems else []
                runs += [("DeepCTR, mean", None)] if "deepctr" in systems else []
                for label, encoder in runs:
                    key = (seed, model, label)
                    if key not in done:
                        if encoder is None:
                            pc.seed_everything(seed)
                            net = deepctr_net(model, deepctr_columns(schema, args), seed, args)
                            p_ctr, p_cvr, secs = deepctr_fit_predict(
                                net, model, deepctr_train[0], deepctr_train[1], deepctr_test, args)
                        else:
                            run_args = copy.copy(args)
                            run_args.set = list(args.set) + encoder_overrides(encoder)
                            p_ctr, p_cvr, secs = run_mtlrec(model, train_root, days, schema, test, seed, run_args,
                                                            f"{tmp}/run_{model}_{encoder}_{seed}", args.train_days)
                            keras.backend.clear_session()
                        done[key] = {"seed": seed, "model": model, "label": label,
                                     "scores": scores(p_ctr, p_cvr, test), "seconds": secs}
                        if args.results:
                            with open(args.results, "a") as f:
                                f.write(json.dumps(done[key]) + "\n")
                    s, secs = done[key]["scores"], done[key]["seconds"]
                    results.setdefault((model, label), []).append(s)
                    seconds.setdefault((model, label), []).append(secs)
                    print(f"seed {seed} {model} {label}: " + ", ".join(f"{k} {v:.4f}" for k, v in s.items())
                          + f" ({secs:.0f}s)", flush=True)
    minutes = (time.perf_counter() - start) / 60
    report(args, results, seconds, bound, minutes, len(click), info if have_deepctr else None)


def report(args, results, seconds, bound, minutes, eval_rows, deepctr_version):
    header = ["model", "system, history"] + [name for _, name in METRICS] + ["train s"]
    rows = []
    for model in args.models:
        labels = [label for (m, label) in results if m == model]
        for label in labels:
            rows.append([model, label] + [pc.fmt_mean_std([r[k] for r in results[(model, label)]]) for k, _ in METRICS]
                        + [f"{np.mean(seconds[(model, label)]):.0f}"])
        for label in labels:
            for ref in ("mtlrec, mean", "DeepCTR, mean"):
                if label.startswith("DeepCTR") or label == ref or (model, ref) not in results:
                    continue
                rows.append([model, f"{label} − {ref}"] + [
                    f"{np.mean([r[k] for r in results[(model, label)]]) - np.mean([r[k] for r in results[(model, ref)]]):+.4f}"
                    for k, _ in METRICS[:3]] + [""] * (len(METRICS) - 3 + 1))
    bound_rows = [[name, f"{ctr:.4f}", f"{ctcvr:.4f}"] for name, (ctr, ctcvr) in bound.items()]
    summary = (f"{args.rows:,} impressions a day, {args.num_users:,} users, train {args.train_days} day(s), "
               f"{eval_rows:,} scored; {args.seeds} seeds, {minutes:.1f} minutes; "
               f"deepctr {deepctr_version or 'not installed'}")
    print()
    pc.print_report(summary, header, rows)
    print()
    print(pc.markdown_table(["the generator's probabilities", "CTR AUC", "CTCVR AUC"], bound_rows))
    if args.write:
        body = "\n\n".join([
            f"```\n{pc.command()}\n```",
            f"{summary}; {pc.machine()}.",
            pc.markdown_table(header, rows),
            "The bound on the same evaluation day (the generator's own probabilities):",
            pc.markdown_table(["the generator's probabilities", "CTR AUC", "CTCVR AUC"], bound_rows),
        ])
        path = pc.write_section("Behavior histories: the measurement", body, results=pc.QUALITY)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
