"""Published classical baselines on aanbench's stored features (see
``../shared/design/REPORTED.md`` for the methods and their sources):

- ``linear``: ordinary least squares on the concatenated standardised
  features (the linear-regression family of Goyal et al. 2016 and
  Malandrakis et al. 2011 on COGNIMUSE); minimum-norm solution when there
  are more features than rows.
- ``svr-linear``: L2-regularised L2-loss linear SVR in the primal, as
  liblinear ``-s 11`` (Yi & Wang 2019 on EIMT16: C = 2^-5 for valence,
  2^-2 for arousal; epsilon 0.1, liblinear's default).
- ``svr-rbf``: RBF-kernel SVR; C and gamma chosen on the validation split
  (carved from training data), then refit on all training data (MediaEval
  2016 runs, e.g. THU-HCSI).
- ``random-forest``: a random forest regressor (RUC, Chen & Jin 2016).

Each takes ``fusion = "early"`` (one model on the concatenated features) or
``"late"`` (one model per group of features, outputs averaged, as several
MediaEval 2016 runs did); ``fusion_groups`` lists the groups as indices
into the feature set (default for late fusion: each feature alone).

Hyper-parameters are chosen only on validation data carved from the
training data, never on the test set. Fitted models are saved as plain
tensors (``torch.load(weights_only=True)``) and predict without
scikit-learn's pickles: linear maps, the SVR's support vectors and dual
coefficients, and each tree's node arrays.

scikit-learn is imported only when a model is fitted.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, FitReport, Model, ModelSpec
from aanbench.paramspec import Float, Int, ListOf

FUSION = ("early", "late")


def _cat(xs: Sequence[np.ndarray], idx: Sequence[int]) -> np.ndarray:
    return np.concatenate([np.asarray(xs[i], dtype=np.float64) for i in idx], axis=1)


def _groups(params: Mapping[str, Any], n_features: int) -> list[list[int]]:
    fusion = params.get("fusion", "early")
    if fusion not in FUSION:
        raise AanbenchError(f"fusion must be one of {', '.join(FUSION)}, not {fusion!r}")
    if fusion == "early":
        return [list(range(n_features))]
    groups = params.get("fusion_groups") or [[i] for i in range(n_features)]
    flat = [i for g in groups for i in g]
    if sorted(flat) != list(range(n_features)):
        raise AanbenchError(f"fusion_groups {groups!r} must cover each of the {n_features} features exactly once")
    return [list(map(int, g)) for g in groups]


def _t(a: np.ndarray):
    import torch

    return torch.as_tensor(np.ascontiguousarray(a))


def _np(t: Any) -> np.ndarray:
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


# -------------------------------------------------------------- fitted parts
# Each fitted part predicts from a float64 (n, d) matrix and round-trips
# through a dict of tensors and numbers.


class LinearPart:
    def __init__(self, w: np.ndarray, b: float) -> None:
        self.w, self.b = np.asarray(w, dtype=np.float64), float(b)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b

    def state(self) -> dict[str, Any]:
        return {"kind": "linear", "w": _t(self.w), "b": self.b}


class KernelPart:
    """RBF SVR: ``f(x) = sum_i a_i exp(-gamma |x - s_i|^2) + b``."""

    def __init__(self, sv: np.ndarray, coef: np.ndarray, b: float, gamma: float) -> None:
        self.sv, self.coef = np.asarray(sv, dtype=np.float64), np.asarray(coef, dtype=np.float64)
        self.b, self.gamma = float(b), float(gamma)

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        sv_sq = (self.sv**2).sum(1)
        for s in range(0, len(x), 1024):
            xb = x[s : s + 1024]
            d2 = (xb**2).sum(1)[:, None] + sv_sq[None, :] - 2.0 * xb @ self.sv.T
            out[s : s + 1024] = np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.coef + self.b
        return out

    def state(self) -> dict[str, Any]:
        return {"kind": "rbf", "sv": _t(self.sv), "coef": _t(self.coef), "b": self.b, "gamma": self.gamma}


class ForestPart:
    """Mean over trees; each tree as node arrays (left, right, feature,
    threshold, value), traversed for all rows at once."""

    def __init__(self, trees: list[dict[str, np.ndarray]]) -> None:
        self.trees = trees

    @classmethod
    def from_sklearn(cls, forest: Any) -> "ForestPart":
        trees = []
        for est in forest.estimators_:
            t = est.tree_
            trees.append({"left": t.children_left.astype(np.int64), "right": t.children_right.astype(np.int64),
                          "feature": t.feature.astype(np.int64), "threshold": t.threshold.astype(np.float64),
                          "value": t.value[:, 0, 0].astype(np.float64)})
        return cls(trees)

    def predict(self, x: np.ndarray) -> np.ndarray:
        total = np.zeros(len(x))
        rows = np.arange(len(x))
        for t in self.trees:
            node = np.zeros(len(x), dtype=np.int64)
            while True:
                inner = t["left"][node] >= 0
                if not inner.any():
                    break
                r, nd = rows[inner], node[inner]
                go_left = x[r, t["feature"][nd]] <= t["threshold"][nd]
                node[inner] = np.where(go_left, t["left"][nd], t["right"][nd])
            total += t["value"][node]
        return total / max(1, len(self.trees))

    def state(self) -> dict[str, Any]:
        return {"kind": "forest", "trees": [{k: _t(v) for k, v in t.items()} for t in self.trees]}


def _part_from_state(s: Mapping[str, Any]):
    kind = s["kind"]
    if kind == "linear":
        return LinearPart(_np(s["w"]), s["b"])
    if kind == "rbf":
        return KernelPart(_np(s["sv"]), _np(s["coef"]), s["b"], s["gamma"])
    if kind == "forest":
        return ForestPart([{k: _np(v) for k, v in t.items()} for t in s["trees"]])
    raise AanbenchError(f"unknown fitted part {kind!r}")


# -------------------------------------------------------------- fitting rules
# fit(x, y, vx, vy, params, seed) -> (part, chosen hyper-parameters, validation MSE or None)


def _fit_linear(x, y, vx, vy, params, seed):
    xm, ym = x.mean(0), y.mean()
    w, *_ = np.linalg.lstsq(x - xm, y - ym, rcond=None)
    part = LinearPart(w, ym - xm @ w)
    return part, {}, (float(np.mean((part.predict(vx) - vy) ** 2)) if vy is not None and len(vy) else None)


def _fit_svr_linear(x, y, vx, vy, params, seed):
    from sklearn.svm import LinearSVR

    if vy is not None and len(vy):  # no choice to make: train on all training data
        x, y = np.concatenate([x, vx]), np.concatenate([y, vy])
    m = LinearSVR(C=float(params["C"]), epsilon=float(params["epsilon"]), loss="squared_epsilon_insensitive",
                  dual=False, fit_intercept=True, max_iter=int(params["max_iter"]), random_state=seed)
    m.fit(x, y)
    return LinearPart(m.coef_, float(np.ravel(m.intercept_)[0])), {"C": float(params["C"])}, None


def _gamma_scale(x: np.ndarray) -> float:
    var = float(x.var())
    return 1.0 / (x.shape[1] * var) if var > 0 else 1.0


def _fit_svr_rbf(x, y, vx, vy, params, seed):
    from sklearn.svm import SVR

    base = _gamma_scale(x)
    gammas = [base * float(g) for g in params["gamma_factors"]]
    grid = [(float(c), g) for c in params["Cs"] for g in gammas]
    best, best_err = grid[0], None
    if vy is not None and len(vy) and len(grid) > 1:
        for c, g in grid:
            m = SVR(kernel="rbf", C=c, gamma=g, epsilon=float(params["epsilon"])).fit(x, y)
            err = float(np.mean((m.predict(vx) - vy) ** 2))
            if best_err is None or err < best_err:
                best, best_err = (c, g), err
    if vy is not None and len(vy):
        x, y = np.concatenate([x, vx]), np.concatenate([y, vy])
    c, g = best
    m = SVR(kernel="rbf", C=c, gamma=g, epsilon=float(params["epsilon"])).fit(x, y)
    part = KernelPart(m.support_vectors_, m.dual_coef_[0], float(m.intercept_[0]), g)
    return part, {"C": c, "gamma": g}, best_err


def _fit_forest(x, y, vx, vy, params, seed):
    from sklearn.ensemble import RandomForestRegressor

    if vy is not None and len(vy):
        x, y = np.concatenate([x, vx]), np.concatenate([y, vy])
    m = RandomForestRegressor(n_estimators=int(params["n_estimators"]), max_features=params["max_features"],
                              min_samples_leaf=int(params["min_samples_leaf"]), random_state=seed, n_jobs=1)
    m.fit(x, y)
    return ForestPart.from_sklearn(m), {}, None


COMMON = {"fusion": "early", "fusion_groups": []}
SPECS: dict[str, tuple[str, Callable, dict[str, Any]]] = {
    "linear": ("Ordinary least squares on the concatenated standardised features", _fit_linear, {}),
    "svr-linear": ("L2-loss linear SVR (liblinear -s 11; Yi & Wang 2019: C = 2^-5 valence, 2^-2 arousal)",
                   _fit_svr_linear, {"C": 0.03125, "epsilon": 0.1, "max_iter": 2000}),
    "svr-rbf": ("RBF-kernel SVR, C and gamma chosen on validation (MediaEval 2016 runs)", _fit_svr_rbf,
                {"Cs": [0.1, 1.0, 10.0], "gamma_factors": [0.1, 1.0, 10.0], "epsilon": 0.1}),
    "random-forest": ("Random forest regressor (RUC, Chen & Jin 2016)", _fit_forest,
                      {"n_estimators": 100, "max_features": 0.3, "min_samples_leaf": 5}),
}


class ClassicalModel(Model):
    def __init__(self, name: str, params: Mapping[str, Any], dims: Sequence[int]) -> None:
        self.name = name
        self.params = {**COMMON, **SPECS[name][2], **dict(params)}
        self.dims = [int(d) for d in dims]
        self.groups = _groups(self.params, len(self.dims)) if self.dims else []
        self.parts: list[Any] = []
        self.chosen: list[dict[str, Any]] = []

    def fit(self, train_x, train_y, val_x, val_y, *, seed: int) -> FitReport:
        t0 = time.perf_counter()
        fit = SPECS[self.name][1]
        y = np.asarray(train_y, dtype=np.float64)
        vy = None if val_y is None or not len(val_y) else np.asarray(val_y, dtype=np.float64)
        self.groups = _groups(self.params, len(train_x))
        self.parts, self.chosen, errs = [], [], []
        for g in self.groups:
            vx = _cat(val_x, g) if vy is not None else None
            part, chosen, err = fit(_cat(train_x, g), y, vx, vy, self.params, seed)
            self.parts.append(part)
            self.chosen.append(chosen)
            if err is not None:
                errs.append(err)
        return FitReport(best_val_loss=float(np.mean(errs)) if errs else None, seconds=time.perf_counter() - t0)

    def predict(self, x) -> np.ndarray:
        if not self.parts:
            raise RuntimeError("model is not trained")
        outs = [p.predict(_cat(x, g)) for p, g in zip(self.parts, self.groups)]
        return np.mean(outs, axis=0).astype(np.float32)

    def state(self) -> dict[str, Any]:
        if not self.parts:
            raise RuntimeError("model is not trained")
        return {"name": self.name, "groups": self.groups, "chosen": self.chosen,
                "parts": [p.state() for p in self.parts]}


def _restore(state: Mapping[str, Any]) -> ClassicalModel:
    m = ClassicalModel(state["name"], {}, [])
    m.groups = [list(g) for g in state["groups"]]
    m.chosen = list(state.get("chosen", []))
    m.parts = [_part_from_state(s) for s in state["parts"]]
    return m

PARAM_SPECS = {"C": Float(gt=0), "epsilon": Float(ge=0), "max_iter": Int(ge=1), "Cs": ListOf(Float(gt=0)),
               "gamma_factors": ListOf(Float(gt=0)), "n_estimators": Int(ge=1), "min_samples_leaf": Int(ge=1)}


def _spec(name: str) -> ModelSpec:
    desc, _, defaults = SPECS[name]
    return ModelSpec(name=name, description=desc, build=lambda p, d, _n=name: ClassicalModel(_n, p, d),
                     restore=_restore, params={**COMMON, **defaults}, param_specs=PARAM_SPECS)


@hookimpl
def aanbench_models():
    return [_spec(n) for n in SPECS]
