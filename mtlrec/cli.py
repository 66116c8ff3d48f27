"""The ``mtlrec`` command: generate | convert | train | evaluate | export | predict | serve | report | demo.

Exit codes: 0 success; 1 a run or data error (a day already trained, bad input
data, a non-finite loss); 2 an invalid config or command line. Errors are one
line on stderr (``mtlrec: error: ...``), without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path


def _setup_environment() -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _setup_logging(verbose: bool, quiet: bool):
    """Progress lines of the ``mtlrec`` loggers on stderr; returns a function that undoes it
    (``main`` may run inside another program, e.g. a test)."""
    ours, tensorflow = logging.getLogger("mtlrec"), logging.getLogger("tensorflow")
    saved = (list(ours.handlers), ours.level, ours.propagate, tensorflow.level)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False
    if not verbose:  # TensorFlow's own INFO lines ("Assets written to ...")
        tensorflow.setLevel(logging.ERROR)

    def restore():
        ours.handlers[:], ours.level, ours.propagate = saved[0], saved[1], saved[2]
        tensorflow.setLevel(saved[3])

    return restore


def _knob(text: str):
    import yaml

    from mtlrec.conventions import yaml_loader

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml_loader.load(value)
    except yaml.YAMLError as err:  # e.g. a !!python tag: refused by the safe loader
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise argparse.ArgumentTypeError(f"{key.strip()}: not a plain YAML value ({problem})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlrec",
        description="Multi-task CTR/CVR ranking models: train day by day, evaluate, export.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("generate", help="write synthetic day partitions (funnel or taste world)")
    p.add_argument("--root", required=True, help="output directory (dt=YYYY-MM-DD partitions)")
    p.add_argument("--days", type=int, required=True, help="number of days")
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--rows", type=int, required=True, help="rows per day")
    p.add_argument("--format", default="parquet", choices=("parquet", "tfrecord"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--world",
        default="funnel",
        choices=("funnel", "taste"),
        help="funnel: the e-commerce funnel (default); taste: many users, each user's taste "
        "in their behavior history (parquet only)",
    )
    p.add_argument(
        "--knob",
        type=_knob,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="generator setting, e.g. --knob num_users=2000 --knob relatedness=0.8",
    )

    p = sub.add_parser("convert", help="convert a day partition between Parquet and TFRecord")
    p.add_argument("--root", required=True, help="data root holding the day")
    p.add_argument("--day", required=True, help="the day, YYYY-MM-DD")
    p.add_argument("--to", required=True, choices=("parquet", "tfrecord"), help="target format")
    p.add_argument("--out", help="output root (default: the same root)")
    p.add_argument("--schema", help="YAML file with a schema (or an experiment config)")
    p.add_argument("--gzip", action="store_true", help="GZIP-compress TFRecord output")

    p = sub.add_parser("train", help="train on one day or a range of days")
    p.add_argument("config", help="experiment YAML")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--day", help="one day, YYYY-MM-DD")
    group.add_argument("--days", help="inclusive range A:B (default: data.train_days)")
    group.add_argument(
        "--follow", action="store_true",
        help="near-line: train each complete hourly partition once, in order, as it lands "
        "(data.partitioning: hour); SIGTERM stops after the current step",
    )
    p.add_argument("--until", help="with --follow: stop after this partition, dt=YYYY-MM-DD/hour=HH")
    p.add_argument("--run-dir", help="run directory (default: the config's run_dir)")
    p.add_argument("--force", action="store_true", help="train days that are already trained")
    p.add_argument(
        "--migrate-lookups",
        action="store_true",
        help="accept a changed lookup, num_buckets or oov_buckets of tables on an existing run: "
        "those tables start afresh, everything else is kept",
    )

    p = sub.add_parser("evaluate", help="per-task metrics of the latest model on a day")
    p.add_argument("config")
    p.add_argument("--day", help="the day (default: data.eval_day)")
    p.add_argument("--run-dir")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("export", help="export the latest checkpoint as a new SavedModel version")
    p.add_argument("config")
    p.add_argument("--run-dir")
    p.add_argument("--force", action="store_true", help="export even if the newest export is that checkpoint")

    p = sub.add_parser("predict", help="score a Parquet file or day with an exported model")
    p.add_argument("--model", required=True, help="an export version directory (RUN/export/<n>)")
    p.add_argument("--input", required=True, help="Parquet or TFRecord file, or a directory (e.g. a day)")
    p.add_argument("--output", required=True, help="output Parquet file")
    p.add_argument("--batch-size", type=int, default=4096)

    p = sub.add_parser("serve", help="answer TF Serving's REST API with an export, loading new versions as they appear")
    p.add_argument("--model", required=True,
                   help="an export root RUN/export (its newest version; new ones are served as training "
                   "writes them) or one version RUN/export/<n>")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--name", help="model name in the URLs (default: the experiment name of the export)")
    p.add_argument("--max-batch-rows", type=int, default=256,
                   help="rows of concurrent requests scored in one model call at most (default 256)")
    p.add_argument("--batch-wait-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests after its first (default 0: it takes "
                   "the requests that queued while the model was busy)")
    p.add_argument("--poll-seconds", type=float, default=1.0,
                   help="how often the export root is checked for new versions (default 1.0)")
    p.add_argument("--max-body-mb", type=float, default=16.0, help="largest request body accepted (default 16)")
    p.add_argument("--intra-op-threads", type=int, default=0, help="TensorFlow's intra-op threads (0: its default)")
    p.add_argument("--inter-op-threads", type=int, default=0, help="TensorFlow's inter-op threads (0: its default)")

    p = sub.add_parser("report", help="PNG plots of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", help="output directory (default: RUN_DIR/plots)")

    p = sub.add_parser("demo", help="the main job on synthetic data (what `make demo` runs)")
    p.add_argument("--workdir", default="demo_runs", help="where data and runs go (default: demo_runs)")
    p.add_argument("--rows", type=int, default=None, help="rows per day (default from the demo)")
    return parser


def _load(path):
    from mtlrec.training.config import load_config

    return load_config(path)


def _cmd_generate(args) -> int:
    from mtlrec.data_pipeline import generate_funnel, generate_taste_days

    knobs = dict(args.knob)
    generate = generate_taste_days if args.world == "taste" else generate_funnel
    try:
        days = generate(
            args.root, args.start, args.days, args.rows, seed=args.seed, fmt=args.format, **knobs
        )
    except (ValueError, TypeError) as err:
        raise _UsageError(str(err)) from None
    print(f"wrote {len(days)} days ({days[0]} .. {days[-1]}), {args.rows} rows each, to {args.root}")
    return 0


def _schema_from_file(path) -> dict:
    import yaml

    from mtlrec.conventions import yaml_loader
    from mtlrec.training.config import ConfigError

    try:
        data = yaml_loader.load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read a schema: {err}", source=path) from None
    if isinstance(data, dict) and "schema" in data:
        data = data["schema"]
    if not isinstance(data, dict):
        raise ConfigError("expected a schema mapping (or a config with a schema section)", source=path)
    return data


def _cmd_convert(args) -> int:
    from mtlrec import data_pipeline

    if args.schema:
        schema = _schema_from_file(args.schema)
    else:
        schema = data_pipeline.funnel_schema_dict()
    source_fmt = "tfrecord" if args.to == "parquet" else "parquet"
    out = args.out or args.root
    written = data_pipeline.convert_day(
        args.root, out, args.day, schema, args.to, compression="GZIP" if args.gzip else None
    )
    print(f"converted {args.day} from {source_fmt} to {args.to}: {written}")
    return 0


def _follow(experiment, args) -> int:
    if not args.follow:
        raise _UsageError("--until goes with --follow")
    if args.force or args.migrate_lookups:
        raise _UsageError("--follow takes neither --force nor --migrate-lookups")
    entries = experiment.follow(until=args.until)
    for entry in entries:
        aucs = " ".join(
            f"{task} {values['auc']:.4f}" for task, values in (entry.get("progressive") or {}).items()
            if isinstance(values, dict) and values.get("auc") is not None
        )
        print(
            f"trained {entry['day']}: {entry['rows']} rows, {entry['steps']} steps (global step {entry['global_step']})"
            + (f", progressive AUC {aucs}" if aucs else "")
            + (f", export version {entry['export_version']}" if entry.get("export_version") else "")
        )
    follow = experiment.run.load_state().data.get("follow", {})
    for name in ("skipped", "late", "refused"):
        if follow.get(name):
            print(f"{name}: " + ", ".join(item["partition"] for item in follow[name]))
    print(f"run directory: {experiment.run_dir}")
    return 0


def _cmd_train(args) -> int:
    from mtlrec.training.distribute.cluster_env import cluster_from_env
    from mtlrec.training.distribute.strategies import make_strategy
    from mtlrec.training.thread_pools import apply_thread_pools

    # Reading the config runs nothing of TensorFlow, so a TF_CONFIG cluster (whose
    # MultiWorkerMirroredStrategy must come before anything TensorFlow runs) is joined after,
    # and so are TensorFlow's thread pools set.
    config = _load(args.config)
    apply_thread_pools(config.training)
    strategy = None
    if config.training.strategy == "parameter_server":  # a worker or ps task serves here
        strategy = make_strategy("parameter_server")
    elif cluster_from_env():
        strategy = make_strategy("multi_worker")
    elif config.training.strategy != "auto":
        strategy = make_strategy(config.training.strategy)
    from mtlrec.training.experiment import Experiment

    experiment = Experiment(config, run_dir=args.run_dir, strategy=strategy)
    if args.follow or args.until:
        return _follow(experiment, args)
    entries = experiment.train(day=args.day, days=args.days, force=args.force, migrate_lookups=args.migrate_lookups)
    if not entries:
        print("nothing to train: the days asked are already trained with this config "
              "(--force trains them again)")
    for entry in entries:
        print(
            f"trained {entry['day']}: {entry['steps']} steps (global step {entry['global_step']})"
            + (f", evaluated on {entry['eval_day']}" if entry.get("eval_day") else "")
            + (f", export version {entry['export_version']}" if entry.get("export_version") else "")
        )
    print(f"run directory: {experiment.run_dir}")
    return 0


def _format_metrics(results: dict) -> str:
    names = ("auc", "logloss", "calibration", "gauc", "auc_entire", "oracle_auc", "accuracy", "mse")
    present = [n for n in names if any(n in v for v in results.values())]
    lines = [f"{'output':<12}" + "".join(f"{n:>13}" for n in present)]
    for task, values in results.items():
        cells = []
        for n in present:
            v = values.get(n)
            cells.append(f"{'-':>13}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>13.4f}")
        lines.append(f"{task:<12}" + "".join(cells))
    return "\n".join(lines)


def _cmd_evaluate(args) -> int:
    from mtlrec.training.experiment import Experiment

    config = _load(args.config)
    result = Experiment(config, run_dir=args.run_dir).evaluate(args.day)
    if args.json:
        print(json.dumps({"metrics": result.metrics, "expert_utilization": result.utilization}, indent=2))
    else:
        print(_format_metrics(result.metrics))
        for task, weights in result.utilization.items():
            print(f"gate weights {task}: " + " ".join(f"{w:.3f}" for w in weights))
    return 0


def _cmd_export(args) -> int:
    from mtlrec.training.experiment import Experiment
    from mtlrec.training.serving.export import read_metadata

    config = _load(args.config)
    experiment = Experiment(config, run_dir=args.run_dir)
    current = None if args.force else experiment.current_export()
    if current is not None:
        print(f"nothing written: the newest export {current} already is the newest checkpoint "
              f"(global step {read_metadata(current).get('global_step')}); --force exports it again")
        return 0
    print(f"exported {experiment.export()}")
    return 0


def _cmd_predict(args) -> int:
    from mtlrec.training.serving.predict import predict_file

    if args.batch_size <= 0:
        raise _UsageError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    rows = predict_file(args.model, args.input, args.output, batch_size=args.batch_size)
    print(f"wrote {rows} rows to {args.output}")
    return 0


def _cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port: expected 0 to 65535, got {args.port}")
    if args.max_batch_rows < 1:
        raise _UsageError(f"--max-batch-rows: expected a positive integer, got {args.max_batch_rows}")
    if not args.batch_wait_ms >= 0:
        raise _UsageError(f"--batch-wait-ms: expected 0 or more, got {args.batch_wait_ms}")
    for flag, value in (("--intra-op-threads", args.intra_op_threads), ("--inter-op-threads", args.inter_op_threads)):
        if value < 0:
            raise _UsageError(f"{flag}: expected 0 (TensorFlow's default) or more, got {value}")
    for flag, value in (("--poll-seconds", args.poll_seconds), ("--max-body-mb", args.max_body_mb)):
        if not value > 0:
            raise _UsageError(f"{flag}: expected a positive number, got {value}")
    from mtlrec.training.serving.model_server import ModelServer

    server = ModelServer(
        args.model, name=args.name, host=args.host, port=args.port, max_batch_rows=args.max_batch_rows,
        batch_wait_ms=args.batch_wait_ms, poll_seconds=args.poll_seconds, max_body_mb=args.max_body_mb,
        intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads,
    )

    def announce(running):
        served = running.versions.current
        print(f"serving {running.name} version {served.version} ({served.path}) at {running.url}", flush=True)

    server.run(announce)
    return 0


def _cmd_report(args) -> int:
    from mtlrec.training.report import make_report

    paths = make_report(args.run_dir, args.out)
    for path in paths:
        print(path)
    return 0


def _cmd_demo(args) -> int:
    from mtlrec.training.demo import run_demo

    run_demo(args.workdir, rows_per_day=args.rows)
    return 0


class _UsageError(Exception):
    pass


COMMANDS = {
    "generate": _cmd_generate,
    "convert": _cmd_convert,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "predict": _cmd_predict,
    "serve": _cmd_serve,
    "report": _cmd_report,
    "demo": _cmd_demo,
}


_COMMANDS_WITHOUT_TENSORFLOW = {"report"}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv=None) -> int:
    """Entry point of the ``mtlrec`` console script; returns the exit code."""
    _setup_environment()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command not in _COMMANDS_WITHOUT_TENSORFLOW:
        from mtlrec.backend_import import import_backend_quietly

        import_backend_quietly(drop_startup_lines=not args.verbose)
    restore_logging = _setup_logging(args.verbose, args.quiet)
    try:
        return _run(args)
    finally:
        restore_logging()


def _run(args) -> int:
    """Run one command; known errors become one line on stderr and an exit code."""
    from mtlrec.data_pipeline.data_validation_error import DataValidationError
    from mtlrec.training.errors import ConfigError, RunError

    def fail(err, code):
        if args.verbose:
            traceback.print_exc()
        print(f"mtlrec: error: {_one_line(err)}", file=sys.stderr)
        return code

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, _UsageError) as err:
        return fail(err, 2)
    except (RunError, DataValidationError, OSError) as err:  # OSError: disk full, unwritable dir, ...
        return fail(err, 1)
    except ValueError as err:  # a bad argument value (a day that does not parse, ...)
        return fail(err, 2)
    except KeyboardInterrupt:
        print("mtlrec: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``mtlrec`` console script: ``main()``, then, when the command succeeded, the
    process ends at once (``exit_now``)."""
    code = main()
    if code == 0:
        exit_now(code)
    sys.exit(code)


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    When a command has succeeded every file it wrote is complete, fsynced and closed (the
    run directory's writes are atomic); what a normal exit would still do is tear down
    TensorFlow's runtime and free the tables one object at a time: 3 to 8 s after training
    on 53M embedding parameters, longer than some commands. The logs and the standard
    streams are flushed first.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
