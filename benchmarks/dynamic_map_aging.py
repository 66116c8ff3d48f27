"""How long a `lookup: dynamic` map's counts should live: `count_half_life_days` on two
synthetic catalogues (the map alone, no model).

- `churn`: each item is born on some day, is looked up with its (log-normal) weight for
  `--life` days on average (geometric, at least 1), then never again; new items arrive
  at a steady rate, about `--active` live on a day, more than the `--capacity` rows.
- `weekly`: the same, but items never retire, and `--weekend-share` of them are looked
  up only on the 2 weekend days of each week (with a weight scaled by 7/2, so their
  weekly lookups match an everyday item of the same weight).

Each day opens the map (`start_day`), then its `--lookups` lookups arrive in batches of
`--batch` in random order (`observe`, traced as in the training step). Reported over
the days after `--warmup`: the share of lookups that read the id's own row (hit rate)
and the rows freed by eviction per day (each one re-initialises a learned embedding);
and the rows held on the last day by ids unseen for 7 days (stale rows). `none` is a
half-life longer than the run (counts never age).

    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/dynamic_map_aging.py --catalogue churn
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. .venv/bin/python benchmarks/dynamic_map_aging.py --catalogue weekly
"""

import argparse
import os

import numpy as np


def stream(days, active, life, lookups, seed, weekend_share=0.0):
    """[(day, ids in arrival order)] of a catalogue; `life` None: items never retire."""
    gen = np.random.default_rng(seed)
    first, last, weight, weekend = [], [], [], []

    def born(n, day):
        for _ in range(n):
            first.append(day - (gen.integers(0, life) if life and day == 0 else 0))
            last.append(first[-1] + max(1, gen.geometric(1.0 / life)) - 1 if life else days)
            weekend.append(gen.random() < weekend_share)
            weight.append(gen.lognormal(0.0, 1.5) * (3.5 if weekend[-1] else 1.0))

    born(active, 0) if not life else None
    out = []
    for day in range(days):
        if life:
            born(gen.poisson(active if day == 0 else active / life), day)
        ids = np.arange(len(first))
        live = (np.asarray(first) <= day) & (np.asarray(last) >= day)
        if day % 7 not in (5, 6):
            live &= ~np.asarray(weekend)
        live = ids[live]
        p = np.asarray(weight)[live]
        out.append((day, gen.choice(live, size=lookups, p=p / p.sum())))
    return out


def run(days_ids, capacity, half_life, batch, warmup, stale_after=7):
    import tensorflow as tf

    from mtlrec.layers.embedding.dynamic_id_map import DynamicIdMap

    id_map = DynamicIdMap(key_dtype="int64", capacity=capacity, oov_buckets=1, count_half_life_days=half_life)
    id_map.build()
    observe = tf.function(id_map.observe)
    hits = looked = evicted = 0
    for day, ids in days_ids:
        id_map.start_day(day + 1)  # day numbers from 1
        if day >= warmup:
            evicted += id_map.report()["evicted"]
        for i in range(0, len(ids), batch):
            chunk = tf.constant(ids[i : i + batch], tf.int64)
            if day >= warmup:
                hits += int(tf.reduce_sum(tf.cast(id_map.rows(chunk) < capacity, tf.int64)))
                looked += int(chunk.shape[0])
            observe(chunk)
    keys, values = (t.numpy() for t in id_map.table.export())
    final_day = days_ids[-1][0] + 1
    stale = int(np.sum((values[:, 0] >= 0) & (values[:, 2] < final_day - stale_after)))
    return hits / looked, evicted / (len(days_ids) - warmup), stale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", choices=("churn", "weekly"), default="churn")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--active", type=int, default=2000, help="live items on a day, about")
    parser.add_argument("--life", type=int, default=10, help="churn: days an item is live, on average")
    parser.add_argument("--weekend-share", type=float, default=0.3, help="weekly: items seen on weekends only")
    parser.add_argument("--capacity", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=20000, help="lookups a day")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--half-lives", default="1,3,7,14,30,none")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    half_lives = [None if h == "none" else int(h) for h in args.half_lives.split(",")]
    churn = args.catalogue == "churn"
    streams = [
        stream(args.days, args.active, args.life if churn else None, args.lookups, seed,
               0.0 if churn else args.weekend_share)
        for seed in range(args.seeds)
    ]
    what = (f"~{args.active} live items of {args.life} days on average" if churn
            else f"{args.active} items, {args.weekend_share:.0%} of them seen on weekends only")
    print(f"{args.catalogue}: {args.days} days ({args.warmup} warm-up), {what}, capacity {args.capacity}, "
          f"{args.lookups:,} lookups a day, {args.seeds} seeds")
    print("| count_half_life_days | hit rate (own row), per seed | mean | rows evicted a day, mean | stale rows on the last day |")
    print("|---:|---|---:|---:|---|")
    for half_life in half_lives:
        results = [run(s, args.capacity, half_life or 10**6, args.batch, args.warmup) for s in streams]
        rates = [r[0] for r in results]
        print(f"| {half_life or 'none'} | {' '.join(f'{r:.4f}' for r in rates)} | {np.mean(rates):.4f} "
              f"| {np.mean([r[1] for r in results]):.1f} | {' '.join(str(r[2]) for r in results)} |", flush=True)


if __name__ == "__main__":
    main()
