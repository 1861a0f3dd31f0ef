"""Samples built by the engine (aanbench.samples) from the store's item table:
the paper windows of EIMT16 temporal and COGNIMUSE reproduce what the two
dataset-specific ``sequences()`` functions gave (kept below, verbatim, as the
reference) on the official-layout fixtures; windows stay inside their scope,
ordered by start time; padding, stride, labels, validity; and nothing about
windows enters a dataset's stored configuration."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pytest

from aanbench.contracts import ROWS, AanbenchError, Item, SequenceSpec
from aanbench.samples import build_samples, resolve_spec, samples_of, samples_of_items
from aanbench.store import FeatureStore
from aanbench_plugins.datasets.cognimuse import Cognimuse
from aanbench_plugins.datasets.eimt16 import Eimt16

from fixtures_official import write_cognimuse, write_eimt16

# --------------------------------------------------------------------------
# The reference: the two functions the engine replaced, as they were in
# plugins/datasets/eimt16.py and plugins/datasets/cognimuse.py.


class ItemSequence(NamedTuple):
    id: str
    members: tuple[str, ...]


def old_eimt16_sequences(items: Sequence[Item]) -> list[ItemSequence]:
    order: list[str] = []
    members: dict[str, list[tuple[int, str]]] = {}
    for it in items:
        base, _, k = it.id.partition("#")
        if base not in members:
            members[base] = []
            order.append(base)
        members[base].append((int(k) if k else 0, it.id))
    return [ItemSequence(b, tuple(i for _, i in sorted(members[b]))) for b in order]


def _segment_index(it: Item) -> int:
    try:
        return int(it.id.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -10


def old_cognimuse_sequences(items: Sequence[Item], length: int = 5) -> list[ItemSequence]:
    out: list[ItemSequence] = []
    run: list[Item] = []
    for it in items:
        if run and (run[-1].group != it.group or _segment_index(run[-1]) + 1 != _segment_index(it)):
            run = []
        run.append(it)
        if len(run) >= length:
            out.append(ItemSequence(it.id, tuple(x.id for x in run[-length:])))
    return out


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def eimt16_copy(tmp_path_factory):
    """EIMT16 in its official layout, one training clip missing."""
    return write_eimt16(tmp_path_factory.mktemp("eimt16") / "copy", missing=["ACCEDE00005"], seed=1)


@pytest.fixture(scope="module")
def cognimuse_copy(tmp_path_factory):
    """All 12 COGNIMUSE movies, 32 s each: 6 full 5-s segments per movie."""
    return write_cognimuse(tmp_path_factory.mktemp("cognimuse") / "copy", seconds=32.0, audio=False)


def stored_samples(tmp_path, ds, items, spec):
    """The same samples, built from a real Zarr store group's item table."""
    g = FeatureStore(tmp_path / "store").ensure_group(ds.name, items, segmentation=ds.segmentation,
                                                     dataset_config=ds.config())
    return samples_of(g, spec)


# --------------------------------------------------------------------------
# The paper windows against the old functions


def test_eimt16_temporal_windows_reproduce_the_old_sequences(eimt16_copy, tmp_path):
    ds = Eimt16(segmentation="temporal4")
    assert ds.windows == SequenceSpec(length=4, stride=4, scope="file", label="mean", start="drop")
    items = ds.items(eimt16_copy.root)
    old = old_eimt16_sequences(items)
    for samples in (samples_of_items(items, ds.windows), stored_samples(tmp_path, ds, items, ds.windows)):
        got = [(sid, tuple(samples.member_ids([it.id for it in items], i))) for i, sid in enumerate(samples.ids)]
        assert got == [(s.id, s.members) for s in old]
        # derived from the fixture's layout: one window per excerpt, train then test, #0..#3 in time order
        assert samples.ids == eimt16_copy.train + eimt16_copy.test
        assert got[0][1] == tuple(f"{eimt16_copy.train[0]}#{k}" for k in range(4))
        by_id = {it.id: it for it in items}
        for i, sid in enumerate(samples.ids):
            first, last = by_id[f"{sid}#0"], by_id[f"{sid}#3"]
            if sid == "ACCEDE00005":  # missing clip: open window
                assert np.isnan(samples.start[i]) and np.isnan(samples.end[i])
            else:
                assert samples.start[i] == first.start == 0.0 and samples.end[i] == pytest.approx(last.end)
            assert samples.split[i] == first.split and samples.group[i] == first.group
        y = np.array([it.labels["valence"] for it in items], dtype=np.float32)
        want = np.array([eimt16_copy.labels[s][0] for s in samples.ids], dtype=np.float32)
        np.testing.assert_allclose(samples.labels(y), want, rtol=1e-6)


