"""Loss weighting strategies on MMoE with two tasks of very different noise and scale.

Data: `mtlrec.data_pipeline.synthetic.mmoe_synthetic` (input dim 100, task correlation `--p`),
called twice with the same seed (same x, same task weights) and different label noise:
task "clean" is y1 with noise std 0.1; task "noisy" is `--scale` x (y2 with noise std
`--noise`), so its MSE is about `--scale`^2 times larger and mostly irreducible.

Each strategy trains the same MMoE (`mtlrec.models.MMoE`, 8 experts of 16 units, towers
of 8) through the library's own training loop (`mtlrec.training.Trainer` built from a
validated experiment config, `train_day` over in-memory batches), which applies the
strategy: fixed (1, 1), uncertainty (Kendall et al.), GradNorm (Chen et al., on the
experts) and PCGrad (Yu et al., on the shared variables). Reported per task: test MSE
divided by the label variance (1 - R^2) and by the noise floor (MSE / noise variance;
1.0 is the best possible), the strategy's final task weights, and the wall time.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/loss_weighting.py
"""

import argparse
import tempfile
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import numpy as np

from mtlrec.data_pipeline import mmoe_synthetic
from mtlrec.training import DayPosition, Trainer, config_from_dict

DIM = 100
TASKS = [
    {"name": "clean", "label": "y_clean", "kind": "regression"},
    {"name": "noisy", "label": "y_noisy", "kind": "regression"},
]
SCHEMA = pc.dense_schema(DIM, {"y_clean": "regression", "y_noisy": "regression"})
STRATEGIES = {
    "fixed": {"type": "fixed"},
    "uncertainty": {"type": "uncertainty"},
    "gradnorm": {"type": "gradnorm", "alpha": 1.5},
    "pcgrad": {"type": "pcgrad", "seed": 0},
}


def make_data(repeat, args):
    n = args.train_size + args.test_size
    seed = 100 + repeat
    x, y_clean, _ = mmoe_synthetic(n, args.p, dim=DIM, seed=seed, noise_std=0.1)
    x2, _, y2 = mmoe_synthetic(n, args.p, dim=DIM, seed=seed, noise_std=args.noise)
    assert np.array_equal(x, x2)
    features = pc.dense_features(x)
    labels = {"y_clean": y_clean, "y_noisy": (args.scale * y2).astype(np.float32)}
    tr, te = slice(0, args.train_size), slice(args.train_size, n)
    return (pc.take(features, tr), pc.take(labels, tr)), (pc.take(features, te), pc.take(labels, te))


