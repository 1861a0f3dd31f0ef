"""Classical baselines (linear, linear SVR, RBF SVR, random forest): they
learn what they should, choose hyper-parameters on validation data only,
fuse early or late, and their saved state (plain tensors, loadable with
weights_only=True) predicts exactly what the fitted scikit-learn model does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aanbench_plugins.models import classical as cl


def _data(n=400, seed=0, nonlinear=False):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 5)), rng.normal(size=(n, 3))
    y = 0.8 * a[:, 0] - 0.5 * b[:, 1] + 0.05 * rng.normal(size=n)
    if nonlinear:
        y = np.sin(2 * a[:, 0]) + 0.5 * b[:, 1] ** 2 + 0.05 * rng.normal(size=n)
    return [a.astype(np.float32), b.astype(np.float32)], y.astype(np.float32)


def _split(xs, y, k):
    return [x[:k] for x in xs], y[:k], [x[k:] for x in xs], y[k:]


def _mse(p, y):
    return float(np.mean((p - y) ** 2))


@pytest.mark.parametrize("name", list(cl.SPECS))
def test_learns_and_round_trips_through_a_weights_only_file(tmp_path, name):
    xs, y = _data(nonlinear=name in ("svr-rbf", "random-forest"))
    test_x, test_y = [x[320:] for x in xs], y[320:]
    tx, ty, vx, vy = _split([x[:320] for x in xs], y[:320], 250)
    m = cl.ClassicalModel(name, {}, [5, 3])
    m.fit(tx, ty, vx, vy, seed=0)
    pred = m.predict(test_x)
    assert pred.shape == test_y.shape and pred.dtype == np.float32
    assert _mse(pred, test_y) < 0.5 * float(np.var(test_y)), f"{name} did not learn"
    torch.save(m.state(), tmp_path / "m.pt")
    back = cl._restore(torch.load(tmp_path / "m.pt", weights_only=True))
    np.testing.assert_allclose(back.predict(test_x), pred, rtol=1e-6, atol=1e-6)


def test_rbf_beats_linear_on_a_nonlinear_target():
    xs, y = _data(nonlinear=True)
    tx, ty, vx, vy = _split([x[:320] for x in xs], y[:320], 250)
    test_x, test_y = [x[320:] for x in xs], y[320:]
    errs = {}
    for name in ("linear", "svr-rbf"):
        m = cl.ClassicalModel(name, {}, [5, 3])
        m.fit(tx, ty, vx, vy, seed=0)
        errs[name] = _mse(m.predict(test_x), test_y)
    assert errs["svr-rbf"] < 0.6 * errs["linear"], errs


def test_our_kernel_and_tree_predictions_equal_scikit_learn():
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.svm import SVR

    xs, y = _data(nonlinear=True)
    x = np.concatenate(xs, axis=1).astype(np.float64)
    svr = SVR(kernel="rbf", C=3.0, gamma=0.2, epsilon=0.1).fit(x[:300], y[:300])
    part = cl.KernelPart(svr.support_vectors_, svr.dual_coef_[0], float(svr.intercept_[0]), 0.2)
    np.testing.assert_allclose(part.predict(x[300:]), svr.predict(x[300:]), rtol=1e-9, atol=1e-9)
    rf = RandomForestRegressor(n_estimators=7, max_features=0.5, min_samples_leaf=3, random_state=1).fit(x[:300], y[:300])
    np.testing.assert_allclose(cl.ForestPart.from_sklearn(rf).predict(x[300:]), rf.predict(x[300:]),
                               rtol=1e-9, atol=1e-9)


def test_svr_rbf_chooses_on_validation_and_the_choice_depends_on_it():
    xs, y = _data(nonlinear=True)
    tx, ty = [x[:200] for x in xs], y[:200]
    chosen = []
    for vk in (slice(200, 260), slice(260, 400)):
        m = cl.ClassicalModel("svr-rbf", {"Cs": [0.01, 10.0], "gamma_factors": [1.0]}, [5, 3])
        m.fit(tx, ty, [x[vk] for x in xs], y[vk], seed=0)
        chosen.append(m.chosen[0]["C"])
    assert chosen == [10.0, 10.0]  # C = 0.01 underfits badly on either validation set
    m = cl.ClassicalModel("svr-rbf", {"Cs": [0.01, 10.0], "gamma_factors": [1.0]}, [5, 3])
    m.fit(tx, -ty, [x[200:260] for x in xs], np.zeros(60, np.float32), seed=0)  # a flat validation target
    assert m.chosen[0]["C"] == 0.01  # the flattest fit wins: the choice follows the validation data


def test_late_fusion_averages_one_model_per_group():
    xs, y = _data()
    tx, ty, vx, vy = _split(xs, y, 300)
    late = cl.ClassicalModel("linear", {"fusion": "late"}, [5, 3])
    late.fit(tx, ty, vx, vy, seed=0)
    assert late.groups == [[0], [1]] and len(late.parts) == 2
    per = []
    for i in (0, 1):
        one = cl.ClassicalModel("linear", {}, [xs[i].shape[1]])
        one.fit([tx[i]], ty, [vx[i]], vy, seed=0)
        per.append(one.predict([vx[i]]))
    np.testing.assert_allclose(late.predict(vx), np.mean(per, axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="cover each of the 2 features"):
        cl.ClassicalModel("linear", {"fusion": "late", "fusion_groups": [[0]]}, [5, 3])


@pytest.mark.parametrize("name", ["random-forest", "svr-linear"])
def test_same_seed_same_numbers(name):
    xs, y = _data()
    tx, ty, vx, vy = _split(xs, y, 300)
    preds = []
    for _ in range(2):
        m = cl.ClassicalModel(name, {}, [5, 3])
        m.fit(tx, ty, vx, vy, seed=3)
        preds.append(m.predict(vx))
    np.testing.assert_array_equal(preds[0], preds[1])