def test_cognimuse_windows_reproduce_the_old_sequences(cognimuse_copy, tmp_path):
    ds = Cognimuse()
    assert ds.windows == SequenceSpec(length=5, stride=1, scope="group", label="last", start="drop")
    items = ds.items(cognimuse_copy.root)
    old = old_cognimuse_sequences(items, length=5)
    for samples in (samples_of_items(items, ds.windows), stored_samples(tmp_path, ds, items, ds.windows)):
        got = [(sid, tuple(samples.member_ids([it.id for it in items], i))) for i, sid in enumerate(samples.ids)]
        assert got == [(s.id, s.members) for s in old]
        # from the layout: 6 segments per movie -> windows ending at segments 4 and 5
        assert len(got) == 12 * 2
        assert got[0] == ("ABE_0004", tuple(f"ABE_{k:04d}" for k in range(5)))
        assert got[1] == ("ABE_0005", tuple(f"ABE_{k:04d}" for k in range(1, 6)))
        assert list(samples.start[:2]) == [0.0, 5.0] and list(samples.end[:2]) == [25.0, 30.0]
        y = np.array([it.labels["arousal"] for it in items], dtype=np.float32)
        np.testing.assert_array_equal(samples.labels(y)[:2], y[[4, 5]])
        assert y[4] == np.float32(items[4].labels["arousal"])
    # other lengths, as the old function's length argument
    for length in (1, 3, 6, 7):
        spec = SequenceSpec(length=length, stride=1, scope="group", label="last")
        s = samples_of_items(items, spec)
        want = old_cognimuse_sequences(items, length=length)
        assert [(sid, tuple(s.member_ids([it.id for it in items], i))) for i, sid in enumerate(s.ids)] == \
            [(w.id, w.members) for w in want]


def test_windows_are_not_stored_configuration(cognimuse_copy):
    assert "sequence_length" not in Cognimuse().config()
    with pytest.raises(AanbenchError, match="no option 'sequence_length'"):
        Cognimuse().configure(sequence_length="3")
    assert not hasattr(Eimt16(), "sequences")


# --------------------------------------------------------------------------
# The rules, on small hand-made tables


def table(rows):
    """rows: (id, group, split, path, start, end)"""
    cols = list(zip(*rows))
    return cols[0], cols[1], cols[2], cols[3], np.array(cols[4], float), np.array(cols[5], float)


def members(s, ids):
    return [[ids[j] for j in row] for row in s.members]


def test_windows_follow_start_time_and_stay_in_their_scope():
    rows = [("b1", "B", "train", "b.mp4", 5.0, 10.0), ("a1", "A", "train", "a.mp4", 5.0, 10.0),
            ("a0", "A", "train", "a.mp4", 0.0, 5.0), ("a2", "A", "train", "a2.mp4", 10.0, 15.0),
            ("b0", "B", "train", "b.mp4", 0.0, 5.0), ("a3", "A", "test", "a.mp4", 15.0, 20.0)]
    ids = [r[0] for r in rows]
    s = build_samples(*table(rows), SequenceSpec(length=2, scope="group"))
    assert members(s, ids) == [["b0", "b1"], ["a0", "a1"], ["a1", "a2"]]  # never across group or split
    assert list(s.start) == [0.0, 0.0, 5.0] and list(s.end) == [10.0, 10.0, 15.0]
    s = build_samples(*table(rows), SequenceSpec(length=2, scope="file"))
    assert members(s, ids) == [["b0", "b1"], ["a0", "a1"]]  # a2 lies in another file
    s = build_samples(*table(rows), SequenceSpec(length=2, scope="group", start="pad"))
    assert members(s, ids) == [["b0", "b0"], ["b0", "b1"], ["a0", "a0"], ["a0", "a1"], ["a1", "a2"], ["a3", "a3"]]
    assert s.ids == ["b0", "b1", "a0", "a1", "a2", "a3"]  # one sample per row, named by its last row


