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


def test_mmoe_learns_both_tasks_of_the_synthetic_data():
    """MMoE on a small version of the paper's task (known truth: y_i = w_i.x + sin terms),
    standardised targets: every seed fits both tasks far below the variance (MSE 1), and
    every gate still spreads its examples over the experts."""
    import keras

    from mtlrec.models import MMoE

    dim, n, train = 10, 3000, 2000
    schema = {"numeric": [{"name": f"x{i}", "normalize": "none"} for i in range(dim)],
              "labels": [{"name": "y1", "kind": "regression"}, {"name": "y2", "kind": "regression"}]}
    tasks = [{"name": "t1", "label": "y1", "kind": "regression"},
             {"name": "t2", "label": "y2", "kind": "regression"}]
    x, y1, y2 = mmoe_synthetic(n, 0.5, dim=dim, seed=5, num_sin=3)
    y = {k: ((v - v[:train].mean()) / v[:train].std()).astype("float32") for k, v in (("y1", y1), ("y2", y2))}
    features = {f"x{i}": x[:, i] for i in range(dim)}
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = MMoE(schema, tasks, num_experts=4, expert_units=[16], tower_units=[8], seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(0.005))
        model.fit({k: v[:train] for k, v in features.items()}, {k: v[:train] for k, v in y.items()},
                  batch_size=64, epochs=12, verbose=0, shuffle=True)
        pred = model.predict({k: v[train:] for k, v in features.items()}, batch_size=1000, verbose=0)
        for task, label in (("t1", "y1"), ("t2", "y2")):
            mse = float(np.mean((np.ravel(pred[task]) - y[label][train:]) ** 2))
            assert mse < 0.25, (seed, task, mse)
        gates = model.gate_model().predict({k: v[train:] for k, v in features.items()}, verbose=0)
        for w in gates.values():
            assert np.asarray(w).mean(axis=0).max() < 0.9  # no gate has collapsed onto one expert
        keras.backend.clear_session()
