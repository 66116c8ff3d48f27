import numpy as np
import pytest

from mtlrec.data_pipeline import mmoe_synthetic


def test_shapes_and_determinism():
    x, y1, y2 = mmoe_synthetic(500, 0.5, dim=12, seed=3)
    assert x.shape == (500, 12) and y1.shape == (500,) and y2.shape == (500,)
    assert x.dtype == y1.dtype == np.float32
    again = mmoe_synthetic(500, 0.5, dim=12, seed=3)
    for a, b in zip((x, y1, y2), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(y1, mmoe_synthetic(500, 0.5, dim=12, seed=4)[1])


def test_label_correlation_grows_with_p():
    corr = [np.corrcoef(*mmoe_synthetic(20000, p, seed=0)[1:])[0, 1] for p in (0.0, 0.5, 0.9, 1.0)]
    assert all(a < b for a, b in zip(corr, corr[1:])), corr
    assert abs(corr[0]) < 0.1 and corr[-1] > 0.95  # p=1: same function, independent noise only


def test_linear_part_is_the_paper_construction():
    """With no sin terms and no noise, y_i = w_i^T x with |w_i| = c and cos(w1, w2) = p."""
    x, y1, y2 = mmoe_synthetic(400, 0.3, dim=20, seed=1, c=2.0, num_sin=0, noise_std=0.0)
    w1, *_ = np.linalg.lstsq(x.astype(np.float64), y1.astype(np.float64), rcond=None)
    w2, *_ = np.linalg.lstsq(x.astype(np.float64), y2.astype(np.float64), rcond=None)
    assert np.linalg.norm(w1) == pytest.approx(2.0, rel=1e-4) and np.linalg.norm(w2) == pytest.approx(2.0, rel=1e-4)
    assert w1 @ w2 / 4.0 == pytest.approx(0.3, abs=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: p=1.5"):
        mmoe_synthetic(10, 1.5)
    with pytest.raises(ValueError, match="Received: n=0"):
        mmoe_synthetic(0, 0.5)
    with pytest.raises(ValueError, match="Received: dim=1"):
        mmoe_synthetic(10, 0.5, dim=1)
