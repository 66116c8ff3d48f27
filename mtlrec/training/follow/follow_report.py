"""``mtlrec report`` of a followed run: ``plots/progressive_by_hour.png``.

Three panels over the partitions trained (by key, an hour each): the progressive AUC per
task (each partition scored by the model before it trained on it), the rows of each
partition, and its lag (seconds from its done marker to the export that first held it).
"""

from __future__ import annotations

from pathlib import Path

from mtlrec.training.follow.follow_rows import PREFIX
from mtlrec.training.run.metrics_log import metric_series


def plot_progressive(rows, run_dir, name, out_dir) -> list[Path]:
    """The PNG (in a list), or [] when the run has no progressive evaluation."""
    aucs = metric_series(rows, PREFIX + "auc")
    if not aucs:
        return []
    import matplotlib.pyplot as plt

    keys = sorted({k for points in aucs.values() for k, _ in points})
    position = {k: i for i, k in enumerate(keys)}
    fig, axes = plt.subplots(3, 1, figsize=(max(7, 0.3 * len(keys)), 9), sharex=True)
    panels = [
        (axes[0], aucs, "progressive AUC (before training on the partition)", "AUC"),
        (axes[1], metric_series(rows, "rows"), "rows", "rows"),
        (axes[2], metric_series(rows, "lag_seconds"), "lag: done marker to export", "seconds"),
    ]
    for ax, series, title, ylabel in panels:
        for task, points in sorted(series.items()):
            points = [(k, v) for k, v in points if k in position]
            ax.plot([position[k] for k, _ in points], [v for _, v in points], "-o", markersize=3, label=task)
        ax.set_title(f"{name}: {title}")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    step = max(1, len(keys) // 24)
    axes[2].set_xticks(range(0, len(keys), step), [k.replace("T", " ") + "h" for k in keys[::step]],
                       rotation=45, ha="right", fontsize=7)
    axes[2].set_xlabel("partition")
    fig.tight_layout()
    path = Path(out_dir) / "progressive_by_hour.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