def test_windows_do_not_span_a_gap_in_time():
    # 5-s segments of one movie, the one at 15-20 s missing
    rows = [(f"m_{k}", "M", "", "m.mp4", 5.0 * k, 5.0 * k + 5) for k in (0, 1, 2, 4, 5, 6)]
    ids = [r[0] for r in rows]
    s = build_samples(*table(rows), SequenceSpec(length=2))
    assert members(s, ids) == [["m_0", "m_1"], ["m_1", "m_2"], ["m_4", "m_5"], ["m_5", "m_6"]]
    s = build_samples(*table(rows), SequenceSpec(length=3, start="pad"))
    assert [m[-1] for m in members(s, ids)] == ids  # still one sample per row
    assert members(s, ids)[3] == ["m_4", "m_4", "m_4"]  # the run after the gap is padded from its own first row
    # sparse windows (2 s every 5 s) are regular, not gaps; a missing one is
    sparse = [(f"s_{k}", "S", "", "s.mp4", 5.0 * k, 5.0 * k + 2) for k in (0, 1, 2, 3, 5, 6)]
    sid = [r[0] for r in sparse]
    s = build_samples(*table(sparse), SequenceSpec(length=2))
    assert members(s, sid) == [["s_0", "s_1"], ["s_1", "s_2"], ["s_2", "s_3"], ["s_5", "s_6"]]
    # overlapping windows (5 s every 2.5 s), shots of uneven length and rounding slack are not gaps
    overlap = [(f"o_{k}", "O", "", "o.mp4", 2.5 * k, 2.5 * k + 5) for k in range(5)]
    shots = [(f"h_{k}", "H", "", "h.mp4", a, b) for k, (a, b) in enumerate([(0, 1), (1, 9), (9, 9.5), (9.54, 20)])]
    for table_rows in (overlap, shots):
        n = len(table_rows)
        s = build_samples(*table(table_rows), SequenceSpec(length=2))
        assert len(s) == n - 1, table_rows
    # unknown times: the scope is not split
    unknown = [(f"u_{k}", "U", "", "u.mp4", float("nan"), float("nan")) for k in range(3)]
    assert len(build_samples(*table(unknown), SequenceSpec(length=2))) == 2


def test_stride_labels_validity_and_rows():
    rows = [(f"m_{k}", "M", "", "m.mp4", 2.0 * k, 2.0 * k + 2) for k in range(7)]
    ids = [r[0] for r in rows]
    s = build_samples(*table(rows), SequenceSpec(length=3, stride=2))
    assert members(s, ids) == [["m_0", "m_1", "m_2"], ["m_2", "m_3", "m_4"], ["m_4", "m_5", "m_6"]]
    y = np.arange(7, dtype=np.float32)
    assert list(s.labels(y)) == [2, 4, 6]
    assert list(build_samples(*table(rows), SequenceSpec(length=3, stride=2, label="mean")).labels(y)) == [1, 3, 5]
    valid = np.ones(7, bool)
    valid[3] = False
    assert list(s.usable(valid)) == [True, False, True]
    assert list(s.rows([0, 2])) == [0, 1, 2, 4, 5, 6]
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    (seq,) = s.take([x], [1], sequences=True)
    assert seq.shape == (1, 3, 2) and seq[0, :, 0].tolist() == [4, 6, 8]
    with pytest.raises(AanbenchError, match="row model"):
        s.take([x], [1], sequences=False)
    r = build_samples(*table(rows), ROWS)
    assert r.ids == ids and r.take([x], [3], sequences=False)[0].tolist() == [[6, 7]]


def test_sample_spec_is_checked_and_resolved():
    with pytest.raises(AanbenchError, match="length must be an integer >= 1"):
        SequenceSpec(length=0)
    with pytest.raises(AanbenchError, match="scope must be one of file, group"):
        SequenceSpec(scope="movie")
    cog = Cognimuse()
    assert resolve_spec("rows", cog, {}) == ROWS
    assert resolve_spec("sequences", cog, {}) == cog.windows
    assert resolve_spec("sequences", cog, {"sequence_length": 3, "sequence_start": "pad"}) == \
        SequenceSpec(length=3, stride=1, scope="group", label="last", start="pad")
    with pytest.raises(AanbenchError, match="takes single rows"):
        resolve_spec("rows", cog, {"sequence_length": 5}, model="ridge")

    class NoWindows:
        name = "plain"
        windows = None

    with pytest.raises(AanbenchError, match="declares no windows: set sequence_length"):
        resolve_spec("sequences", NoWindows(), {}, model="lstm")
    assert resolve_spec("sequences", NoWindows(), {"sequence_length": "4"}).length == 4
    with pytest.raises(AanbenchError, match="sequence_length must be an integer"):
        resolve_spec("sequences", NoWindows(), {"sequence_length": 2.5})


