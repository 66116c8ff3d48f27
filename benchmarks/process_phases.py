"""The whole `mtlrec train` process on one Parquet day against DeepCTR's, phase by phase.

`benchmarks/train_throughput.py` times steady steps on in-memory batches; a user waits for
the whole process: Python and TensorFlow imports, the day's validation, building the model,
tracing the step, the steps over the streamed day, the checkpoints, `model.keras`, the
SavedModel export, and the exit. This script writes one day of the large-vocabulary
configuration (`train_throughput.py`'s 20 categorical features, 52.9M embedding parameters,
5 numerics, click and conversion; raw ids uniform over each vocabulary), then for each model,
all in one run:

- runs `mtlrec train CONFIG --day D` in a fresh process (for each `--sources` tree: e.g. the
  code before a change and after it, side by side), through a probe that times each phase
  by wrapping the functions that do it (the command itself is unchanged);
- runs DeepCTR's model of the same shape in a fresh process, as a DeepCTR user would: import,
  read the day's Parquet file into arrays, build and compile, `fit` one epoch at batch 1024,
  `save_weights` (the weights only: DeepCTR has no checkpoint of its optimizer, no export);
- prints every phase and the whole-process ratio DeepCTR / mtlrec (the target: >= 5x).

With `--predict` it also times `mtlrec predict` on a 1,000-row file with the first
model's export against a bare `python -c "import tensorflow"` (the target: within 1.07x).
The machine is shared: the processes of one model run back to back, and `--rounds`
repeats the whole set (median reported).

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/process_phases.py \\
        --models mmoe,esmm,ple --predict
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAY = "2024-01-01"
PHASES = ("imports", "validation", "build", "trace", "steps", "checkpoint", "model.keras",
          "evaluation", "export", "exit", "other")


# ----------------------------------------------------------------- the day and configs


def write_day(root: Path, rows: int, seed: int) -> Path:
    """One Parquet day of the large-vocabulary configuration (row groups of 65,536)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(HERE))
    from train_throughput import CATEGORICAL, NUMERIC

    rng = np.random.default_rng(seed)
    columns = {n: rng.integers(0, v, rows, dtype=np.int64) for n, v in CATEGORICAL}
    for n in NUMERIC:
        columns[n] = rng.standard_normal(rows).astype(np.float32)
    click = (rng.random(rows) < 0.2).astype(np.int64)
    columns["click"] = click
    columns["conversion"] = click * (rng.random(rows) < 0.3).astype(np.int64)
    part = root / f"dt={DAY}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), part / "part-0.parquet", row_group_size=65536)
    return part / "part-0.parquet"


