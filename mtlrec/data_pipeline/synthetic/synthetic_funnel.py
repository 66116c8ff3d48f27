"""Synthetic e-commerce funnel (impression -> click -> conversion) with known ground truth.

World (fixed by `seed`): users with a latent vector u, age bucket, gender and
purchasing power 1..7; items with a latent vector v (near their category's),
category, brand, shop, price and a popularity that drifts day to day; new item
ids are released on later days.

Per impression (user, item, scene, hour, position):

    pCTR = sigmoid(signal * u.v + pop_i(day) + pos_effect(position) + scene_effect(scene) + b_ctr)
    pCVR = sigmoid(signal * u'.v' - price_sensitivity * (log price - budget(pp)) + b_cvr)
    u' = r u + sqrt(1 - r^2) u~,  v' = r v + sqrt(1 - r^2) v~   (r = `relatedness`)
    click ~ Bernoulli(pCTR); conversion = click AND Bernoulli(pCVR)
    follow ~ Bernoulli(sigmoid(signal * u.s_shop + b_follow))

With r = 1 the CTR and CVR share their user-item term; with r = 0 it is independent.
The biases are solved so that mean pCTR ~ `base_ctr` and mean pCVR ~ `base_cvr`.
`true_ctr` and `true_cvr` (pCVR for every row, conditional on a click) are written
for evaluation and are not features.

Each row carries the user's recent behaviors (most recent last, up to `max_len`):
items drawn from the user's taste (Gumbel top-k over u.v), their category, the
behavior type (0 click, 1 cart, 2 favorite, 3 buy), a time-since bucket
(0 = most recent) and the scene (0 search, 1 recommend: ids, like the other behavior
properties; the row's own `scene` is a string feature).
"""

import datetime
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mtlrec.conventions.arg_checks import check_positive_int
from mtlrec.data_pipeline.filesystems import require_local
from mtlrec.data_pipeline.partitions import check_fmt, day_dir, parse_day

KNOBS = {
    "num_users": 10000,
    "num_items": 5000,  # all item ids ever, including those released on later days
    "num_categories": 50,
    "num_brands": 500,
    "num_shops": 300,
    "latent_dim": 8,
    "max_len": 20,
    "relatedness": 0.5,
    "base_ctr": 0.08,
    "base_cvr": 0.15,
    "base_follow": 0.05,
    "signal": 2.0,
    "popularity_drift": 0.3,  # std of the daily random-walk step of item popularity
    "initial_items": 0.8,  # fraction of items live on the first day
    "new_items_per_day": 0.02,  # fraction of num_items released each later day
    "retired_items_per_day": 0.0,  # fraction of num_items (oldest first) that stop appearing each later day
    "initial_users": 1.0,  # fraction of users active on the first day
    "new_users_per_day": 0.0,  # fraction of num_users who arrive each later day
    "files_per_day": 1,
    "row_group_size": 65536,
    "compression": None,  # parquet codec (default snappy) / "GZIP" for tfrecord
    "dim": 16,  # schema only: embedding dim of categorical features
    "property_dim": 8,  # schema only: dim of behavior-property sequence tables
}
SCENES = np.array(["search", "recommend"], dtype=object)
GENDERS = np.array(["female", "male", "unknown"], dtype=object)
BEHAVIORS = 4  # click, cart, favorite, buy
TIME_BUCKETS = 10
NUM_HOURS = 24
NUM_POSITIONS = 50
USER_ID_OFFSET = 1_000_000
ITEM_ID_OFFSET = 5_000_000
ROWS_PER_DAY_ID = 10**10  # impression_id = day_index * ROWS_PER_DAY_ID + row


