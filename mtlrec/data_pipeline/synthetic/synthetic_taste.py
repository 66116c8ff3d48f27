"""Synthetic world where each user's taste drives their behavior history, with its bounds.

Many users with few impressions a day each: what a model can know about a user is in
the user's history, not in their id. World (fixed by `seed`; s = L^(-1/4), so that
t . v has about unit variance):

    item i:  v_i = sqrt(1/2) mu_c(i) + sqrt(1/2) w_i,   mu_c, w_i ~ N(0, s^2 I_L)
             (category c(i)), a log price near its category's, a CTR bias q_i, a CVR bias
             r_i (cheaper items convert better) and a popularity (how often it is shown)
    user u:  taste t_u ~ N(0, s^2 I_L)

History (the items the user clicked or viewed before the day, oldest first, up to
`max_len`): each step is an item drawn with probability ~ exp(taste_strength * t_u . v_i)
over the catalogue, in two stages: the category exactly (the sum of that weight over
a category's items is, for many items, proportional to its size times
exp(taste_strength * t_u . mu_c / sqrt 2)), then the item by a Gumbel max of
taste_strength * t_u . w_i / sqrt 2 over `candidates` items of that category. Users
start with 0..`max_len` steps; each later day appends `history_per_day` steps. A user's
history is the same for all their impressions of a day.

Per impression (a user drawn uniformly, an item by popularity, a position):

    pCTR = sigmoid(signal * t_u . v_i + q_i + pos_effect(position) + b_ctr)
    pCVR = sigmoid(cvr_signal * t_u . v_i + r_i + b_cvr)
    click ~ Bernoulli(pCTR);  conversion = click AND Bernoulli(pCVR)

Columns that are not features (evaluation only), each a probability:

- `true_ctr`, `true_cvr`: the oracle (the true taste).
- `history_ctr`, `history_ctcvr`: what the generator's own formula gives from the row's
  history alone. The taste is estimated from the history by the best linear estimate
  from its categories' and items' vectors, t^ = a_n sum_h mu_c(h) + b_n sum_h w_h, with
  a_n, b_n and the residual variance S_n per history length n fitted on the sampler
  itself when the world is built; then with z = t . v_i ~ N(t^ . v_i, S_n |v_i|^2),
  history_ctr = E_z[pCTR] and history_ctcvr = E_z[pCTR pCVR] (Gauss-Hermite). It knows
  what a model sees (the items, the positions, the history), not the taste: a model of
  these features can reach its AUC.
- `prior_ctr`, `prior_ctcvr`: the same from an empty history (everything but the taste).
"""

import datetime
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.conventions.arg_checks import check_positive_int
from mtlrec.data_pipeline.filesystems import require_local
from mtlrec.data_pipeline.partitions import day_dir, parse_day

KNOBS = {
    "num_users": 1_000_000,
    "num_items": 50_000,
    "num_categories": 200,
    "latent_dim": 8,
    "max_len": 30,
    "history_per_day": 3,  # history steps each user adds per later day
    "candidates": 4,  # items of the drawn category a history step chooses among
    "taste_strength": 2.0,  # how closely a history step follows the taste
    "signal": 1.0,  # weight of taste . item in the CTR logit
    "cvr_signal": 1.0,  # ... and in the CVR logit
    "base_ctr": 0.05,
    "base_cvr": 0.1,
    "files_per_day": 1,
    "row_group_size": 262_144,  # rows generated (and written) at a time: bounds the memory
    "compression": None,  # parquet codec (default snappy)
    "dim": 8,  # schema only: embedding dim
}
NUM_POSITIONS = 50
ROWS_PER_DAY_ID = 10**10  # impression_id = day_index * ROWS_PER_DAY_ID + row
USER_CHUNK = 8192  # users drawn at a time (part of the definition: the draws depend on it)
BOUND_COLUMNS = ("history_ctr", "history_ctcvr", "prior_ctr", "prior_ctcvr")
_FLOAT_KNOBS = ("taste_strength", "signal", "cvr_signal")
_GAUSS_HERMITE = np.polynomial.hermite.hermgauss(12)
_FIT_USERS = 20_000  # users simulated to fit the estimate of the taste from a history