def write_config(path: Path, model: str, data_root: Path, run_dir: Path) -> None:
    import yaml

    sys.path.insert(0, str(HERE))
    from train_throughput import make_schema, model_section, tasks_section

    schema = make_schema("large", 1000, sequences=False)
    config = {
        "name": f"phases_{model}",
        "run_dir": str(run_dir),
        "data": {"root": str(data_root), "format": "parquet"},
        "schema": schema,
        "tasks": tasks_section(model),
        "model": {**model_section(model), "seed": 1},
        "optimizer": {"dense": {"name": "adam", "learning_rate": 0.001},
                      "embedding": {"name": "lazy_adam", "learning_rate": 0.001}},
        "training": {"batch_size": 1024, "seed": 0},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


# ----------------------------------------------------------------- the probes (child processes)


class Clock:
    """Seconds spent in named phases of this process; written as JSON at exit."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    def add(self, name, seconds):
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def wrap(self, owner, attr, name, exclusive=()):
        """Time every call of ``owner.attr`` into ``name`` (minus the time the phases in
        ``exclusive`` took during the call)."""
        original = getattr(owner, attr, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            # a write in a background thread overlaps the other phases: its own entry,
            # left out of the sum (what the main thread waits for it is `name`)
            key = name if threading.current_thread() is threading.main_thread() else f"{name} (background)"
            before = {k: self.spent.get(k, 0.0) for k in exclusive}
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                inner = sum(self.spent.get(k, 0.0) - before[k] for k in exclusive)
                self.add(key, time.perf_counter() - start - inner)

        setattr(owner, attr, timed)


def probe_mtlrec(argv, out):
    launched = float(os.environ["PHASES_LAUNCHED"])
    clock = Clock()
    import mtlrec.cli as cli

    # what `main` does first (where the tree timed has it), before the wrapped modules load
    if (Path(cli.__file__).parent / "backend_import.py").exists():
        from mtlrec.backend_import import import_backend_quietly

        import_backend_quietly()
    import mtlrec.training.experiment as experiment
    from mtlrec.training.run.run_directory import RunDirectory
    from mtlrec.training.trainer import Trainer

    def entered(original):
        def train(*args, **kwargs):
            clock.marks.setdefault("train_entered", time.time())
            return original(*args, **kwargs)
        return train

    experiment.Experiment.train = entered(experiment.Experiment.train)
    clock.wrap(experiment, "validate_days", "validation")
    clock.wrap(experiment.Experiment, "_build", "build")
    clock.wrap(experiment.Experiment, "_restore", "build")
    clock.wrap(experiment.Experiment, "_checkpoint", "checkpoint")
    clock.wrap(RunDirectory, "save_model", "model.keras")
    clock.wrap(experiment.Experiment, "_evaluate", "evaluation")
    clock.wrap(experiment.Experiment, "_export", "export")
    clock.wrap(Trainer, "train_day", "steps", exclusive=("trace", "checkpoint"))
    try:  # the end-of-day checkpoint written in a thread (where the code does)
        from mtlrec.training.run.background_write import BackgroundWrite
    except ImportError:
        pass
    else:
        clock.wrap(BackgroundWrite, "wait", "checkpoint")

    build_step = Trainer._build_step

    def traced_build_step(self, *args, **kwargs):
        fn = build_step(self, *args, **kwargs)
        first = [True]

        def step(*a, **k):
            if not first[0]:
                return fn(*a, **k)
            first[0] = False
            start = time.perf_counter()
            result = fn(*a, **k)
            float(result[0])
            clock.add("trace", time.perf_counter() - start)
            return result
        return step

    Trainer._build_step = traced_build_step
    code = cli.main(argv)
    clock.marks["main_returned"] = time.time()
    clock.marks["launched"] = launched
    Path(out).write_text(json.dumps({"spent": clock.spent, "marks": clock.marks, "code": code}))
    exit_now = getattr(cli, "exit_now", None)  # as the console script ends (where it does)
    if exit_now is not None and code == 0:
        exit_now(code)
    return code


def probe_deepctr(model, parquet, out_dir, out):
    launched = float(os.environ["PHASES_LAUNCHED"])
    clock = Clock()
    start = time.perf_counter()
    import keras
    import numpy as np
    import pyarrow.parquet as pq
    import tensorflow as tf  # noqa: F401
    import deepctr.models  # noqa: F401  (timed with the imports)

    sys.path.insert(0, str(HERE))
    from train_throughput import CATEGORICAL, NUMERIC, deepctr_net

    clock.marks["imported"] = time.time()
    t = time.perf_counter()
    table = pq.read_table(parquet)
    vocab = dict(CATEGORICAL)
    x = {n: (table[n].to_numpy() % vocab[n]).reshape(-1, 1) for n in vocab}
    x.update({n: table[n].to_numpy().astype(np.float32).reshape(-1, 1) for n in NUMERIC})
    click = table["click"].to_numpy().astype(np.float32)
    conversion = table["conversion"].to_numpy().astype(np.float32)
    clock.add("validation", time.perf_counter() - t)  # reading the day into arrays
    t = time.perf_counter()
    net, names = deepctr_net(model, vocab)
    x = {n: x[n] for n in names}
    second = click * conversion if model == "esmm" else conversion
    clock.add("build", time.perf_counter() - t)

    class FirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                clock.marks["first_batch"] = time.perf_counter()

    t = time.perf_counter()
    net.fit(x, [click, second], batch_size=1024, epochs=1, verbose=0, callbacks=[FirstBatch()])
    end = time.perf_counter()
    clock.add("trace", clock.marks["first_batch"] - t)
    clock.add("steps", end - clock.marks.pop("first_batch"))
    t = time.perf_counter()
    net.save_weights(str(Path(out_dir) / "deepctr.weights.h5"))
    clock.add("checkpoint", time.perf_counter() - t)
    del start
    clock.marks["main_returned"] = time.time()
    clock.marks["launched"] = launched
    Path(out).write_text(json.dumps({"spent": clock.spent, "marks": clock.marks, "code": 0}))
    return 0


# ----------------------------------------------------------------- the parent


def run_child(args, env, out_json, log):
    """Run a probe; returns the phase seconds (``imports`` and ``exit`` from the marks)."""
    env = dict(env, PHASES_LAUNCHED=repr(time.time()))
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                               stdout=f, stderr=subprocess.STDOUT)
    whole = time.perf_counter() - start
    ended = time.time()
    if code != 0:
        raise SystemExit(f"probe {args[:2]} failed ({code}); see {log}:\n" + Path(log).read_text()[-3000:])
    report = json.loads(Path(out_json).read_text())
    spent, marks = dict(report["spent"]), report["marks"]
    first = marks.get("train_entered", marks.get("imported"))
    spent["imports"] = first - marks["launched"]
    spent["exit"] = ended - marks["main_returned"]
    spent["other"] = whole - sum(v for k, v in spent.items() if k in PHASES)
    spent["whole"] = whole
    return spent


def source_env(src: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = "tensorflow"
    return env


def time_predict(src: Path, export: Path, work: Path, rounds: int) -> dict:
    """Wall seconds (median) of `mtlrec predict` on a 1,000-row file and of a bare TensorFlow import."""
    import pyarrow.parquet as pq

    small = work / "predict_1000.parquet"
    pq.write_table(pq.read_table(work / "data" / f"dt={DAY}" / "part-0.parquet").slice(0, 1000), small)
    env = source_env(src)
    commands = {
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
        "mtlrec predict (1,000 rows)": [sys.executable, "-m", "mtlrec.cli", "predict", "--model", str(export),
                                        "--input", str(small), "--output", str(work / "scores.parquet")],
    }
    times = {k: [] for k in commands}
    for _ in range(rounds):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    return times


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "probe-mtlrec":
        sys.exit(probe_mtlrec(sys.argv[3:], sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "probe-deepctr":
        sys.exit(probe_deepctr(*sys.argv[2:6]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mmoe,esmm,ple")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--sources", default=f"mtlrec={HERE.parent}",
                        help="NAME=DIR,...: source trees of mtlrec to time side by side "
                             "(e.g. before=/tmp/old,after=.)")
    parser.add_argument("--no-deepctr", action="store_true")
    parser.add_argument("--predict", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", help="working directory (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sources = dict(item.split("=", 1) for item in args.sources.split(","))
    sources = {k: Path(v).resolve() for k, v in sources.items()}
    models = [m for m in args.models.split(",") if m]
    work = Path(args.work or tempfile.mkdtemp(prefix="mtlrec_phases_"))
    work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.perf_counter(), os.getloadavg()
    parquet = work / "data" / f"dt={DAY}" / "part-0.parquet"
    if not parquet.exists():
        write_day(work / "data", args.rows, args.seed)
    results: dict[tuple, list[dict]] = {}
    exports = {}
    for r in range(args.rounds):
        for model in models:
            for name, src in sources.items():
                run_dir = work / "runs" / f"{model}_{name}"
                shutil.rmtree(run_dir, ignore_errors=True)
                config = work / f"{model}.yaml"
                write_config(config, model, work / "data", run_dir)
                out = work / f"{model}_{name}.json"
                spent = run_child(["probe-mtlrec", str(out), "--quiet", "train", str(config), "--day", DAY],
                                  source_env(src), out, work / f"{model}_{name}.log")
                results.setdefault((model, name), []).append(spent)
                exports[model, name] = sorted((run_dir / "export").iterdir())[-1]
                print(f"round {r + 1} {model:<5} {name:<8} " + fmt(spent), flush=True)
            if not args.no_deepctr and model in ("mmoe", "esmm", "ple"):
                out = work / f"{model}_deepctr.json"
                spent = run_child(["probe-deepctr", model, str(parquet), str(work), str(out)],
                                  source_env(next(iter(sources.values()))), out, work / f"{model}_deepctr.log")
                results.setdefault((model, "deepctr"), []).append(spent)
                print(f"round {r + 1} {model:<5} deepctr  " + fmt(spent), flush=True)
    predict = None
    if args.predict:
        name, src = list(sources.items())[-1]
        predict = time_predict(src, exports[models[0], name], work, max(3, args.rounds))
    load_after = os.getloadavg()
    report(args, models, sources, results, predict, load_before, load_after, time.perf_counter() - started)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def fmt(spent):
    extra = [k for k in spent if k not in PHASES and k != "whole"]
    return " ".join(f"{k} {spent.get(k, 0.0):.1f}" for k in (*PHASES, "whole", *extra))


def report(args, models, sources, results, predict, load_before, load_after, total):
    import tensorflow as tf

    med = {k: {p: statistics.median(s.get(p, 0.0) for s in v) for p in (*PHASES, "whole")}
           for k, v in results.items()}
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before / "
          f"{load_after[0]:.2f} after | Python {platform.python_version()}, TensorFlow {tf.__version__} "
          f"| {args.rows:,} rows, batch 1024, {args.rounds} round(s), median; total {total:.0f} s")
    print()
    systems = [*sources, "deepctr"]
    print("| model | system | " + " | ".join(PHASES) + " | whole | deepctr / this |")
    print("|---|---|" + "---:|" * (len(PHASES) + 2))
    for model in models:
        peer = med.get((model, "deepctr"), {}).get("whole")
        for system in systems:
            row = med.get((model, system))
            if row is None:
                continue
            ratio = f"{peer / row['whole']:.2f}x" if peer else ""
            print(f"| {model} | {system} | " + " | ".join(f"{row[p]:.1f}" for p in PHASES)
                  + f" | {row['whole']:.1f} | {ratio} |")
    if predict:
        print()
        base = statistics.median(predict["python -c 'import tensorflow'"])
        for name, times in predict.items():
            m = statistics.median(times)
            print(f"{name}: {' '.join(f'{t:.2f}' for t in times)} s, median {m:.2f} s ({m / base:.2f}x)")


if __name__ == "__main__":
    main()
