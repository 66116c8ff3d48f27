"""PNG plots of a run directory (matplotlib, Agg backend): ``run_dir/plots/``.

- ``auc_by_day.png``: per-task AUC of the evaluation after each trained day;
- ``loss_by_day.png``: per-task training loss of each day and evaluation logloss;
- ``calibration.png``: reliability curves (mean label vs mean prediction per
  prediction decile) of the last evaluation, and calibration (mean prediction /
  mean label) by day;
- ``expert_utilization.png``: mean gate weight per task and expert (MMoE/PLE);
- ``table_occupancy.png``: per identity/dynamic table, the share of its rows in use
  after each day, the ids admitted and evicted on the day, the share of the
  day's lookups that read an out-of-vocabulary row, and (dynamic tables) the ids
  waiting for a row after the day and those dropped from the map on the day;
- ``progressive_by_hour.png`` (a ``train --follow`` run): progressive AUC per task, rows
  and lag of each partition (``mtlrec.training.follow.follow_report``).
"""

from __future__ import annotations

import json
from pathlib import Path

from mtlrec.training.follow.follow_report import plot_progressive
from mtlrec.training.run.metrics_log import metric_series, read_metrics
from mtlrec.training.run.run_state import RunState


def _loss_names(run_dir: Path) -> dict:
    """task -> the name its training loss is plotted under (``ctcvr`` for the ESMM ``cvr``
    step), from the run's ``config.yaml``; {} when it cannot be read."""
    from mtlrec.conventions import yaml_loader
    from mtlrec.tasks import Task

    try:
        tasks = yaml_loader.load((run_dir / "config.yaml").read_text(encoding="utf-8"))["tasks"]
        return {t.name: t.loss_name for t in (Task.from_dict(d) for d in tasks)}
    except Exception:  # a report never fails on the config file
        return {}


def _plot_lines(ax, series: dict, title: str, ylabel: str, style="-o") -> bool:
    # Days as positions with day labels (not matplotlib's categorical axis of strings).
    days = sorted({d for points in series.values() for d, _ in points})
    position = {d: i for i, d in enumerate(days)}
    for task, points in sorted(series.items()):
        ax.plot([position[d] for d, _ in points], [v for _, v in points], style, label=task)
    ax.set_title(title)
    ax.set_xlabel("trained day")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.set_xticks(range(len(days)), days, rotation=30, ha="right")
        ax.legend(fontsize=8)
    return bool(series)


def make_report(run_dir, out_dir=None) -> list[Path]:
    """Write the plots of ``run_dir``; returns the PNG paths written.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``metrics.csv`` (nothing trained).
    """
    import matplotlib

    matplotlib.use("Agg")

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir / 'metrics.csv'}: no metrics to plot (train a day first)")
    out_dir = Path(out_dir) if out_dir else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    try:
        name = RunState.load(run_dir).data.get("name") or name
    except Exception:  # a report never fails on the state file
        pass
    written = []
    for plot in (_plot_auc, _plot_losses, _plot_calibration, _plot_tables, _plot_experts, plot_progressive):
        written += plot(rows, run_dir, name, out_dir)
    return written


