"""The main job, end to end on synthetic data (``mtlrec demo``, ``make demo``).

1. Generate 4 days of the synthetic funnel into ``WORKDIR/data``.
2. For each experiment of ``mtlrec/defaults/demo.yaml`` (ESMM and MMoE): a full
   training over the first 2 days, then the daily incremental update on day 3
   (a second ``train`` from the last checkpoint), each day evaluated on the day
   after it and exported as a new SavedModel version.
3. Plots per run, and a summary table: per model and output the AUC, logloss
   and calibration on day 4 after the update, the days trained, the export path.
"""

from __future__ import annotations

import datetime
import logging
import math
import shutil
import time
from pathlib import Path

logger = logging.getLogger("mtlrec.training")

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "defaults" / "demo.yaml"
START_DAY = "2024-01-01"
NUM_DAYS = 4
ROWS_PER_DAY = 20000
KNOBS = {"num_users": 2000, "num_items": 1000, "num_brands": 120, "num_categories": 30, "max_len": 10}
MARKER = ".mtlrec-demo"


def _day(offset: int) -> str:
    return (datetime.date.fromisoformat(START_DAY) + datetime.timedelta(days=offset)).isoformat()


def _prepare_workdir(workdir: Path) -> None:
    """A fresh work directory; refuses to clear a directory the demo did not create."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            from mtlrec.training.errors import RunError

            raise RunError(
                f"{workdir}: exists and was not created by `mtlrec demo`; "
                f"choose another --workdir"
            )
        for name in ("data", "runs"):
            shutil.rmtree(workdir / name, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by mtlrec demo\n", encoding="utf-8")


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def summary_table(results: list[dict]) -> str:
    """The demo's summary as text (one row per model and output)."""
    header = (
        f"{'model':<8} {'output':<7} {'AUC':>7} {'oracle':>7} {'logloss':>8} "
        f"{'calib.':>7}  days trained"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        first = True
        for output, values in result["metrics"].items():
            if "auc" not in values:
                continue
            days = ", ".join(result["days"]) if first else ""
            lines.append(
                f"{result['name'] if first else '':<8} {output:<7} {_fmt(values.get('auc')):>7} "
                f"{_fmt(values.get('oracle_auc')):>7} {_fmt(values.get('logloss')):>8} "
                f"{_fmt(values.get('calibration')):>7}  {days}"
            )
            first = False
    return "\n".join(lines)


def run_demo(workdir="demo_runs", rows_per_day: int | None = None, config_path=None, out=print) -> list[dict]:
    """Run the demo; returns one dict per model (name, days, metrics, export, plots)."""
    from mtlrec.data_pipeline import generate_funnel
    from mtlrec.training.config import load_configs
    from mtlrec.training.experiment import Experiment
    from mtlrec.training.run.metrics_log import read_metrics
    from mtlrec.training.report import make_report
    from mtlrec.training.run.run_state import RunState

    started = time.perf_counter()
    workdir = Path(workdir).resolve()
    rows = rows_per_day or ROWS_PER_DAY
    _prepare_workdir(workdir)
    configs = load_configs(config_path or DEMO_CONFIG, base_dir=workdir)

    first, second, update, last = (_day(i) for i in range(NUM_DAYS))
    logger.info("generating %d days x %d rows into %s", NUM_DAYS, rows, workdir / "data")
    generate_funnel(workdir / "data", START_DAY, NUM_DAYS, rows, seed=0, **KNOBS)

    results = []
    for config in configs:
        logger.info("== %s: full training on %s .. %s", config.name, first, second)
        Experiment(config).train(days=f"{first}:{second}")
        logger.info("== %s: incremental update on %s", config.name, update)
        Experiment(config).train(day=update)
        run_dir = Path(config.run_dir)
        state = RunState.load(run_dir)
        rows_of_update = [r for r in read_metrics(run_dir) if r["day"] == update]
        metrics: dict = {}
        for row in rows_of_update:
            metrics.setdefault(row["task"], {})[row["metric"]] = row["value"]
        entry = state.entry(update) or {}
        plots = make_report(run_dir)
        from mtlrec.training.serving.export import latest_export

        results.append(
            {
                "name": config.name,
                "days": state.trained_days,
                "metrics": {k: v for k, v in metrics.items() if "auc" in v},
                "eval_day": entry.get("eval_day", last),
                "export": str(latest_export(run_dir / "export")),
                "plots": str(run_dir / "plots"),
                "plot_files": [str(p) for p in plots],
                "run_dir": str(run_dir),
            }
        )

    elapsed = time.perf_counter() - started
    out("")
    out(f"mtlrec demo: {len(results)} models, trained on {first}..{second}, updated on {update}, "
        f"evaluated on {last} ({elapsed:.0f} s)")
    out("")
    out(summary_table(results))
    out("")
    for result in results:
        out(f"{result['name']}: model   {result['export']}")
        out(f"{' ' * len(result['name'])}  plots   {result['plots']}")
        out(f"{' ' * len(result['name'])}  run dir {result['run_dir']}")
    out("")
    out(f"serve:   mtlrec serve --model {Path(results[0]['run_dir']) / 'export'}   "
        f"(TF Serving's REST API on port 8501, see docs/guide/serving.md)")
    out(f"predict: mtlrec predict --model {results[0]['export']} "
        f"--input {workdir / 'data' / f'dt={last}'} --output {workdir / 'predictions.parquet'}")
    return results
