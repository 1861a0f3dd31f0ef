"""Folds that cannot see each other (issue 24, item 4, test (a)): under
leave-one-movie-out in the default batched stack, shuffling one movie's
labels leaves every prediction for that movie unchanged, for Feature AAN,
Temporal AAN and Feature+Temporal AAN, with dropout on (each copy's own
stream, ``aanbench.batched.dropout``). The other folds train on the shuffled
labels (their predictions move), stop at other epochs and leave the stack at
other times; the shuffled movie's fold must not notice.

On the small generated demo (real clips, decoding, openSMILE, Zarr;
``tests/smalldemo.py``): its weight-free features and labels, copied into a
store group whose dataset runs leave-one-movie-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aanbench.contracts import Item
from aanbench.plugin_manager import get_plugins
from aanbench.registry import ExperimentConfig
from aanbench.runner import run_experiment
from aanbench.store import FeatureStore

from smalldemo import small_demo  # noqa: F401  (fixture)
from test_batched import _Movies

FEATURES = ("affect", "emobase2010", "logmel")  # the registry's demo set (weightfree-both)
QUICK = {"max_epochs": 6, "patience": 3, "batch_size": 8, "lr": 0.005, "val_fraction": 0.2}
SEQ = {"sequence_length": 5, "sequence_stride": 1, "sequence_start": "pad"}


def _copy(demo: dict, root: Path, shuffle_movie: str | None):
    """The demo's items, features and labels in a new store; ``shuffle_movie``'s
    labels permuted among its clips (both targets). Clips in store order, 5 s apart
    within a movie (the demo's windows: clips in store order)."""
    src = FeatureStore(demo["store"]).open_group("demo")
    feats = src.read_features(list(FEATURES))
    groups = [str(g) for g in src.groups()]
    labels = {t: src.labels(t).copy() for t in ("valence", "arousal")}
    if shuffle_movie is not None:
        idx = np.flatnonzero(np.asarray(groups) == shuffle_movie)
        rng = np.random.default_rng(3)
        for t in labels:
            perm = rng.permutation(idx)
            while np.array_equal(labels[t][perm], labels[t][idx]):
                perm = rng.permutation(idx)
            labels[t][idx] = labels[t][perm]
    pos: dict[str, int] = {}
    items = []
    for i, (item_id, g) in enumerate(zip(src.item_ids(), groups)):
        k = pos[g] = pos.get(g, -1) + 1
        items.append(Item(str(item_id), None, start=5.0 * k, end=5.0 * k + 5,
                          labels={t: float(labels[t][i]) for t in labels}, group=g, split=""))
    g = FeatureStore(root / "store").ensure_group("synthetic-movies", items, chunk_rows=16)
    for name, values in zip(FEATURES, feats):
        g.import_rows(f"{name}@imported", values, {"extractor": name, "version": "imported", "dim": 0, "config": {},
                                                    "weights": {}, "libraries": {}, "source": "small demo"})
    return g


def _preds(doc) -> dict:
    return {(p["item_id"], p["target"]): (p["y_pred"], p["y_true"]) for p in doc["predictions"]}


@pytest.mark.slow
@pytest.mark.parametrize("model, params", [("feature-aan", {}), ("temporal-aan", SEQ),
                                           ("feature-temporal-aan", SEQ)])
def test_shuffling_one_movies_labels_leaves_its_predictions_unchanged(small_demo, tmp_path, model, params):
    movie = small_demo["movies"][-1]
    plugins = get_plugins()
    exp = ExperimentConfig(name=f"i-{model}", model=model, description="", feature_set="demo", features=FEATURES,
                           params={**QUICK, **params}, protocol=None, seed=5)
    docs = [run_experiment(exp, _Movies(), _copy(small_demo, tmp_path / name, shuffle), plugins)
            for name, shuffle in (("original", None), ("shuffled", movie))]
    a, b = (_preds(d) for d in docs)
    assert a.keys() == b.keys()
    src = FeatureStore(small_demo["store"]).open_group("demo")
    movie_of = {str(i): str(g) for i, g in zip(src.item_ids(), src.groups())}
    mine = [k for k in a if movie_of[k[0]] == movie]
    others = [k for k in a if k not in mine]
    assert len(mine) == 2 * sum(1 for g in movie_of.values() if g == movie) > 0
    assert any(a[k][1] != b[k][1] for k in mine)  # its labels were shuffled
    # every prediction of the shuffled movie: the same (to float32 rounding of one kernel blocking)
    np.testing.assert_allclose([b[k][0] for k in mine], [a[k][0] for k in mine], rtol=0, atol=1e-6)
    # the folds that trained on its shuffled labels did change (the check can fail)
    assert max(abs(a[k][0] - b[k][0]) for k in others) > 1e-3
    fits = [{f["fold"]: (f["epochs"], f["best_epoch"]) for f in d["targets"]["valence"]["fits"]} for d in docs]
    assert fits[0][movie] == fits[1][movie]

