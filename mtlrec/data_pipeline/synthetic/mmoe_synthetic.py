"""Synthetic two-task regression data with controlled task correlation (MMoE, Ma et al. KDD 2018, §3.2).

    u1, u2: orthogonal unit vectors in R^d;  w1 = c u1,  w2 = c (p u1 + sqrt(1 - p^2) u2)
    x ~ N(0, I_d)
    y_i = w_i^T x + sum_{j=1..m} sin(alpha_j w_i^T x + beta_j) + eps_i,  eps_i ~ N(0, noise_std^2)

alpha_j, beta_j ~ N(0, 1) are shared by both tasks; p is the cosine between w1 and w2,
so the Pearson correlation of the labels grows with p (not equal to p: the sin terms).
"""

import numpy as np

from mtlrec.conventions.arg_checks import check_positive_int


def mmoe_synthetic(n, p, dim=100, seed=0, *, c=1.0, num_sin=10, noise_std=0.1):
    """Return `(x, y1, y2)`: x (n, dim) float32, y1 and y2 (n,) float32."""
    check_positive_int("n", n)
    check_positive_int("dim", dim, minimum=2)
    if not -1.0 <= p <= 1.0:
        raise ValueError(f"Expected p (task correlation) in [-1, 1]. Received: p={p!r}")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, 2)))  # two orthonormal columns
    u1, u2 = q[:, 0], q[:, 1]
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(1.0 - p * p) * u2)
    alpha = rng.normal(size=num_sin)
    beta = rng.normal(size=num_sin)
    x = rng.normal(size=(n, dim))

    def label(w):
        z = x @ w
        return z + np.sin(np.outer(z, alpha) + beta).sum(axis=1) + rng.normal(0.0, noise_std, n)

    y1, y2 = label(w1), label(w2)
    return x.astype(np.float32), y1.astype(np.float32), y2.astype(np.float32)