def _knobs(knobs):
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"Unknown taste world knobs {unknown}; expected some of {sorted(KNOBS)}. Received: {knobs}")
    k = dict(KNOBS, **knobs)
    for name in ("num_users", "num_items", "num_categories", "latent_dim", "max_len", "candidates",
                 "files_per_day", "row_group_size", "dim"):
        check_positive_int(name, k[name])
    check_positive_int("history_per_day", k["history_per_day"], minimum=0)
    for name in _FLOAT_KNOBS + ("base_ctr", "base_cvr"):
        if isinstance(k[name], bool) or not isinstance(k[name], (int, float, np.integer, np.floating)):
            raise ValueError(f"Expected {name} to be a number. Received: {name}={k[name]!r}")
    for name in _FLOAT_KNOBS:
        if k[name] < 0:
            raise ValueError(f"Expected {name} >= 0. Received: {name}={k[name]!r}")
    for name in ("base_ctr", "base_cvr"):
        if not 0.0 < k[name] < 1.0:
            raise ValueError(f"Expected {name} in (0, 1). Received: {name}={k[name]!r}")
    return k


def taste_schema_dict(**knobs):
    """Schema dict of the columns `generate_taste_days` writes (same knobs).

    Every id is an integer in [0, its count), so every table is `lookup: identity` of
    exactly that many rows: no two ids share a row. The histories read the candidate's
    tables (`shared_with`)."""
    k = _knobs(knobs)

    def cat(name, count):
        return {"name": name, "dtype": "int64", "num_buckets": int(count), "dim": k["dim"], "lookup": "identity"}

    return {
        "key": "impression_id",
        "categorical": [
            cat("user_id", k["num_users"]),
            cat("item_id", k["num_items"]),
            cat("item_category", k["num_categories"]),
            cat("position", NUM_POSITIONS),
        ],
        "numeric": [{"name": "price", "normalize": "log1p", "default": 0.0}],
        "sequence": [
            {"name": "hist_item_id", "dtype": "int64", "max_len": k["max_len"], "shared_with": "item_id"},
            {"name": "hist_category", "dtype": "int64", "max_len": k["max_len"], "shared_with": "item_category"},
        ],
        "labels": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _solve_bias(logits, target, iters=30):
    """b with mean(sigmoid(logits + b)) = target (Newton)."""
    b = math.log(target / (1 - target))
    for _ in range(iters):
        p = _sigmoid(logits + b)
        b -= (p.mean() - target) / max((p * (1 - p)).mean(), 1e-6)
    return float(b)


class TasteWorld:
    """Items, the users' tastes, the history sampler, the true probabilities and the
    estimate of the taste from a history; built from (seed, knobs) alone."""

    def __init__(self, seed=0, **knobs):
        k = self.k = _knobs(knobs)
        self.seed = seed
        rng = np.random.default_rng([seed, 20])
        I, C, L = k["num_items"], k["num_categories"], k["latent_dim"]
        self.scale = L ** -0.25
        self.centroids = rng.normal(0, self.scale, (C, L)).astype(np.float32)
        self.item_category = rng.integers(0, C, I)
        self.w = rng.normal(0, self.scale, (I, L)).astype(np.float32)  # the item's own part
        self.v = (math.sqrt(0.5) * self.centroids[self.item_category] + math.sqrt(0.5) * self.w).astype(np.float32)
        sizes = np.bincount(self.item_category, minlength=C)
        with np.errstate(divide="ignore"):
            self._log_sizes = np.log(sizes)  # -inf: an empty category is never drawn
        self._sizes = sizes
        self._by_category = np.argsort(self.item_category, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.log_price = rng.uniform(2.0, 6.0, C)[self.item_category] + rng.normal(0, 0.5, I)
        self.price = np.round(np.exp(self.log_price), 2).astype(np.float32)
        self.ctr_bias = rng.normal(0, 0.5, I)
        self.cvr_bias = -0.3 * (self.log_price - self.log_price.mean()) + rng.normal(0, 0.3, I)
        pop = rng.normal(0, 1, I)
        self._item_cdf = np.cumsum(np.exp(pop - pop.max()))
        self.pos_effect = -0.5 * np.log1p(np.arange(NUM_POSITIONS))

        sample = np.random.default_rng([seed, 21])
        n = 50_000
        taste = sample.normal(0, self.scale, (n, L))
        items, pos = self.draw_items(sample, n), self.draw_positions(sample, n)
        dot = np.einsum("ij,ij->i", taste, self.v[items])
        self.b_ctr = self.b_cvr = 0.0
        self.b_ctr = _solve_bias(self.ctr_logit(dot, items, pos), k["base_ctr"])
        self.b_cvr = _solve_bias(self.cvr_logit(dot, items), k["base_cvr"])
        self._fit_estimate(sample, taste[:_FIT_USERS].astype(np.float32))

    # ------------------------------------------------------------------ draws
    def tastes(self, lo, hi):
        """(hi - lo, L) float32: the tastes of users [lo, hi)."""
        L, out = self.k["latent_dim"], []
        for chunk in range(lo // USER_CHUNK, (hi - 1) // USER_CHUNK + 1):
            start = chunk * USER_CHUNK
            size = min(USER_CHUNK, self.k["num_users"] - start)
            t = np.random.default_rng([self.seed, 22, chunk]).normal(0, self.scale, (size, L))
            out.append(t[max(lo - start, 0):hi - start])
        return np.concatenate(out).astype(np.float32)

    def draw_items(self, rng, n):
        """`n` items drawn by popularity."""
        cdf = self._item_cdf
        return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), len(cdf) - 1)

    @staticmethod
    def draw_positions(rng, n):
        return np.minimum(rng.geometric(0.15, n) - 1, NUM_POSITIONS - 1)

    def history_steps(self, rng, taste, steps):
        """(users, steps) items, each drawn with probability ~ exp(taste_strength * t . v)
        (the module docstring's two stages)."""
        beta, B = self.k["taste_strength"] * math.sqrt(0.5), len(taste)
        logits = beta * (taste @ self.centroids.T) + self._log_sizes
        cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1, dtype=np.float64)
        cdf /= cdf[:, -1:]
        C = cdf.shape[1]
        # one search over all users: row b's cumulative weights shifted into (b, b + 1]
        rows = np.arange(B)[:, None]
        flat = (cdf + rows).ravel()
        # side="right": an empty category (zero weight) is never the one found
        cats = np.searchsorted(flat, (rows + rng.random((B, steps))).ravel(), side="right").reshape(B, steps) - rows * C
        cats = np.minimum(cats, C - 1)
        offset = (rng.random((B, steps, self.k["candidates"])) * self._sizes[cats][..., None]).astype(np.int64)
        cand = self._by_category[self._starts[cats][..., None] + offset]
        scores = beta * np.einsum("usck,uk->usc", self.w[cand], taste)
        scores += rng.gumbel(size=cand.shape).astype(np.float32)
        return np.take_along_axis(cand, scores.argmax(-1)[..., None], -1)[..., 0]

    def _block(self, block, steps):
        """(num_users, steps) history steps of `block` (0: the history before the first day)."""
        U = self.k["num_users"]
        out = np.empty((U, steps), dtype=np.int32)
        for lo in range(0, U, USER_CHUNK):
            hi = min(U, lo + USER_CHUNK)
            rng = np.random.default_rng([self.seed, 23, block, lo // USER_CHUNK])
            out[lo:hi] = self.history_steps(rng, self.tastes(lo, hi), steps)
        return out

    def histories(self, num_days):
        """Yields `(items, lengths)` of every user for days 0, 1, ...: items
        (num_users, max_len) int32, a user's history in their `lengths` last columns
        (oldest first). Users start with 0..max_len steps; each later day appends
        `history_per_day` steps."""
        T, per_day = self.k["max_len"], self.k["history_per_day"]
        lengths = np.random.default_rng([self.seed, 24]).integers(0, T + 1, self.k["num_users"])
        items = self._block(0, T)
        for day_index in range(num_days):
            if day_index and per_day:
                items = np.concatenate([items, self._block(day_index, per_day)], axis=1)[:, -T:]
                lengths = np.minimum(lengths + per_day, T)
            yield items, lengths

    # ------------------------------------------------------------------ probabilities
    def ctr_logit(self, dot, items, pos):
        return self.k["signal"] * dot + self.ctr_bias[items] + self.pos_effect[pos] + self.b_ctr

    def cvr_logit(self, dot, items):
        return self.k["cvr_signal"] * dot + self.cvr_bias[items] + self.b_cvr

    def history_sums(self, items, lengths):
        """(sum of mu_c(h), sum of w_h) over each history: two (users, L) float32 arrays."""
        T = items.shape[1]
        real = (np.arange(T)[None, :] >= (T - lengths)[:, None]).astype(np.float32)
        sums = []
        for table in (self.centroids[self.item_category], self.w):
            out = np.empty((len(items), table.shape[1]), dtype=np.float32)
            for lo in range(0, len(items), USER_CHUNK):
                hi = lo + USER_CHUNK
                out[lo:hi] = np.einsum("ut,utk->uk", real[lo:hi], table[items[lo:hi]])
            sums.append(out)
        return sums

    def _fit_estimate(self, rng, taste):
        """Per history length n: t^ = a_n sum mu + b_n sum w, the least-squares estimate of
        the taste from the sums (isotropic by symmetry), and S_n = E|t - t^|^2 / L."""
        T, L = self.k["max_len"], self.k["latent_dim"]
        steps = self.history_steps(rng, taste, T)
        mu = np.cumsum(self.centroids[self.item_category][steps], axis=1, dtype=np.float64)
        w = np.cumsum(self.w[steps], axis=1, dtype=np.float64)
        t = taste.astype(np.float64)[:, None, :]
        dot = lambda x, y: np.einsum("unk,unk->n", x, y)  # noqa: E731  (summed over users and dims)
        gram = np.stack([np.stack([dot(mu, mu), dot(mu, w)], -1), np.stack([dot(mu, w), dot(w, w)], -1)], -2)
        coef = np.linalg.solve(gram, np.stack([dot(t, mu), dot(t, w)], -1)[..., None])[..., 0]  # (T, 2)
        resid = t - coef[None, :, 0, None] * mu - coef[None, :, 1, None] * w
        variance = np.einsum("unk,unk->n", resid, resid) / (len(taste) * L)
        self.estimate_coef = np.concatenate([[[0.0, 0.0]], coef])  # row n: history length n
        self.estimate_variance = np.concatenate([[self.scale**2], variance])

    def estimate(self, sum_mu, sum_w, lengths):
        """Mean (n, L) and variance (n,) of the taste given histories (their sums, lengths)."""
        a, b = self.estimate_coef[lengths, 0], self.estimate_coef[lengths, 1]
        return a[:, None] * sum_mu + b[:, None] * sum_w, self.estimate_variance[lengths]

    def expected(self, mean, variance, items, pos):
        """(E[pCTR], E[pCTR pCVR]) over the taste t ~ N(mean, variance I)."""
        v = self.v[items].astype(np.float64)
        mu = np.einsum("ij,ij->i", mean, v)
        sd = np.sqrt(variance * np.einsum("ij,ij->i", v, v))
        nodes, weights = _GAUSS_HERMITE
        z = mu[:, None] + math.sqrt(2.0) * sd[:, None] * nodes[None, :]
        ctr = _sigmoid(self.ctr_logit(z, items[:, None], pos[:, None]))
        cvr = _sigmoid(self.cvr_logit(z, items[:, None]))
        w = weights / math.sqrt(math.pi)
        return ctr @ w, (ctr * cvr) @ w


def _lists(offsets, values):
    return pa.ListArray.from_arrays(offsets, pa.array(values.astype(np.int64)))


def _impressions(world, state, day_index, part, chunk, n, first_row):
    tastes, histories, lengths, sum_mu, sum_w = state
    rng = np.random.default_rng([world.seed, 25, day_index, part, chunk])
    T = world.k["max_len"]
    users = rng.integers(0, world.k["num_users"], n)
    items = world.draw_items(rng, n)
    pos = world.draw_positions(rng, n)
    dot = np.einsum("ij,ij->i", tastes[users], world.v[items]).astype(np.float64)
    p_ctr = _sigmoid(world.ctr_logit(dot, items, pos))
    p_cvr = _sigmoid(world.cvr_logit(dot, items))
    click = rng.random(n) < p_ctr
    conversion = click & (rng.random(n) < p_cvr)

    n_hist = lengths[users]
    mean, variance = world.estimate(sum_mu[users], sum_w[users], n_hist)
    hist_ctr, hist_ctcvr = world.expected(mean, variance, items, pos)
    prior_ctr, prior_ctcvr = world.expected(np.zeros_like(mean), np.full(n, world.scale**2), items, pos)

    keep = np.arange(T)[None, :] >= (T - n_hist)[:, None]  # the row's last n_hist columns
    hist_items = histories[users][keep]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(n_hist, out=offsets[1:])
    offsets = pa.array(offsets)

    def f32(x):
        return pa.array(np.asarray(x, dtype=np.float32))

    return pa.table({
        "impression_id": pa.array(day_index * ROWS_PER_DAY_ID + first_row + np.arange(n, dtype=np.int64)),
        "user_id": pa.array(users.astype(np.int64)),
        "item_id": pa.array(items.astype(np.int64)),
        "item_category": pa.array(world.item_category[items].astype(np.int64)),
        "position": pa.array(pos.astype(np.int64)),
        "price": pa.array(world.price[items]),
        "hist_item_id": _lists(offsets, hist_items),
        "hist_category": _lists(offsets, world.item_category[hist_items]),
        "click": pa.array(click.astype(np.int64)),
        "conversion": pa.array(conversion.astype(np.int64)),
        "true_ctr": f32(p_ctr),
        "true_cvr": f32(p_cvr),
        "history_ctr": f32(hist_ctr),
        "history_ctcvr": f32(hist_ctcvr),
        "prior_ctr": f32(prior_ctr),
        "prior_ctcvr": f32(prior_ctcvr),
    })


def generate_taste_days(root, start_day, num_days, rows_per_day, seed=0, fmt="parquet", **knobs):
    """Write `num_days` day partitions of the taste world under `root` (Hive layout).

    Day i is `root/dt=<start_day + i>/part-NNNNN.parquet` (`files_per_day` files, each
    written `row_group_size` rows at a time). Existing data files of those days are
    replaced. The output depends only on (seed, knobs, day index, rows_per_day); memory
    grows with `num_users * max_len` (the day's histories) and `row_group_size`, not with
    the rows. Parquet only (`mtlrec convert` makes TFRecord). Knobs: see `KNOBS`.
    Returns the list of days.
    """
    if fmt != "parquet":
        raise ValueError(f"The taste world writes parquet (`mtlrec convert` makes TFRecord). Received: fmt={fmt!r}")
    require_local(root, "root")
    start = parse_day(start_day, "start_day")
    for name, v in (("num_days", num_days), ("rows_per_day", rows_per_day)):
        check_positive_int(name, v)
    world = TasteWorld(seed, **knobs)
    k = world.k
    tastes = world.tastes(0, k["num_users"])
    days = []
    for d, (histories, lengths) in enumerate(world.histories(num_days)):
        day = (start + datetime.timedelta(days=d)).isoformat()
        days.append(day)
        state = (tastes, histories, lengths, *world.history_sums(histories, lengths))
        out = day_dir(root, day)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):
            if name.startswith("part-"):
                os.remove(os.path.join(out, name))
        bounds = np.linspace(0, rows_per_day, k["files_per_day"] + 1).astype(np.int64)
        for part in range(k["files_per_day"]):
            _write_part(world, state, d, part, int(bounds[part]), int(bounds[part + 1]), out)
    return days


def _write_part(world, state, day_index, part, lo, hi, out):
    k = world.k
    path = os.path.join(out, f"part-{part:05d}.parquet")
    tmp = os.path.join(out, f".part-{part:05d}.parquet.tmp")
    writer = None
    try:
        for chunk, first in enumerate(range(lo, hi, k["row_group_size"])):
            n = min(k["row_group_size"], hi - first)
            table = _impressions(world, state, day_index, part, chunk, n, first)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression=k["compression"] or "snappy")
            writer.write_table(table, row_group_size=k["row_group_size"])
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(tmp, path)