def test_sequence_model_on_a_windowless_dataset_names_the_windowed_variant():
    from aanbench.contracts import AanbenchError
    from aanbench.plugin_manager import get_plugins
    from aanbench.samples import resolve_spec

    ds = get_plugins().dataset("eimt16")
    with pytest.raises(AanbenchError, match="use eimt16-temporal \\(which declares windows\\), or set sequence_length"):
        resolve_spec("sequences", ds, {}, model="temporal-aan")


# --------------------------------------------------------------------------
# Independent excerpts: no window spans two files (EIMT16)


def test_eimt16_excerpts_are_independent_and_windows_stay_in_one_excerpt(eimt16_copy, tmp_path):
    whole, temporal = Eimt16(), Eimt16(segmentation="temporal4")
    assert whole.independent_excerpts and temporal.independent_excerpts and not Cognimuse().independent_excerpts
    # the declared windows (one excerpt's 4 sub-segments) are allowed, a wider scope is refused
    assert resolve_spec("sequences", temporal, {}) == temporal.windows
    assert resolve_spec("sequences", temporal, {"sequence_label": "last"}).scope == "file"
    with pytest.raises(AanbenchError, match="independent excerpts.*sequence_scope 'group'.*use sequence_scope"):
        resolve_spec("sequences", temporal, {"sequence_scope": "group"}, model="lstm")
    with pytest.raises(AanbenchError, match="model 'lstm' on dataset 'eimt16': the dataset's items are independent"):
        resolve_spec("sequences", whole, {"sequence_length": 5, "sequence_start": "pad"}, model="lstm")

    # the hazard: 5-row group windows over one-item-per-excerpt EIMT16 join
    # test excerpts (all share the group "test"), here when nothing declares them independent
    items = whole.items(eimt16_copy.root)
    spec = SequenceSpec(length=5, start="pad")
    ids = [it.id for it in items]
    crossing = samples_of_items(items, spec)
    test_windows = [set(crossing.member_ids(ids, i)) for i in range(len(crossing)) if crossing.split[i] == "test"]
    assert any(len(w) > 1 for w in test_windows)
    # the sample builder refuses them, from the item list and from a real store group (which reads
    # the rule from the installed dataset plugin it was stored for: run and predict alike)
    with pytest.raises(AanbenchError, match="independent excerpts"):
        samples_of_items(items, spec, independent=True)
    g = FeatureStore(tmp_path / "store").ensure_group(whole.name, items, segmentation=whole.segmentation,
                                                     dataset_config=whole.config())
    with pytest.raises(AanbenchError, match="independent excerpts"):
        samples_of(g, spec)
    assert len(samples_of(g, spec, independent=False)) == len(items)  # the rule comes from the dataset

    # the temporal variant's stored windows: each holds the 4 rows of one file, nothing else
    t_items = temporal.items(eimt16_copy.root)
    gt = FeatureStore(tmp_path / "store").ensure_group(temporal.name, t_items, segmentation=temporal.segmentation,
                                                      dataset_config=temporal.config())
    s = samples_of(gt, temporal.windows)
    paths = [str(it.path) for it in t_items]
    assert len(s) == len(eimt16_copy.train) + len(eimt16_copy.test)
    for row in s.members:
        assert len({paths[j] for j in row}) == 1 and len(set(row.tolist())) == 4


def test_the_builder_checks_every_window_of_independent_excerpts():
    """Second line: even in file scope, rows without a media file share the
    scope "" and would be joined; the builder refuses rather than cross."""
    items = [Item(id=f"x{i}", path=None, labels={"valence": 0.0}, group="test", split="test") for i in range(3)]
    spec = SequenceSpec(length=2, scope="file")
    assert len(samples_of_items(items, spec)) == 2  # without the rule: windows over two items
    with pytest.raises(AanbenchError, match=r"span items without a media file \(x0, x1\).*refusing"):
        samples_of_items(items, spec, independent=True)
    # single-row samples and one-file windows are fine
    assert len(samples_of_items(items, ROWS, independent=True)) == 3
    one = [Item(id=f"c#{k}", path=Path("c.mp4"), start=float(k),
                end=float(k + 1), group="g", split="test") for k in range(4)]
    assert samples_of_items(one, SequenceSpec(length=4, stride=4, scope="file"), independent=True).ids == ["c"]
    # and the check itself names a window over two files (file scope cannot build one; a bug could)
    from aanbench.samples import _check_within_files

    with pytest.raises(AanbenchError, match=r"span 2 files \(b, c\)"):
        _check_within_files(np.array([[0, 1], [1, 2]]), ["a", "b", "c"], ["f1.mp4", "f1.mp4", "f2.mp4"])
