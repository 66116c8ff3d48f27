"""MMoE on the synthetic two-task regression of Ma et al. (KDD 2018), section 3.

Data (`mtlrec.data_pipeline.synthetic.mmoe_synthetic`): x ~ N(0, I_100);
y_i = w_i.x + sum_j sin(alpha_j w_i.x + beta_j) + noise, cos(w_1, w_2) = p.
For each p and repeat: fresh data (train + test drawn together, so both tasks' weights
are shared by the split) and fresh initialisation. Models, all with towers of 8 units:

- MMoE: `mtlrec.models.MMoE`, 8 experts of 16 units, one gate per task;
- OMoE: the same experts under ONE gate shared by both tasks, built from
  `mtlrec.layers.MixtureOfExperts(num_tasks=1)` on the `MultiTaskModel` base
  (its embedding, towers and `compute_loss` are the library's);
- Shared-Bottom: `mtlrec.models.SharedBottom` with one hidden layer sized so its
  parameter count matches MMoE's.

Each is trained with `model.fit` on the sum of the two MSE losses (Adam) and scored by
the test MSE averaged over the two tasks. Paper's finding: MMoE >= Shared-Bottom at
every p, with a larger advantage at lower p; OMoE degrades as p falls.

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/paper_mmoe_synthetic.py
"""

import argparse
import time

import _paper_common as pc  # noqa: I001  (sets the Keras backend first)
import keras
import numpy as np

from mtlrec.data_pipeline import mmoe_synthetic
from mtlrec.layers import MixtureOfExperts
from mtlrec.models import MMoE, MultiTaskModel, SharedBottom, schema_inputs
from mtlrec.conventions.seeding import derive_seed

DIM = 100
TASKS = [
    {"name": "task1", "label": "y1", "kind": "regression"},
    {"name": "task2", "label": "y2", "kind": "regression"},
]
SCHEMA = pc.dense_schema(DIM, {"y1": "regression", "y2": "regression"})
MODELS = ("MMoE", "OMoE", "Shared-Bottom")


@keras.saving.register_keras_serializable(package="mtlrec_benchmarks")
class OMoE(MultiTaskModel):
    """One-gate mixture of experts (the MMoE paper's OMoE baseline): experts f_i(x), a
    single gate g(x) = softmax(W x) shared by all tasks, h = sum_i g_i(x) f_i(x), y_k = t_k(h)."""

    def __init__(self, schema, tasks, num_experts=8, expert_units=(16,), tower_units=(8,),
                 seed=None, **kwargs):
        self._setup(schema, tasks, seed=seed)
        self.mixture = MixtureOfExperts(
            num_experts, list(expert_units), num_tasks=1,
            seed=derive_seed(self.seed, "one_gate_mixture"), name="one_gate_mixture",
        )
        inputs = schema_inputs(self.schema)
        (mixed,) = self.mixture(self._embed(inputs))
        outputs = self._heads({t.name: mixed for t in self.task_specs}, list(tower_units), 0.0)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_experts, self.expert_units, self.tower_units = num_experts, expert_units, tower_units

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts, expert_units=list(self.expert_units),
                      tower_units=list(self.tower_units))
        return config


def shared_bottom_units(target, tower_units):
    """Width h of a one-layer Shared-Bottom with about `target` parameters:
    (DIM + 1) h for the bottom, plus two towers h -> tower -> 1."""
    t = tower_units[0]
    per_h = DIM + 1 + 2 * t
    fixed = 2 * (t + t + 1)
    return max(1, round((target - fixed) / per_h))


def build(name, args, seed):
    if name == "MMoE":
        return MMoE(SCHEMA, TASKS, num_experts=args.experts, expert_units=[args.expert_units],
                    tower_units=[args.tower_units], seed=seed)
    if name == "OMoE":
        return OMoE(SCHEMA, TASKS, num_experts=args.experts, expert_units=[args.expert_units],
                    tower_units=[args.tower_units], seed=seed)
    return SharedBottom(SCHEMA, TASKS, bottom_units=[args.bottom_units],
                        tower_units=[args.tower_units], seed=seed)