def _save(fig, path: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def _plot_auc(rows, run_dir, name, out_dir) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if _plot_lines(ax, metric_series(rows, "auc"), f"{name}: AUC on the following day", "AUC"):
        return _save(fig, out_dir / "auc_by_day.png")
    plt.close(fig)
    return []


def _plot_losses(rows, run_dir, name, out_dir) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    losses = {_loss_names(run_dir).get(task, task): points for task, points in metric_series(rows, "train_loss").items()}
    _plot_lines(axes[0], losses, f"{name}: training loss", "mean loss of the day")
    _plot_lines(axes[1], metric_series(rows, "logloss"), f"{name}: evaluation logloss", "logloss")
    return _save(fig, out_dir / "loss_by_day.png")


def _plot_calibration(rows, run_dir, name, out_dir) -> list[Path]:
    import matplotlib.pyplot as plt

    calibration_files = sorted((run_dir / "calibration").glob("*.json"))
    by_day = metric_series(rows, "calibration")
    if not (calibration_files or by_day):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    if calibration_files:
        data = json.loads(calibration_files[-1].read_text(encoding="utf-8"))
        top = 0.0
        for output, bins in sorted(data.get("bins", {}).items()):
            if bins["pred"]:
                ax.plot(bins["pred"], bins["label"], "-o", ms=3, label=output)
                top = max(top, max(bins["pred"]), max(bins["label"]))
        top = top or 1.0
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="perfect")
        ax.set_title(f"reliability after {data.get('day')} (on {data.get('eval_day')})")
        ax.legend(fontsize=8)
    ax.set_xlabel("mean prediction (decile)")
    ax.set_ylabel("mean label")
    ax.grid(alpha=0.3)
    _plot_lines(axes[1], by_day, "calibration by day (1 = calibrated)", "mean pred / mean label")
    axes[1].axhline(1.0, color="k", lw=0.8, ls="--")
    return _save(fig, out_dir / "calibration.png")


def _plot_tables(rows, run_dir, name, out_dir) -> list[Path]:
    import matplotlib.pyplot as plt

    tables = {k: v for k, v in metric_series(rows, "lookups").items() if k.startswith("table:")}
    if not tables:
        return []
    capacity, in_use = metric_series(rows, "capacity"), metric_series(rows, "rows_in_use")
    occupancy = {
        task: [(d, used / dict(capacity[task])[d]) for d, used in points]
        for task, points in in_use.items()
        if task in capacity
    }
    moves = {f"{t} {m}": p for m in ("admitted", "evicted") for t, p in metric_series(rows, m).items() if t in tables}
    tracking = {f"{t} {m}": p for m in ("ids_waiting", "ids_dropped") for t, p in metric_series(rows, m).items() if t in tables}
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    _plot_lines(axes[0], occupancy, f"{name}: table occupancy", "rows in use / capacity")
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    _plot_lines(axes[1], moves, "ids admitted and evicted", "ids on the day")
    _plot_lines(axes[2], {t: p for t, p in metric_series(rows, "oov_share").items() if t in tables},
                "out-of-vocabulary share of lookups", "OOV lookups / lookups")
    _plot_lines(axes[3], tracking, "ids waiting for a row, ids dropped from the map", "ids")
    return _save(fig, out_dir / "table_occupancy.png")


def _latest_expert_weights(rows) -> tuple[dict, str | None]:
    """task -> {expert index: mean gate weight} of each task's latest day, and that day."""
    experts = {}
    latest_day = {}
    for row in rows:
        if row["metric"].startswith("expert_"):
            if row["day"] >= latest_day.get(row["task"], ""):
                if row["day"] > latest_day.get(row["task"], ""):
                    experts[row["task"]] = {}
                latest_day[row["task"]] = row["day"]
                experts[row["task"]][int(row["metric"].split("_", 1)[1])] = row["value"]
    return experts, max(latest_day.values(), default=None)


def _plot_experts(rows, run_dir, name, out_dir) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    experts, day = _latest_expert_weights(rows)
    if not experts:
        return []
    tasks = sorted(experts)
    width = max(max(e) + 1 for e in experts.values())
    matrix = np.full((len(tasks), width), np.nan)
    for i, task in enumerate(tasks):
        for j, value in experts[task].items():
            matrix[i, j] = value
    fig, ax = plt.subplots(figsize=(max(5.0, 1.5 + 0.7 * width), 1.5 + 0.6 * len(tasks)))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(width), [str(j) for j in range(width)])
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("expert")
    ax.set_title(f"{name}: mean gate weight (day {day})")
    for i in range(len(tasks)):
        for j in range(width):
            if not np.isnan(matrix[i, j]):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax)
    return _save(fig, out_dir / "expert_utilization.png")
