"""What the funnel's scoring day can be ranked by, from parts of its true formula.

The upper bounds behind `docs/results/quality.md`, "What this day allows: upper
bounds": on the evaluation day of `quality_vs_peers.py` (same generator,
knobs and data seed), the CTR, entire-space CVR and CTCVR AUCs of scores built from
pieces of the generator's own logits (`mtlrec.data_pipeline.synthetic.synthetic_funnel`):

    pCTR logit = signal u.v + popularity + position + scene + b
    pCVR logit = signal u'.v' - 0.5 (log price - budget(purchasing power)) + b

A model that learns no user-item product can at best reach the "no u.v" rows (with the
training day's popularity: the scoring day's drifts); the rows with `c signal u.v` show
what knowing the CTR product would add. No model is trained.

    PYTHONPATH=. .venv/bin/python benchmarks/funnel_bounds.py
"""

import argparse
import glob
import os
import tempfile

import numpy as np
import pyarrow.parquet as pq

from mtlrec.data_pipeline import generate_funnel
from mtlrec.data_pipeline.synthetic.synthetic_funnel import ITEM_ID_OFFSET, SCENES, USER_ID_OFFSET, _knobs, _World
from mtlrec.metrics import auc, truth_auc


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--num-users", type=int, default=20_000)
    ap.add_argument("--num-items", type=int, default=10_000)
    ap.add_argument("--data-seed", type=int, default=7)
    ap.add_argument("--dim", type=int, default=8)
    args = ap.parse_args()
    knobs = dict(num_users=args.num_users, num_items=args.num_items, max_len=1, dim=args.dim)
    with tempfile.TemporaryDirectory() as root:
        generate_funnel(root, "2024-01-01", 2, args.rows, seed=args.data_seed, **knobs)
        day = pq.read_table(sorted(glob.glob(os.path.join(root, "dt=2024-01-02", "*.parquet")))).to_pandas()
    world = _World(args.data_seed, _knobs(knobs))
    users, items = day.user_id.values - USER_ID_OFFSET, day.item_id.values - ITEM_ID_OFFSET
    scene = day.scene.map({name: i for i, name in enumerate(SCENES)}).values
    signal = world.k["signal"]
    uv = np.einsum("ij,ij->i", world.u[users], world.v[items])
    click, ctcvr, true_cvr = day.click.values, day.click.values * day.conversion.values, day.true_cvr.values

    no_uv_ctr = world.popularity(args.data_seed, 0)[items] + world.pos_effect[day.position.values]
    no_uv_ctr = no_uv_ctr + world.scene_effect[scene] + world.b_ctr
    price_cvr = -0.5 * world.log_price[items] + world.b_cvr
    budget = 0.5 * world.budget[users]
    rows = [
        ("true pCTR / pCVR (oracle)", day.true_ctr.values, true_cvr, day.true_ctr.values * true_cvr),
        ("no u.v: training day's popularity, position, scene / price", no_uv_ctr, price_cvr,
         sigmoid(no_uv_ctr) * sigmoid(price_cvr)),
        ("no u.v, plus the user's true budget in pCVR", no_uv_ctr, price_cvr + budget,
         sigmoid(no_uv_ctr) * sigmoid(price_cvr + budget)),
    ]
    for c in (0.1, 0.25, 0.5):
        ctr, cvr = no_uv_ctr + c * signal * uv, price_cvr + c * signal * uv
        rows.append((f"no u.v, plus {c} signal u.v in both logits", ctr, cvr, sigmoid(ctr) * sigmoid(cvr)))
    print("| score | CTR AUC | CVR AUC (all, vs true pCVR) | CTCVR AUC |")
    print("|---|---:|---:|---:|")
    for name, ctr, cvr, joint in rows:
        print(f"| {name} | {auc(click, ctr):.4f} | {truth_auc(cvr, true_cvr):.4f} | {auc(ctcvr, joint):.4f} |")


if __name__ == "__main__":
    main()
