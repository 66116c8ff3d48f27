"""Helpers shared by the paper-reproduction benchmarks (benchmarks/paper_*.py,
benchmarks/loss_weighting.py): data in memory as tf.data, training with the models'
own `compute_loss` through `model.fit`, tables, plots and their sections in
`docs/results/papers.md` (`docs/results/quality.md` for the dynamic-table study).

Not a public API: the benchmarks import it as `_paper_common` (run them from the
repository root with `PYTHONPATH=.`).
"""

import os
import platform
import re
import shlex
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results", "papers.md")
QUALITY = os.path.join(ROOT, "docs", "results", "quality.md")
PLOTS = os.path.join(ROOT, "docs", "plots")

RESULTS_INTRO = """# Papers reproduced

Qualitative checks of the models against the findings of the papers they come from,
on data that mtlrec generates. The sections below are written by the script they name,
with the exact command that made them; rerunning a script replaces its section.
Plots are in `docs/plots/`.
"""


# ----------------------------------------------------------------- data


def dense_schema(dim, labels, prefix="x"):
    """Schema of `dim` numeric features `x000..` (no normalisation) and `labels`
    (label name -> kind)."""
    return {
        "numeric": [{"name": f"{prefix}{i:03d}", "normalize": "none"} for i in range(dim)],
        "labels": [{"name": name, "kind": kind} for name, kind in labels.items()],
    }


def dense_features(x, prefix="x"):
    """(N, dim) array -> the feature dict of `dense_schema`."""
    return {f"{prefix}{i:03d}": np.ascontiguousarray(x[:, i]) for i in range(x.shape[1])}


def take(columns, index):
    """Rows `index` of every array of a dict."""
    return {k: v[index] for k, v in columns.items()}


def dataset(features, labels, batch_size, seed, shuffle=True):
    """In-memory `(features, labels)` batches, reshuffled every epoch (seeded).

    Row indices are shuffled and batched, then each batch gathers its rows from the
    columns: much cheaper than batching per-row elements of a 100-feature dict.
    """
    columns = {k: tf.constant(v) for k, v in features.items()}
    targets = {k: tf.constant(v) for k, v in labels.items()}
    n = len(next(iter(labels.values())))
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def gather(index):
        return ({k: tf.gather(v, index) for k, v in columns.items()},
                {k: tf.gather(v, index) for k, v in targets.items()})

    return ds.batch(batch_size).map(gather).prefetch(2)


def funnel_day_arrays(root, day, schema, extra_columns=("true_ctr", "true_cvr")):
    """One day of `generate_funnel` output read through `make_dataset` into numpy:
    `(features, labels)` dicts (labels include the extra columns)."""
    from mtlrec.data_pipeline import make_dataset

    features, labels = {}, {}
    for f, l in make_dataset(root, day, schema, batch_size=65536, extra_columns=extra_columns):
        for k, v in f.items():
            features.setdefault(k, []).append(v.numpy())
        for k, v in l.items():
            labels.setdefault(k, []).append(v.numpy())
    return (
        {k: np.concatenate(v) for k, v in features.items()},
        {k: np.concatenate(v) for k, v in labels.items()},
    )


def funnel_data(days, rows_per_day, seed, keep, **knobs):
    """Generate `days` days of the synthetic funnel in a temporary directory and read
    each back: a list of `(features, labels)` (one per day) and the schema restricted to
    the features in `keep` (sequences dropped unless kept)."""
    from mtlrec.data_pipeline import funnel_schema_dict, generate_funnel

    full = funnel_schema_dict(**knobs)
    schema = {
        section: [f for f in full.get(section, []) if f["name"] in keep]
        for section in ("categorical", "numeric", "sequence")
    }
    schema = {k: v for k, v in schema.items() if v}
    schema["labels"] = full["labels"]
    with tempfile.TemporaryDirectory(prefix="mtlrec_bench_") as root:
        names = generate_funnel(root, "2024-01-01", days, rows_per_day, seed=seed, **knobs)
        out = [funnel_day_arrays(root, d, schema) for d in names]
    return out, schema


# ----------------------------------------------------------------- training