def run(strategy, repeat, train, test, args, root):
    config = config_from_dict({
        "name": f"loss_weighting_{strategy}",
        "data": {"root": root, "funnel": []},  # no click -> conversion funnel here
        "schema": SCHEMA,
        "tasks": TASKS,
        "model": {"type": "mmoe", "num_experts": 8, "expert_units": [16], "tower_units": [8],
                  "seed": 10 + repeat},
        "loss_weighting": STRATEGIES[strategy],
        "optimizer": {"dense": {"name": "adam", "learning_rate": args.learning_rate},
                      "embedding": {"name": "lazy_adam", "learning_rate": args.learning_rate}},
        "training": {"batch_size": args.batch_size, "epochs_per_day": args.epochs,
                     "seed": repeat, "log_every": 10**9, "checkpoint_every": 10**9},
    }, base_dir=root)
    trainer = Trainer(config, SCHEMA)
    ds = pc.dataset(*train, args.batch_size, seed=repeat)
    stamps = []  # when each epoch starts: epoch 0 also traces the step function

    def epoch_data(epoch, skip):
        stamps.append(time.perf_counter())
        return ds.skip(skip)

    position = trainer.train_day(DayPosition(day="2024-01-01"), epoch_data)
    end = time.perf_counter()
    seconds = end - stamps[0]
    later = position.steps * (len(stamps) - 1) / len(stamps)  # steps after the first epoch
    step_ms = 1000 * (end - stamps[1]) / later if len(stamps) > 1 else 1000 * seconds / position.steps
    pred = pc.predict(trainer.model, test[0])
    weights = {k: float(v) for k, v in trainer.weighting.task_weights().items()}
    out = {"seconds": seconds, "steps": position.steps, "weights": weights, "step_ms": step_ms}
    for t in TASKS:
        y = test[1][t["label"]]
        mse = float(np.mean((pred[t["name"]] - y) ** 2))
        floor = (0.1 if t["name"] == "clean" else args.scale * args.noise) ** 2
        out[t["name"]] = {"mse": mse, "nmse": mse / float(np.var(y)), "floor": mse / floor}
    pc.release(trainer.model)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--p", type=float, default=0.5, help="task correlation")
    ap.add_argument("--noise", type=float, default=2.0, help="noise std of the noisy task (before scaling)")
    ap.add_argument("--scale", type=float, default=10.0, help="scale of the noisy task")
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--tag", default="",
                    help="write a separate results section and plot for a variant run (e.g. an investigation)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    start = time.perf_counter()
    results = {s: [] for s in args.strategies}
    with tempfile.TemporaryDirectory(prefix="mtlrec_lw_") as root:
        for repeat in range(args.repeats):
            train, test = make_data(repeat, args)
            for s in args.strategies:
                r = run(s, repeat, train, test, args, root)
                results[s].append(r)
                print(f"repeat {repeat} {s:11s} clean 1-R2 {r['clean']['nmse']:.4f} "
                      f"noisy 1-R2 {r['noisy']['nmse']:.4f} weights "
                      + ", ".join(f"{k} {v:.3g}" for k, v in r["weights"].items())
                      + f" {r['seconds']:.1f}s ({r['steps']} steps)", flush=True)
    total = time.perf_counter() - start

    rows = []
    for s in args.strategies:
        rs = results[s]
        w = {k: np.mean([r["weights"][k] for r in rs]) for k in rs[0]["weights"]}
        rows.append([
            s,
            pc.fmt_mean_std([r["clean"]["nmse"] for r in rs]),
            pc.fmt_mean_std([r["clean"]["floor"] for r in rs], 2),
            pc.fmt_mean_std([r["noisy"]["nmse"] for r in rs]),
            pc.fmt_mean_std([r["noisy"]["floor"] for r in rs], 3),
            ", ".join(f"{k} {v:.3g}" for k, v in w.items()),
            f"{np.mean([r['seconds'] for r in rs]):.1f}",
            f"{np.mean([r['step_ms'] for r in rs]):.1f}",
        ])
    header = ["strategy", "clean: 1 − R²", "clean: MSE / noise var", "noisy: 1 − R²",
              "noisy: MSE / noise var", "final task weights", "train s", "ms/step after epoch 1"]
    table = pc.markdown_table(header, rows)
    print(table)
    if args.no_write:
        return

    plt = pc.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    xs = np.arange(len(args.strategies))
    for ax, (key, label) in zip(axes[:2], (("clean", "clean task"), ("noisy", "noisy task (x%g)" % args.scale))):
        vals = [[r[key]["nmse"] for r in results[s]] for s in args.strategies]
        ax.bar(xs, [np.mean(v) for v in vals], yerr=[pc.mean_std(v)[1] for v in vals], capsize=4,
               color=["tab:gray", "tab:blue", "tab:green", "tab:purple"][: len(xs)])
        for i, v in enumerate(vals):
            ax.plot([i] * len(v), v, "k.", ms=5)
        ax.set_xticks(xs, args.strategies)
        ax.set_ylabel("test MSE / label variance (1 − R²)")
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    secs = [[r["seconds"] for r in results[s]] for s in args.strategies]
    axes[2].bar(xs, [np.mean(v) for v in secs], yerr=[pc.mean_std(v)[1] for v in secs], capsize=4,
                color="tab:orange")
    axes[2].set_xticks(xs, args.strategies)
    axes[2].set_ylabel("training wall time (s)")
    axes[2].set_title("wall time (shared 2-CPU machine)")
    axes[2].grid(axis="y", alpha=0.3)
    plot = pc.save_figure(fig, pc.tagged("loss_weighting", args.tag) + ".png")

    body = f"""
`benchmarks/loss_weighting.py`: the four loss weighting strategies on the same MMoE
(`mtlrec.models.MMoE`, 8 experts of 16 units, towers of 8), trained by
`mtlrec.training.Trainer` (the library's loop, from an experiment config). Data:
`mmoe_synthetic` (dim {DIM}, p = {args.p}); task "clean" = y1 with noise std 0.1, task
"noisy" = {args.scale:g} x (y2 with noise std {args.noise:g}), so its noise variance is
{(args.scale * args.noise) ** 2:g} against 0.01 and its loss is ~{args.scale ** 2:g}x larger.
{args.train_size:,} training and {args.test_size:,} test rows, {args.repeats} repeats (fresh
data and initialisation); Adam lr {args.learning_rate}, batch {args.batch_size}, {args.epochs}
epochs. GradNorm alpha 1.5 (its own Adam, lr 0.025); PCGrad on all shared variables.
"MSE / noise var" is the test MSE over the irreducible noise variance (1.0 = perfect).
The weights column is the strategy's last effective weights (uncertainty: 0.5 exp(-s_k)).

Command:

```
{pc.command()}
```

Machine: {pc.machine()}; {total / 60:.1f} minutes.

{table}

![loss weighting]({pc.plot_link(plot)})
"""
    path = pc.write_section(pc.section_title("Loss weighting strategies", args.tag), body)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