def run_one(name, p, repeat, args):
    # The same seed for every p of a repeat: the same x, u1, u2 and sine terms, only the
    # angle between w1 and w2 changes (paired across p; fresh for each repeat).
    data_seed = 1000 * (repeat + 1)
    n = args.train_size + args.test_size
    x, y1, y2 = mmoe_synthetic(n, p, dim=DIM, seed=data_seed)
    if args.standardize:  # by the training rows' mean and std
        y1, y2 = ((y - y[: args.train_size].mean()) / y[: args.train_size].std() for y in (y1, y2))
    features = pc.dense_features(x)
    labels = {"y1": y1, "y2": y2}
    train = pc.take(features, slice(0, args.train_size)), pc.take(labels, slice(0, args.train_size))
    test = pc.take(features, slice(args.train_size, n)), pc.take(labels, slice(args.train_size, n))
    init_seed = data_seed + int(round(100 * p)) + 10 * MODELS.index(name)
    pc.seed_everything(init_seed)
    model = build(name, args, seed=init_seed)
    params = pc.count_params(model)
    history, seconds = pc.fit(model, pc.dataset(*train, args.batch_size, seed=init_seed),
                              args.epochs, args.learning_rate)
    pred = pc.predict(model, test[0])
    mse = [float(np.mean((pred[t["name"]] - test[1][t["label"]]) ** 2)) for t in TASKS]
    pc.release(model)
    return {"model": name, "p": p, "repeat": repeat, "params": params, "test_mse": float(np.mean(mse)),
            "mse1": mse[0], "mse2": mse[1], "train_curve": history["loss"], "seconds": seconds,
            "label_corr": float(np.corrcoef(y1, y2)[0, 1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--correlations", type=float, nargs="+", default=[0.0, 0.5, 0.9, 1.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--test-size", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--standardize", action="store_true",
                    help="standardise both targets by the training rows' mean and std")
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--expert-units", type=int, default=16)
    ap.add_argument("--tower-units", type=int, default=8)
    ap.add_argument("--bottom-units", type=int, default=None,
                    help="Shared-Bottom width (default: matched to MMoE's parameter count)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                    help="a subset (needs MMoE and Shared-Bottom to write docs/)")
    ap.add_argument("--tag", default="",
                    help="write a separate results section and plot for a variant run (e.g. an investigation)")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/")
    args = ap.parse_args()

    mmoe_params = pc.count_params(build("MMoE", args, seed=0))
    if args.bottom_units is None:
        args.bottom_units = shared_bottom_units(mmoe_params, [args.tower_units])
    counts = {m: pc.count_params(build(m, args, seed=0)) for m in MODELS}
    pc.release()
    print("trainable parameters: " + ", ".join(f"{m} {c:,}" for m, c in counts.items())
          + f" (Shared-Bottom hidden width {args.bottom_units})", flush=True)

    start = time.perf_counter()
    runs = []
    for repeat in range(args.repeats):
        for p in args.correlations:
            for name in args.models:
                r = run_one(name, p, repeat, args)
                runs.append(r)
                print(f"p={p:.2f} repeat {repeat} {name:13s} test MSE {r['test_mse']:.4f} "
                      f"(task1 {r['mse1']:.4f}, task2 {r['mse2']:.4f}; train loss per task "
                      f"{r['train_curve'][-1] / 2:.4f}) {r['seconds']:.1f}s", flush=True)
    total = time.perf_counter() - start

    def values(name, p, key="test_mse"):
        return [r[key] for r in runs if r["model"] == name and r["p"] == p]

    models = [m for m in MODELS if m in args.models]
    if not {"MMoE", "Shared-Bottom"} <= set(models):
        for p in args.correlations:
            print(f"p={p}: " + ", ".join(f"{m} {pc.fmt_mean_std(values(m, p))}" for m in models))
        return
    rows = []
    for p in args.correlations:
        sb = np.mean(values("Shared-Bottom", p))
        wins = sum(a <= b for a, b in zip(values("MMoE", p), values("Shared-Bottom", p)))
        rows.append([f"{p:.1f}", f"{np.mean(values('MMoE', p, 'label_corr')):.2f}"]
                    + [pc.fmt_mean_std(values(m, p)) for m in models]
                    + [f"{np.mean(values('MMoE', p)) - sb:+.4f}", f"{wins}/{args.repeats}"])
    header = ["p", "label corr.", *models, "MMoE − SB", "MMoE ≤ SB runs"]
    table = pc.markdown_table(header, rows)
    print(table)

    if args.no_write:
        return
    plt = pc.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"MMoE": "tab:blue", "OMoE": "tab:green", "Shared-Bottom": "tab:red"}
    for i, m in enumerate(models):
        means = [np.mean(values(m, p)) for p in args.correlations]
        stds = [pc.mean_std(values(m, p))[1] for p in args.correlations]
        xs = np.array(args.correlations) + (i - 1) * 0.012
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=4, label=m, color=colors[m])
    ax.set_xlabel("task correlation p (cosine of w1, w2)")
    ax.set_ylabel("test MSE (mean of the 2 tasks)")
    ax.set_title(f"Test loss vs p: mean ± std over {args.repeats} runs")
    ax.legend()
    ax.grid(alpha=0.3)
    p_curve = min(args.correlations)
    for m in models:
        curves = np.array(values(m, p_curve, "train_curve"))
        ax2.plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0) / 2, label=m, color=colors[m])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training loss per task (mean over runs)")
    ax2.set_title(f"Training loss, p = {p_curve:.1f}")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.grid(alpha=0.3)
    plot = pc.save_figure(fig, pc.tagged("paper_mmoe_synthetic", args.tag) + ".png")

    body = f"""
`benchmarks/paper_mmoe_synthetic.py`: Ma et al., KDD 2018, section 3. Two regression
tasks from `mmoe_synthetic` (input dim {DIM}, 10 sine terms, noise std 0.1) with task
correlation p = cos(w1, w2); {args.train_size:,} training and {args.test_size:,} test rows;
{"both targets standardised by the training rows' mean and std; " if args.standardize else ""}{args.repeats} repeats, each with fresh data (x, the unit vectors and the sine terms; the same
for every p within a repeat, so only the angle between w1 and w2 changes) and fresh
initialisation; Adam (lr
{args.learning_rate}), batch {args.batch_size}, {args.epochs} epochs, `model.fit` on the sum of
the two MSE losses. MMoE: `mtlrec.models.MMoE` with {args.experts} experts of
{args.expert_units} units and towers of {args.tower_units}; OMoE: the same experts under one
gate (`MixtureOfExperts(num_tasks=1)` feeding both towers); Shared-Bottom:
`mtlrec.models.SharedBottom` with a bottom of {args.bottom_units} units. Trainable parameters:
{", ".join(f"{m} {c:,}" for m, c in counts.items())}.

Command:

```
{pc.command()}
```

Machine: {pc.machine()}; {total / 60:.1f} minutes.

Test MSE (mean of the two tasks; mean ± std over the repeats; "label corr." is the
Pearson correlation of y1 and y2, lower than p because of the sine terms):

{table}

![test loss vs p]({pc.plot_link(plot)})
"""
    path = pc.write_section(pc.section_title("MMoE synthetic data (Ma et al., KDD 2018)", args.tag), body)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
