"""Per-task metrics over a day of any size, in memory that does not grow with the day.

``DayMetrics`` takes a day batch by batch and keeps, per output:

- binary: a ``ScoreHistogram`` (positive and negative weight per score bin,
  65,536 bins equally spaced in logit space over [-16, 16]) for AUC and the
  reliability curve, running sums for logloss and calibration, and a
  ``GroupAucSpill`` for GAUC (rows kept in memory up to a limit, then spilled
  to disk in user-hash buckets; GAUC is computed bucket by bucket, exactly);
- multiclass: correct predictions and the logloss sum; regression: squared and
  absolute error sums.

AUC from the histogram counts pairs in one bin as ties: it is exact when no
two different scores share a bin, and never further from the exact value than
``ScoreHistogram.max_auc_error()`` (0.5 * sum_b pos_b neg_b / (P N)).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from keras import ops

from mtlrec.metrics import binary as metrics
from mtlrec.row_weights import metric_weights
from mtlrec.tasks import Task, funnel_chain, require

SCORE_BINS = 1 << 16
LOGIT_RANGE = 16.0
CALIBRATION_BINS = 10
SPILL_MEMORY_ROWS = 500_000
SPILL_BUCKETS = 64


def score_bins(scores, bins: int = SCORE_BINS):
    """Bin index of each probability: equal-width bins of its logit clipped to +-LOGIT_RANGE.

    Written with ``keras.ops`` so that ``DayMetrics`` (numpy) and
    ``StreamingTaskMetrics`` (inside a ``tf.function``) bin alike.
    """
    p = ops.clip(ops.cast(ops.convert_to_tensor(scores), "float64"), 1e-300, 1.0 - 1e-16)
    logit = ops.clip(ops.log(p) - ops.log1p(-p), -LOGIT_RANGE, LOGIT_RANGE)
    scaled = (logit + LOGIT_RANGE) / (2 * LOGIT_RANGE)
    return ops.minimum(ops.cast(ops.floor(scaled * bins), "int32"), bins - 1)


class ScoreHistogram:
    """Positive weight, negative weight and score sum per score bin."""

    def __init__(self, bins: int = SCORE_BINS):
        self.pos = np.zeros(bins)
        self.neg = np.zeros(bins)
        self.score = np.zeros(bins)

    def add(self, scores, pos_weight, neg_weight) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        idx = np.asarray(score_bins(scores, len(self.pos)))
        n = len(self.pos)
        self.pos += np.bincount(idx, weights=pos_weight, minlength=n)
        self.neg += np.bincount(idx, weights=neg_weight, minlength=n)
        self.score += np.bincount(idx, weights=scores * (pos_weight + neg_weight), minlength=n)

    def auc(self) -> float:
        return metrics.auc_from_counts(self.pos, self.neg)

    def max_auc_error(self) -> float:
        """Largest possible distance of ``auc()`` from the exact AUC of the rows added."""
        total = self.pos.sum() * self.neg.sum()
        return float(0.5 * np.dot(self.pos, self.neg) / total) if total > 0 else 0.0

    def reliability(self, groups: int = CALIBRATION_BINS) -> dict:
        """Mean score and mean label in ``groups`` score-quantile groups of whole bins."""
        count = self.pos + self.neg
        total = count.sum()
        out = {"pred": [], "label": [], "count": []}
        if total <= 0:
            return out
        before = np.cumsum(count) - count
        group = np.minimum((before * groups / total).astype(np.int64), groups - 1)
        n = np.bincount(group, weights=count, minlength=groups)
        score = np.bincount(group, weights=self.score, minlength=groups)
        pos = np.bincount(group, weights=self.pos, minlength=groups)
        for g in np.flatnonzero(n > 0):
            out["pred"].append(float(score[g] / n[g]))
            out["label"].append(float(pos[g] / n[g]))
            out["count"].append(int(round(n[g])))
        return out


class GroupAucSpill:
    """GAUC of one output over any number of rows.

    Rows (64-bit hash of the group id, label, score) stay in memory up to
    ``memory_rows``; beyond that they go to ``buckets`` files by hash bits
    under a temporary directory (in ``spill_dir`` or the system's temp dir).
    ``parts()`` runs ``metrics.gauc_parts`` per bucket (a bucket still larger
    than ``memory_rows`` is split again on the next hash bits) and sums.
    Groups are told apart by their hash: two ids sharing a 64-bit hash would
    merge (about 3e-4 chance for 100M distinct ids). ``weighted``: rows carry a
    weight too (``metrics.gauc_parts``' ``sample_weight``).
    """

    RECORD = np.dtype([("g", "<u8"), ("y", "<f4"), ("p", "<f8")])
    WEIGHTED_RECORD = np.dtype([("g", "<u8"), ("y", "<f4"), ("p", "<f8"), ("w", "<f8")])
    _BITS = 6  # SPILL_BUCKETS = 2**6

    def __init__(self, spill_dir=None, memory_rows: int | None = None, weighted: bool = False):
        self.spill_dir = spill_dir
        self.memory_rows = SPILL_MEMORY_ROWS if memory_rows is None else memory_rows
        self.record = self.WEIGHTED_RECORD if weighted else self.RECORD
        self._chunks: list[np.ndarray] = []
        self._rows = 0
        self._dir: str | None = None

    def add(self, groups, labels, scores, weights=None) -> None:
        rec = np.empty(len(labels), self.record)
        rec["g"] = pd.util.hash_array(np.asarray(groups).reshape(-1))
        rec["y"] = labels
        rec["p"] = scores
        if weights is not None:
            rec["w"] = weights
        self._chunks.append(rec)
        self._rows += len(rec)
        if self._rows > self.memory_rows:
            self._spill()

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="mtlrec_gauc_", dir=self.spill_dir)
        _write_buckets(np.concatenate(self._chunks), self._dir, level=0)
        self._chunks, self._rows = [], 0

    def parts(self) -> tuple[float, float]:
        """(sum_u n_u AUC_u, sum_u n_u) over the groups holding both classes."""
        if self._dir is None:
            rec = np.concatenate(self._chunks) if self._chunks else np.empty(0, self.record)
            return _record_parts(rec)
        if self._chunks:
            self._spill()
        try:
            return _bucket_parts(self._dir, 0, self.memory_rows, self.record)
        finally:
            self.close()

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._chunks, self._rows = [], 0


def _write_buckets(rec: np.ndarray, directory: str, level: int) -> None:
    shift = np.uint64(GroupAucSpill._BITS * level)
    bucket = ((rec["g"] >> shift) & np.uint64(SPILL_BUCKETS - 1)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    rec, ends = rec[order], np.cumsum(np.bincount(bucket, minlength=SPILL_BUCKETS))
    start = 0
    for b, end in enumerate(ends):
        if end > start:
            with open(os.path.join(directory, f"{b:02d}.bin"), "ab") as f:
                rec[start:end].tofile(f)
        start = end


def _record_parts(rec: np.ndarray) -> tuple[float, float]:
    weights = rec["w"] if "w" in rec.dtype.names else None
    return metrics.gauc_parts(rec["y"], rec["p"], rec["g"], weights)


def _bucket_parts(directory: str, level: int, memory_rows: int, record: np.dtype) -> tuple[float, float]:
    num = den = 0.0
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            continue
        rows = os.path.getsize(path) // record.itemsize
        deeper = GroupAucSpill._BITS * (level + 1) < 64
        if rows > memory_rows and deeper:
            sub = os.path.join(directory, f"{name}.split")
            os.mkdir(sub)
            for start in range(0, rows, memory_rows):
                chunk = np.fromfile(path, record, count=memory_rows, offset=start * record.itemsize)
                _write_buckets(chunk, sub, level + 1)
            os.remove(path)
            n, d = _bucket_parts(sub, level + 1, memory_rows, record)
        else:
            n, d = _record_parts(np.fromfile(path, record))
        num, den = num + n, den + d
    return num, den


class _Binary:
    """Everything one binary output needs; ``space`` rows only unless said otherwise."""

    def __init__(self, grouped: bool, truth: bool, entire: bool, spill_dir, weighted: bool = False):
        self.hist = ScoreHistogram()
        self.logloss_sum = self.label_sum = 0.0
        self.gauc = GroupAucSpill(spill_dir, weighted=weighted) if grouped else None
        self.entire = ScoreHistogram() if entire else None
        self.truth = [ScoreHistogram() for _ in range(3)] if truth else None

    def add(self, y, p, space, groups, truth, weight=None) -> None:
        if weight is not None:
            self._add_weighted(y, p, space, groups, truth, weight)
            return
        ys, ps = y[space], p[space]
        positive = (ys > 0.5).astype(np.float64)
        self.hist.add(ps, positive, 1.0 - positive)
        self.logloss_sum += metrics.logloss_sum(ys, ps)
        self.label_sum += float(ys.sum())
        if self.gauc is not None:
            self.gauc.add(groups[space], ys, ps)
        if self.entire is not None:
            positive_all = (y > 0.5).astype(np.float64)
            self.entire.add(p, positive_all, 1.0 - positive_all)
        if self.truth is not None:
            oracle, against_truth, truth_oracle = self.truth
            oracle.add(truth[space], positive, 1.0 - positive)
            against_truth.add(p, truth, 1.0 - truth)
            truth_oracle.add(truth, truth, 1.0 - truth)

    def _add_weighted(self, y, p, space, groups, truth, weight) -> None:
        """``add`` with each row counting ``weight`` times (sums of weights for counts)."""
        ys, ps, ws = y[space], p[space], weight[space]
        positive = (ys > 0.5).astype(np.float64)
        self.hist.add(ps, positive * ws, (1.0 - positive) * ws)
        self.logloss_sum += metrics.logloss_sum(ys, ps, ws)
        self.label_sum += float(np.dot(ws, ys))
        if self.gauc is not None:
            self.gauc.add(groups[space], ys, ps, ws)
        if self.entire is not None:
            positive_all = (y > 0.5).astype(np.float64)
            self.entire.add(p, positive_all * weight, (1.0 - positive_all) * weight)
        if self.truth is not None:
            oracle, against_truth, truth_oracle = self.truth
            oracle.add(truth[space], positive * ws, (1.0 - positive) * ws)
            against_truth.add(p, truth * weight, (1.0 - truth) * weight)
            truth_oracle.add(truth, truth * weight, (1.0 - truth) * weight)

    def result(self, clicked: bool) -> dict:
        count = float(self.hist.pos.sum() + self.hist.neg.sum())
        pred_sum = float(self.hist.score.sum())
        out = {
            "count": count,
            "positives": float(self.hist.pos.sum()),
            "auc": self.hist.auc(),
            "logloss": self.logloss_sum / count if count else float("nan"),
            "calibration": pred_sum / self.label_sum if count and self.label_sum else float("nan"),
        }
        if self.gauc is not None:
            num, den = self.gauc.parts()
            out["gauc"] = num / den if den > 0 else float("nan")
        if clicked:
            out["auc_clicked"] = out["auc"]
            out["auc_entire"] = self.entire.auc()
        if self.truth is not None:
            oracle, against_truth, truth_oracle = self.truth
            out["oracle_auc"] = oracle.auc()
            out["truth_auc"] = against_truth.auc()
            out["truth_auc_oracle"] = truth_oracle.auc()
        return out

    def close(self) -> None:
        if self.gauc is not None:
            self.gauc.close()


def _get(mapping: Mapping, key: str, what: str, task: str) -> np.ndarray:
    return np.asarray(require(mapping, key, what, task))


def _add_rows(acc: dict, kind: str, y, pred, space, weight) -> None:
    """Sums of a multiclass or regression task's metrics over the rows of its space (each
    times its weight when given; ``count`` then sums the weights)."""
    w = None if weight is None else weight[space]
    if kind == "multiclass":
        yy = y[space].astype(np.int64)
        pp = np.clip(pred[space], metrics.EPS, 1.0)
        pp = pp / pp.sum(axis=1, keepdims=True)
        correct = pp.argmax(axis=1) == yy
        log_p = np.log(pp[np.arange(len(yy)), yy])
        if w is None:
            acc["count"] += len(yy)
            acc["accuracy"] += float(np.sum(correct))
            acc["logloss"] -= float(log_p.sum())
        else:
            acc["count"] += float(w.sum())
            acc["accuracy"] += float(np.dot(w, correct))
            acc["logloss"] -= float(np.dot(w, log_p))
        return
    diff = pred[space] - y[space]
    if w is None:
        acc["count"] += len(diff)
        acc["mse"] += float(np.sum(diff**2))
        acc["mae"] += float(np.sum(np.abs(diff)))
    else:
        acc["count"] += float(w.sum())
        acc["mse"] += float(np.dot(w, diff**2))
        acc["mae"] += float(np.dot(w, np.abs(diff)))


class DayMetrics:
    """The metrics of ``mtlrec.metrics.evaluate``, accumulated batch by batch.

    Args:
        tasks: ``Task`` objects or task dicts.
        spill_dir: parent directory of GAUC spill files (default: the system's
            temp dir, ``TMPDIR``); they are removed by ``result()``/``close()``.

    ``update(labels, predictions, extras)`` takes one batch (arrays as in
    ``evaluate``); which extras are present (``user_id``, ``true_<name>``) is
    fixed by the first batch. ``result()`` returns the metrics dict,
    ``calibration()`` the reliability curve of every binary output.

    Tasks with row weights (a ``sample_weight`` column, negative downsampling:
    ``mtlrec.row_weights.metric_weights``) read them from ``labels``; every metric of
    their outputs is then weighted, ``count`` and ``positives`` being sums of weights.
    """

    def __init__(self, tasks: Iterable, spill_dir=None):
        self.tasks = [Task.from_dict(t, f"tasks[{i}]") for i, t in enumerate(tasks)]
        self.spill_dir = spill_dir
        self._acc: dict | None = None

    def _space(self, task: Task):
        """The task's own output's evaluation space (``Task.evaluation_spaces``)."""
        return task.evaluation_spaces(self.tasks)[0]

    @staticmethod
    def _rows(space, labels: Mapping, n: int) -> np.ndarray:
        """Bool (n,) mask of the rows of ``space`` in this batch."""
        rows = space.rows(labels, lambda x: metrics.as_vector(x, space.condition))
        return np.ones(n, dtype=bool) if rows is None else rows

    def _truth(self, task: Task, extras: Mapping, joint: bool):
        name = task.joint_name if joint else task.name
        key = f"true_{name}"
        if key in extras:
            return metrics.as_vector(extras[key], key)
        if not joint:
            return None
        keys = [f"true_{t.name}" for t in funnel_chain(task, self.tasks)]
        if all(k in extras for k in keys):
            return np.prod([metrics.as_vector(extras[k], k) for k in keys], axis=0)
        return None

    def _create(self, extras: Mapping, truths: dict, weights: dict) -> dict:
        grouped = "user_id" in extras
        acc = {}
        for task in self.tasks:
            weighted = weights[task.name] is not None
            # multiclass and regression keep "count" and per-row sums of the metrics
            if task.kind == "multiclass":
                acc[task.name] = {"count": 0.0, "accuracy": 0.0, "logloss": 0.0}
            elif task.kind == "regression":
                acc[task.name] = {"count": 0.0, "mse": 0.0, "mae": 0.0}
            else:
                conditioned = self._space(task).condition is not None
                acc[task.name] = _Binary(
                    grouped, truths.get(task.name) is not None, conditioned, self.spill_dir, weighted
                )
                if task.parent is not None:
                    acc[task.joint_name] = _Binary(
                        grouped, truths.get(task.joint_name) is not None, False, self.spill_dir, weighted
                    )
        return acc

    def update(self, labels: Mapping, predictions: Mapping, extras: Mapping | None = None) -> None:
        extras = dict(extras or {})
        groups = np.asarray(extras["user_id"]).reshape(-1) if "user_id" in extras else None
        truths = {}
        for task in self.tasks:
            if task.kind == "binary":
                truths[task.name] = self._truth(task, extras, joint=False)
                if task.parent is not None:
                    truths[task.joint_name] = self._truth(task, extras, joint=True)
        weights = {task.name: self._weights(task, labels) for task in self.tasks}
        if self._acc is None:
            self._acc = self._create(extras, truths, weights)
        for task in self.tasks:
            y = _get(labels, task.label, "label", task.name)
            pred = _get(predictions, task.name, "prediction", task.name)
            if task.kind == "multiclass":
                y, pred = y.reshape(-1), pred.reshape(len(pred), -1)
            else:
                y = metrics.as_vector(y, f"labels[{task.label!r}]")
                pred = metrics.as_vector(pred, f"predictions[{task.name!r}]")
            metrics.check_lengths(
                **{f"labels[{task.label!r}]": y, f"predictions[{task.name!r}]": pred}
            )
            if groups is not None:
                metrics.check_lengths(labels=y, user_id=groups)
            space = self._rows(self._space(task), labels, len(y))
            acc = self._acc[task.name]
            weight = weights[task.name]
            if weight is not None:
                metrics.check_lengths(labels=y, weights=weight)
            if task.kind in ("multiclass", "regression"):
                _add_rows(acc, task.kind, y, pred, space, weight)
                continue
            truth = truths[task.name]
            if truth is not None:
                metrics.check_lengths(preds=pred, truth=truth)
            acc.add(y, pred, space, groups, truth, weight)
            for joint_space in task.evaluation_spaces(self.tasks)[1:]:
                joint = metrics.as_vector(
                    _get(predictions, joint_space.output, "joint prediction", task.name),
                    f"predictions[{joint_space.output!r}]",
                )
                metrics.check_lengths(labels=y, joint=joint)
                truth = truths[joint_space.output]
                if truth is not None:
                    metrics.check_lengths(preds=joint, truth=truth)
                rows = self._rows(joint_space, labels, len(y))
                self._acc[joint_space.output].add(y, joint, rows, groups, truth, weight)

    def _weights(self, task: Task, labels: Mapping):
        """(n,) float64 weights of the task's rows, None when every row weighs 1."""
        return metric_weights(task, self.tasks, labels, lambda x: metrics.as_vector(x, "row weights"))

    def result(self) -> dict:
        """dict task (or joint output) name -> dict metric name -> float."""
        if self._acc is None:
            raise ValueError("no rows were given to the metrics")
        out = {}
        for task in self.tasks:
            acc = self._acc[task.name]
            if task.kind in ("multiclass", "regression"):
                n = acc["count"]
                out[task.name] = {
                    key: float(n) if key == "count" else (total / n if n else float("nan"))
                    for key, total in acc.items()
                }
            else:
                out[task.name] = acc.result(clicked=self._space(task).condition is not None)
                if task.parent is not None:
                    out[task.joint_name] = self._acc[task.joint_name].result(clicked=False)
        return out

    def calibration(self, groups: int = CALIBRATION_BINS) -> dict:
        """Binary output -> ``{"pred", "label", "count"}``: its reliability curve."""
        return {name: acc.hist.reliability(groups) for name, acc in self._binaries()}

    def max_auc_error(self) -> dict:
        """Binary output -> bound on the distance of its ``auc`` from the exact AUC."""
        return {name: acc.hist.max_auc_error() for name, acc in self._binaries()}

    def close(self) -> None:
        """Remove spill files (``result()`` already does)."""
        for _, acc in self._binaries():
            acc.close()

    def _binaries(self):
        return [(name, acc) for name, acc in (self._acc or {}).items() if isinstance(acc, _Binary)]