def _knobs(knobs):
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"Unknown synthetic funnel knobs {unknown}; expected some of {sorted(KNOBS)}. Received: {knobs}")
    k = dict(KNOBS, **knobs)
    for name in ("num_users", "num_items", "num_categories", "num_brands", "num_shops", "latent_dim", "max_len",
                 "files_per_day", "row_group_size", "dim", "property_dim"):
        check_positive_int(name, k[name])
    fractions = ("relatedness", "initial_items", "new_items_per_day", "retired_items_per_day",
                 "initial_users", "new_users_per_day")
    for name in fractions + ("base_ctr", "base_cvr", "base_follow"):
        if isinstance(k[name], bool) or not isinstance(k[name], (int, float, np.integer, np.floating)):
            raise ValueError(f"Expected {name} to be a number. Received: {name}={k[name]!r}")
    for name in fractions:
        if not 0.0 <= k[name] <= 1.0:
            raise ValueError(f"Expected {name} in [0, 1]. Received: {name}={k[name]!r}")
    for name in ("base_ctr", "base_cvr", "base_follow"):
        if not 0.0 < k[name] < 1.0:
            raise ValueError(f"Expected {name} in (0, 1). Received: {name}={k[name]!r}")
    return k


def funnel_schema_dict(**sizes):
    """Schema dict of the columns `generate_funnel` writes (same knobs; sizes set the tables).

    `item_hist_ctr` is standardized with prior statistics (mean `base_ctr`); recompute them
    from training data with `mtlrec.schema.compute_numeric_stats` when it matters.
    """
    k = _knobs(sizes)
    dim, pdim = k["dim"], k["property_dim"]

    def cat(name, buckets, dtype="int64"):
        return {"name": name, "dtype": dtype, "num_buckets": int(buckets), "dim": dim}

    return {
        "key": "impression_id",
        "categorical": [
            cat("user_id", 2 * k["num_users"]),
            cat("user_age", 16),
            cat("user_gender", 8, "string"),
            cat("item_id", 2 * k["num_items"]),
            cat("item_category", 2 * k["num_categories"]),
            cat("item_brand", 2 * k["num_brands"]),
            cat("item_shop", 2 * k["num_shops"]),
            cat("scene", 8, "string"),
            cat("hour", 2 * NUM_HOURS),
            cat("position", 2 * NUM_POSITIONS),
        ],
        "numeric": [
            {"name": "price", "normalize": "log1p", "default": 0.0},
            {"name": "item_hist_ctr", "normalize": "standardize", "mean": k["base_ctr"],
             "std": round(max(0.8 * k["base_ctr"], 0.01), 6), "default": k["base_ctr"]},
        ],
        "sequence": [
            {"name": "hist_item_id", "dtype": "int64", "max_len": k["max_len"], "shared_with": "item_id"},
            {"name": "hist_category", "dtype": "int64", "max_len": k["max_len"], "shared_with": "item_category"},
            {"name": "hist_behavior", "dtype": "int64", "max_len": k["max_len"], "num_buckets": 8, "dim": pdim},
            {"name": "hist_time_bucket", "dtype": "int64", "max_len": k["max_len"], "num_buckets": 2 * TIME_BUCKETS, "dim": pdim},
            {"name": "hist_scene", "dtype": "int64", "max_len": k["max_len"], "num_buckets": 8, "dim": pdim},
        ],
        "labels": [
            {"name": "click", "kind": "binary"},
            {"name": "conversion", "kind": "binary"},
            {"name": "purchasing_power", "kind": "multiclass", "num_classes": 7},
            {"name": "follow", "kind": "binary"},
        ],
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _solve_bias(logits, target, iters=30):
    """b with mean(sigmoid(logits + b)) = target (Newton on a sample)."""
    b = math.log(target / (1 - target))
    for _ in range(iters):
        p = _sigmoid(logits + b)
        grad = p.mean() - target
        b -= grad / max((p * (1 - p)).mean(), 1e-6)
    return float(b)


class _World:
    """Users, items and the true CTR/CVR functions (internal)."""

    def __init__(self, seed, k):
        self.k = k
        rng = np.random.default_rng([seed, 0])
        U, I, L = k["num_users"], k["num_items"], k["latent_dim"]
        scale = L ** -0.25  # u.v ~ unit variance
        r = k["relatedness"]
        self.user_age = rng.integers(0, 7, U)
        self.user_gender = rng.integers(0, 3, U)
        self.u = rng.normal(0, scale, (U, L))
        self.u_cvr = r * self.u + math.sqrt(1 - r * r) * rng.normal(0, scale, (U, L))
        pp_score = self.u @ rng.normal(0, 1, L) * scale + 0.3 * (self.user_age - 3) / 2 + rng.normal(0, 0.5, U)
        edges = np.quantile(pp_score, np.linspace(0, 1, 8)[1:-1])
        self.pp = np.searchsorted(edges, pp_score) + 1  # 1..7

        C = k["num_categories"]
        cat_latent = rng.normal(0, scale, (C, L))
        self.item_category = rng.integers(0, C, I)
        self.v = 0.7 * cat_latent[self.item_category] + 0.7 * rng.normal(0, scale, (I, L))
        self.v_cvr = r * self.v + math.sqrt(1 - r * r) * rng.normal(0, scale, (I, L))
        self.item_brand = (self.item_category * 7919 + rng.integers(0, k["num_brands"], I)) % k["num_brands"]
        self.item_shop = rng.integers(0, k["num_shops"], I)
        self.shop_latent = rng.normal(0, scale, (k["num_shops"], L))
        cat_log_price = rng.uniform(2.0, 6.0, C)
        self.log_price = cat_log_price[self.item_category] + rng.normal(0, 0.5, I)
        self.price = np.round(np.exp(self.log_price), 2)
        self.budget = self.log_price.mean() + 0.35 * (self.pp - 4)
        self.pop0 = rng.normal(0, 1, I)
        self.item_quality = rng.normal(0, 0.1, I)  # noise of the historical CTR estimate
        self.pos_effect = -0.6 * np.log1p(np.arange(NUM_POSITIONS))
        self.scene_effect = np.array([0.3, -0.2])
        self.hour_weights = 1.0 + 0.6 * np.sin((np.arange(NUM_HOURS) - 8) / 24 * 2 * np.pi)
        self.hour_weights /= self.hour_weights.sum()

        # biases from a sample of random impressions
        n = 20000
        us = rng.integers(0, U, n)
        w = np.exp(self.pop0 - self.pop0.max())
        its = np.minimum(np.searchsorted(np.cumsum(w), rng.random(n) * w.sum()), I - 1)
        pos, sc = self._positions(rng, n), rng.integers(0, 2, n)
        self.b_ctr = _solve_bias(self._ctr_logit(us, its, self.pop0[its], pos, sc), k["base_ctr"])
        self.b_cvr = _solve_bias(self._cvr_logit(us, its), k["base_cvr"])
        self.b_follow = _solve_bias(self._follow_logit(us, its), k["base_follow"])

    @staticmethod
    def _positions(rng, n):
        return np.minimum(rng.geometric(0.15, n) - 1, NUM_POSITIONS - 1)

    def _ctr_logit(self, us, its, pop, pos, scene):
        dot = np.einsum("ij,ij->i", self.u[us], self.v[its])
        return self.k["signal"] * dot + pop + self.pos_effect[pos] + self.scene_effect[scene]

    def _cvr_logit(self, us, its):
        dot = np.einsum("ij,ij->i", self.u_cvr[us], self.v_cvr[its])
        return self.k["signal"] * dot - 0.5 * (self.log_price[its] - self.budget[us])

    def _follow_logit(self, us, its):
        dot = np.einsum("ij,ij->i", self.u[us], self.shop_latent[self.item_shop[its]])
        return self.k["signal"] * dot

    def live_items(self, day_index):
        I = self.k["num_items"]
        first = max(1, int(round(self.k["initial_items"] * I)))
        return min(I, first + day_index * int(round(self.k["new_items_per_day"] * I)))

    def retired_items(self, day_index):
        """Items [0, retired) no longer appear on the day (impressions or histories)."""
        I = self.k["num_items"]
        return min(self.live_items(day_index) - 1, day_index * int(round(self.k["retired_items_per_day"] * I)))

    def active_users(self, day_index):
        U = self.k["num_users"]
        first = max(1, int(round(self.k["initial_users"] * U)))
        return min(U, first + day_index * int(round(self.k["new_users_per_day"] * U)))

    def popularity(self, seed, day_index):
        """Item popularity on a day: pop0 + random walk; new items start a little boosted."""
        pop = self.pop0.copy()
        for d in range(1, day_index + 1):
            pop += self.k["popularity_drift"] * np.random.default_rng([seed, 1, d]).normal(0, 1, len(pop))
        released = self.release_day()
        pop += np.where(released == day_index, 0.5, 0.0) * (day_index > 0)
        return pop

    def release_day(self):
        I = self.k["num_items"]
        first = self.live_items(0)
        per_day = max(int(round(self.k["new_items_per_day"] * I)), 1)
        idx = np.arange(I)
        return np.where(idx < first, 0, (idx - first) // per_day + 1)

    def user_pools(self, rng, live, pool_size, retired=0):
        """(U, pool_size) items each user interacted with: Gumbel top-k over signal*u.v
        among 2*pool_size random candidates of the live items [retired, live) (users in
        chunks: bounded memory)."""
        U = self.k["num_users"]
        cand = rng.integers(retired, live, (U, pool_size * 2))
        gumbel = rng.gumbel(size=cand.shape).astype(np.float32)
        u, v = self.u.astype(np.float32), self.v.astype(np.float32)
        pools = np.empty((U, pool_size), dtype=np.int64)
        for lo in range(0, U, 4096):
            c = cand[lo:lo + 4096]
            scores = self.k["signal"] * np.einsum("ucl,ul->uc", v[c], u[lo:lo + 4096]) + gumbel[lo:lo + 4096]
            top = np.argpartition(-scores, pool_size - 1, axis=1)[:, :pool_size]
            pools[lo:lo + 4096] = np.take_along_axis(c, top, axis=1)
        return pools


def _strings(codes, names):
    """Arrow string array of names[codes] without building Python strings per row."""
    dictionary = pa.array(names.tolist(), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary).dictionary_decode()


def _impressions(world, seed, day_index, part, n, pop, pools, first_row):
    k = world.k
    rng = np.random.default_rng([seed, 2, day_index, part])
    U, T = k["num_users"], k["max_len"]
    live, retired = world.live_items(day_index), world.retired_items(day_index)
    us = rng.integers(0, world.active_users(day_index), n)
    weights = np.exp(pop[retired:live] - pop[retired:live].max())
    cdf = np.cumsum(weights)
    its = retired + np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), live - retired - 1)
    scene = (rng.random(n) < 0.6).astype(np.int64)  # 0 search, 1 recommend
    hour = rng.choice(NUM_HOURS, n, p=world.hour_weights)
    pos = world._positions(rng, n)

    p_ctr = _sigmoid(world._ctr_logit(us, its, pop[its], pos, scene) + world.b_ctr)
    p_cvr = _sigmoid(world._cvr_logit(us, its) + world.b_cvr)
    p_follow = _sigmoid(world._follow_logit(us, its) + world.b_follow)
    click = rng.random(n) < p_ctr
    conversion = click & (rng.random(n) < p_cvr)
    follow = rng.random(n) < p_follow
    hist_ctr = _sigmoid(pop[its] + world.b_ctr + world.item_quality[its])
    hist_ctr = np.clip(hist_ctr, 0.0, 1.0)

    # behavior sequences, oldest first, generated flat (one entry per kept step)
    length = rng.integers(0, T + 1, n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    row = np.repeat(np.arange(n), length)
    hist_items = pools[us[row], rng.integers(0, pools.shape[1], total)]
    behavior = np.searchsorted(np.cumsum([0.6, 0.15, 0.15, 0.1]), rng.random(total))
    # time since each step = sum of the gaps of the newer steps of its row -> log2 buckets
    cum = np.cumsum(rng.exponential(8.0, total))
    row_end = np.repeat(cum[np.maximum(offsets[1:] - 1, 0)], length)
    time_bucket = np.minimum(np.log2(1.0 + row_end - cum).astype(np.int64), TIME_BUCKETS - 1)
    hist_scene = (rng.random(total) < 0.6).astype(np.int64)  # 0 search, 1 recommend
    offsets = pa.array(offsets.astype(np.int32))

    cols = {
        "impression_id": pa.array(day_index * ROWS_PER_DAY_ID + first_row + np.arange(n, dtype=np.int64)),
        "user_id": pa.array(USER_ID_OFFSET + us),
        "user_age": pa.array(world.user_age[us]),
        "user_gender": _strings(world.user_gender[us], GENDERS),
        "item_id": pa.array(ITEM_ID_OFFSET + its),
        "item_category": pa.array(world.item_category[its]),
        "item_brand": pa.array(world.item_brand[its]),
        "item_shop": pa.array(world.item_shop[its]),
        "scene": _strings(scene, SCENES),
        "hour": pa.array(hour.astype(np.int64)),
        "position": pa.array(pos.astype(np.int64)),
        "price": pa.array(world.price[its].astype(np.float32)),
        "item_hist_ctr": pa.array(hist_ctr.astype(np.float32)),
        "hist_item_id": pa.ListArray.from_arrays(offsets, pa.array(ITEM_ID_OFFSET + hist_items)),
        "hist_category": pa.ListArray.from_arrays(offsets, pa.array(world.item_category[hist_items])),
        "hist_behavior": pa.ListArray.from_arrays(offsets, pa.array(behavior.astype(np.int64))),
        "hist_time_bucket": pa.ListArray.from_arrays(offsets, pa.array(time_bucket)),
        "hist_scene": pa.ListArray.from_arrays(offsets, pa.array(hist_scene)),
        "click": pa.array(click.astype(np.int64)),
        "conversion": pa.array(conversion.astype(np.int64)),
        "purchasing_power": pa.array((world.pp[us] - 1).astype(np.int64)),
        "follow": pa.array(follow.astype(np.int64)),
        "true_ctr": pa.array(p_ctr.astype(np.float32)),
        "true_cvr": pa.array(p_cvr.astype(np.float32)),
    }
    return pa.table(cols)


def generate_funnel(root, start_day, num_days, rows_per_day, seed=0, fmt="parquet", **knobs):
    """Write `num_days` day partitions of synthetic impressions under `root` (Hive layout).

    Day i (0-based from `start_day`) is `root/dt=<start_day + i>/part-NNNNN.<parquet|tfrecord[.gz]>`,
    `files_per_day` files. Existing data files of those days are replaced. The output depends
    only on (seed, knobs, day index, rows_per_day). Knobs: see `KNOBS`. Returns the list of days.
    """
    check_fmt(fmt)
    require_local(root, "root")
    k = _knobs(knobs)
    start = parse_day(start_day, "start_day")
    for name, v in (("num_days", num_days), ("rows_per_day", rows_per_day)):
        check_positive_int(name, v)
    world = _World(seed, k)
    pool_size = max(2 * k["max_len"], 8)
    days = []
    for d in range(num_days):
        day = (start + datetime.timedelta(days=d)).isoformat()
        days.append(day)
        pop = world.popularity(seed, d)
        pools = world.user_pools(
            np.random.default_rng([seed, 3, d]), world.live_items(d), pool_size, world.retired_items(d)
        )
        out = day_dir(root, day)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):
            if name.startswith("part-"):
                os.remove(os.path.join(out, name))
        files = k["files_per_day"]
        bounds = np.linspace(0, rows_per_day, files + 1).astype(np.int64)
        for part in range(files):
            n = int(bounds[part + 1] - bounds[part])
            table = _impressions(world, seed, d, part, n, pop, pools, int(bounds[part]))
            _write(table, out, part, fmt, k)
    return days


def _write(table, out, part, fmt, k):
    if fmt == "parquet":
        path = os.path.join(out, f"part-{part:05d}.parquet")
        tmp = os.path.join(out, f".part-{part:05d}.parquet.tmp")
        pq.write_table(table, tmp, row_group_size=k["row_group_size"], compression=k["compression"] or "snappy")
        os.replace(tmp, path)
    else:
        from mtlrec.data_pipeline.tfrecord_io import write_tfrecord  # imports TensorFlow

        gz = (k["compression"] or "").upper() == "GZIP"
        write_tfrecord(os.path.join(out, f"part-{part:05d}.tfrecord" + (".gz" if gz else "")), table,
                       compression="GZIP" if gz else "")
