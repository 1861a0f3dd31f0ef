"""`aanbench demo` after an upgrade: the demo's store was made by other
versions of the libraries (here: an older decoder revision), which the store
refuses to mix with new rows. The demo's store is its own cache, so the demo
moves it (and the curve's store) aside and extracts again, rather than
failing as it did; the features come out the same where nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

from aanbench.store import FeatureStore, ProvenanceMismatch


def _stamp_older_decoder(array_dir: Path) -> None:
    meta = array_dir / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["provenance"]["libraries"]["aanbench-decoder"] = "1"
    meta.write_text(json.dumps(doc))


def test_demo_store_made_by_other_versions_is_moved_aside_and_extracted_again(tmp_path: Path) -> None:
    from aanbench.media import DECODER_VERSION
    from aanbench.plugin_manager import get_plugins
    from aanbench.workflows.demo import extract_demo_store

    work = tmp_path / "w"
    assert run_cli("datasets", "make-demo", work / "data", "--clips", 6).returncode == 0
    ds, store = get_plugins().dataset("demo"), work / "store"
    first, replaced = extract_demo_store(ds, work / "data", store, ["affect", "logmel"])
    assert replaced is None and first.failed == [] and first.plan.n_items_todo == 6
    before = FeatureStore(store, mode="r").open_group("demo", "default").resolve_feature("logmel").read()
    _stamp_older_decoder(store / "demo" / "default" / "features" / "logmel@1")
    (work / "store-curve").mkdir()
    (work / "store-curve" / "mark").write_text("the curve's old store")

    # the store itself still refuses to mix them, naming what changed
    g = FeatureStore(store).open_group("demo", "default")
    stamped = g.resolve_feature("logmel").provenance
    with pytest.raises(ProvenanceMismatch) as exc:
        g.create_feature("logmel@1", before.shape[1],
                         stamped | {"libraries": stamped["libraries"] | {"aanbench-decoder": DECODER_VERSION}})
    assert exc.value.changes == [f"aanbench-decoder 1 -> {DECODER_VERSION}"]

    told = []
    again, replaced = extract_demo_store(ds, work / "data", store, ["affect", "logmel"],
                                         on_replaced=lambda *a: told.append(a))
    assert replaced is not None and told == [replaced]
    assert replaced[0] == f"aanbench-decoder 1 -> {DECODER_VERSION}", replaced
    assert replaced[1] == [(store, work / "store.previous"), (work / "store-curve", work / "store-curve.previous")]
    assert (work / "store-curve.previous" / "mark").is_file() and not (work / "store-curve").exists()
    old = FeatureStore(work / "store.previous", mode="r").open_group("demo", "default").resolve_feature("logmel")
    assert old.provenance["libraries"]["aanbench-decoder"] == "1"  # kept as it was, aside
    new = FeatureStore(store, mode="r").open_group("demo", "default").resolve_feature("logmel")
    assert new.provenance["libraries"]["aanbench-decoder"] == DECODER_VERSION
    assert again.failed == [] and again.plan.n_items_todo == 6  # every clip extracted again
    np.testing.assert_array_equal(new.read(), before)  # nothing changed for these clips: the same features