def fit(model, train_ds, epochs, learning_rate, steps_per_execution=32):
    """`model.fit` with Adam; the loss is the model's own `compute_loss` (the task
    losses combined by its loss weighting). Returns (history dict, seconds)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), steps_per_execution=steps_per_execution
    )
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=epochs, verbose=0).history
    return history, time.perf_counter() - start


def predict(model, features, batch_size=8192):
    """Output dict of numpy arrays, `(N, 1)` outputs flattened to `(N,)`."""
    ds = tf.data.Dataset.from_tensor_slices(features).batch(batch_size)  # string ids too
    out = model.predict(ds, verbose=0)
    flat = {}
    for name, value in out.items():
        value = np.asarray(value)
        flat[name] = value.reshape(-1) if value.ndim == 2 and value.shape[1] == 1 else value
    return flat


def fit_predict(model, train, rows, eval_features, args, seed):
    """Train `model` on rows `rows` of `train` = (features, labels) for `args.epochs`
    (batch `args.batch_size`, Adam `args.learning_rate`), then predict `eval_features`.
    Returns (predictions, training seconds) and frees the model."""
    ds = dataset(take(train[0], rows), take(train[1], rows), args.batch_size, seed=seed)
    _, seconds = fit(model, ds, args.epochs, args.learning_rate)
    out = predict(model, eval_features)
    release(model)
    return out, seconds


def count_params(model, embeddings=True):
    """Trainable parameters; `embeddings=False` leaves out the embedding tables."""
    skip = set() if embeddings else {id(v) for v in model.variable_groups().embedding_tables}
    return int(sum(np.prod(v.shape) for v in model.trainable_variables if id(v) not in skip))


def seed_everything(seed):
    keras.utils.set_random_seed(seed)


def release(model=None):
    """Free a finished model's graph (many models are built in one process)."""
    del model
    keras.backend.clear_session()


# ----------------------------------------------------------------- reporting


def mean_std(values):
    a = np.asarray(values, dtype=float)
    return float(np.mean(a)), float(np.std(a, ddof=1)) if len(a) > 1 else 0.0


def fmt_mean_std(values, digits=4):
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(header, rows, align=None):
    """A markdown table; `align` a string of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row):
        return "| " + " | ".join(
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)
        ) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def command():
    """The command line that ran this script, as typed from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python {script}" + (f" {args}" if args else "")


def print_report(summary, header, rows):
    """Prints a run's summary line (with the machine), its command and its markdown table."""
    print(f"{summary}; {machine()}")
    print(f"command: {command()}")
    print(markdown_table(header, rows))


def machine():
    import mtlrec

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs shared with other jobs (load average {load} at the end), "
        f"mtlrec {mtlrec.__version__}, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def tagged(stem, tag):
    """File stem of a variant run: `stem` or `stem-<tag>`."""
    return f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', tag)}" if tag else stem


def section_title(title, tag):
    return f"{title}: {tag}" if tag else title


def write_section(title, body, results=RESULTS):
    """Put a section `title` + body into `results` (docs/results/papers.md), replacing an
    earlier section of the same title at whatever heading level it stands (up to the next
    heading of that level or higher; the body's own headings, written for level 2, move
    down with it), else appending it as `## title` (the file is created with a short intro
    when missing)."""
    os.makedirs(os.path.dirname(results), exist_ok=True)
    text = open(results).read() if os.path.exists(results) else RESULTS_INTRO
    found = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    level = len(found.group(1)) if found else 2
    body = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + level - 2) + " ", body.strip(), flags=re.M)
    section = f"{'#' * level} {title}\n\n{body}\n"
    if found:
        end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, found.end())
        stop = end.start() if end else len(text)
        text = (text[:found.start()] + section + "\n" + text[stop:]).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    with open(results, "w") as f:
        f.write(text)
    return results


def plot_link(plot, results=RESULTS):
    """The markdown path of `plot` (relative to the repository root) from `results`."""
    return os.path.relpath(os.path.join(ROOT, plot), os.path.dirname(results))


def plot_path(name):
    os.makedirs(PLOTS, exist_ok=True)
    return os.path.join(PLOTS, name)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name):
    path = plot_path(name)
    fig.tight_layout(rect=(0, 0, 1, 0.93) if fig.legends else None)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return os.path.relpath(path, ROOT)
