"""Samples: what a model sees, built from a store group's item table.

A sample is one stored row (row models) or a window of consecutive rows
(sequence models), as a :class:`~aanbench.contracts.SequenceSpec` says.
Datasets only declare their paper windows; this module is the one place
that builds them, so ``run``, ``train`` and ``predict`` all see the same
windows.

Datasets whose media files are independent excerpts
(:attr:`~aanbench.contracts.Dataset.independent_excerpts`, EIMT16) get
windows within one file only: :func:`resolve_spec` refuses a wider scope,
and :func:`build_samples` refuses to build, rather than return, a window
that would span two files (so a test excerpt's prediction depends on that
excerpt alone).

``Samples.members`` holds, for each sample, the row indices (into the store
group) of its rows, oldest first: ``int64 (n_samples, T)``. Features for a
set of samples are ``values[members]``: ``(n, T, dim)``, or ``(n, dim)``
for single-row samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from aanbench.contracts import ROWS, AanbenchError, Dataset, Item, SequenceSpec


@dataclass
class Samples:
    """Samples of one store group under one :class:`SequenceSpec`.

    ``ids``, ``group``, ``split``: per sample (str); ``start``, ``end``: float64
    seconds, NaN = open (the file's beginning / end); ``members``:
    ``int64 (n, T)`` row indices into the group, oldest first.
    """

    spec: SequenceSpec
    ids: list[str]
    members: np.ndarray
    group: np.ndarray
    split: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def length(self) -> int:
        return int(self.members.shape[1])

    def labels(self, row_labels: np.ndarray) -> np.ndarray:
        """``float32 (n,)``: each sample's label from the rows' labels (NaN when
        the row(s) it is labelled by are unlabelled)."""
        y = np.asarray(row_labels, dtype=np.float32)
        if self.spec.label == "last" or self.length == 1:
            return y[self.members[:, -1]]
        with np.errstate(invalid="ignore"):
            return y[self.members].astype(np.float64).mean(axis=1).astype(np.float32)

    def usable(self, row_valid: np.ndarray) -> np.ndarray:
        """``bool (n,)``: every member row is valid."""
        return np.asarray(row_valid, dtype=bool)[self.members].all(axis=1)

    def rows(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """The unique rows the samples ``idx`` are made of (sorted)."""
        return np.unique(self.members[np.asarray(idx, dtype=np.int64)].ravel())

    def take(self, values: Sequence[np.ndarray], idx: np.ndarray | Sequence[int], *, sequences: bool) -> list[np.ndarray]:
        """Model inputs for samples ``idx``: per feature array, ``(n, T, dim_k)``
        when ``sequences`` else ``(n, dim_k)`` (single-row samples only)."""
        m = self.members[np.asarray(idx, dtype=np.int64)]
        if sequences:
            return [np.ascontiguousarray(v[m]) for v in values]
        if self.length != 1:
            raise AanbenchError(f"a row model cannot take windows of {self.length} rows")
        return [np.ascontiguousarray(v[m[:, 0]]) for v in values]

    def member_ids(self, item_ids: Sequence[str], i: int) -> list[str]:
        return [str(item_ids[j]) for j in self.members[i]]


def build_samples(
    ids: Sequence[str],
    groups: Sequence[str],
    splits: Sequence[str],
    paths: Sequence[str],
    starts: np.ndarray,
    ends: np.ndarray,
    spec: SequenceSpec = ROWS,
    *,
    independent: bool = False,
) -> Samples:
    """Samples from an item table given column by column (store order).

    See :class:`SequenceSpec` for the rules; rows come back in store order
    for single-row specs, otherwise scope by scope (scopes in order of their
    first row), windows in time order.

    ``independent``: each file is an independent excerpt (the dataset's
    :attr:`~aanbench.contracts.Dataset.independent_excerpts`): a window of
    more than one row must have scope ``"file"``, and every window is
    checked to hold the rows of one named file; either failing raises
    :class:`AanbenchError` (nothing crosses an excerpt silently).
    """
    n = len(ids)
    ids = [str(x) for x in ids]
    groups_a = np.asarray([str(x) for x in groups], dtype=object)
    splits_a = np.asarray([str(x) for x in splits], dtype=object)
    paths_a = [str(x) for x in paths]
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    if not (len(groups_a) == len(splits_a) == len(paths_a) == len(starts) == len(ends) == n):
        raise AanbenchError("item table columns differ in length")
    if independent and spec.length > 1 and spec.scope != "file":
        raise AanbenchError(_crossing_scope_message(spec.scope))
    if spec.is_rows:
        members = np.arange(n, dtype=np.int64).reshape(n, 1)
        return Samples(spec, list(ids), members, groups_a.astype(str), splits_a.astype(str), starts.copy(), ends.copy())

    # scopes: rows that may share a window, in order of first appearance
    scope_of: dict[tuple, list[int]] = {}
    for i in range(n):
        key = (groups_a[i], splits_a[i]) + ((paths_a[i],) if spec.scope == "file" else ())
        scope_of.setdefault(key, []).append(i)
    L, s = spec.length, spec.stride
    windows: list[list[int]] = []
    for rows in scope_of.values():
        rows_a = np.asarray(rows, dtype=np.int64)
        t = np.where(np.isnan(starts[rows_a]), 0.0, starts[rows_a])
        ordered = rows_a[np.lexsort((rows_a, t))]  # by start, then store order
        for run in _runs(ordered, starts, ends):
            if spec.start == "pad":
                run = np.concatenate([np.repeat(run[:1], L - 1), run])
            for e in range(L - 1, len(run), s):
                windows.append([int(x) for x in run[e - L + 1 : e + 1]])
    members = np.asarray(windows, dtype=np.int64).reshape(len(windows), L)
    if independent:
        _check_within_files(members, ids, paths_a)
    first, last = members[:, 0], members[:, -1]
    names = _window_names(ids, members)
    return Samples(spec, names, members, groups_a[last].astype(str), splits_a[last].astype(str),
                   starts[first].copy(), ends[last].copy())


def _crossing_scope_message(scope: str) -> str:
    return (f"the dataset's items are independent excerpts (one media file each, e.g. EIMT16): a window may not "
            f"span two of them, and sequence_scope {scope!r} would join excerpts of one {scope} (e.g. test "
            "excerpts of different films); use sequence_scope = \"file\" (windows within one excerpt, "
            "e.g. the sub-segments of eimt16-temporal)")


def _check_within_files(members: np.ndarray, ids: list[str], paths: list[str]) -> None:
    """Every window holds rows of one named file (independent excerpts)."""
    if not len(members):
        return
    names, code = np.unique(np.asarray(paths, dtype=object).astype(str), return_inverse=True)
    files = code[members]  # (n, T) file of each member row
    unnamed = names[files[:, 0]] == ""
    several_rows = (members != members[:, :1]).any(axis=1)
    bad = np.flatnonzero((files != files[:, :1]).any(axis=1) | (unnamed & several_rows))
    if len(bad):
        row = members[bad[0]]
        n_files = len({paths[j] for j in row})
        what = "items without a media file" if unnamed[bad[0]] and n_files == 1 else f"{n_files} files"
        raise AanbenchError(f"a window would span {what} ({', '.join(dict.fromkeys(ids[j] for j in row))}), but "
                            f"the dataset's items are independent excerpts: refusing to build it "
                            f"({len(bad)} such window(s))")


GAP_MIN_SECONDS = 0.5  # uncovered time below this never splits a scope (rounding of segment times)


def _runs(ordered: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[np.ndarray]:
    """``ordered`` (one scope's rows, by start time) split where time is
    missing: a row that starts later after the previous row's end than the
    scope's usual distance (the median of ``start[i+1] - end[i]``: 0 for
    contiguous segments, the hop minus the length for sparse ones) plus
    ``max(GAP_MIN_SECONDS, half the median row length)``. A window never
    spans such a gap. Scopes with an unknown start or end are not split."""
    st, en = starts[ordered], ends[ordered]
    if len(ordered) < 2 or not (np.isfinite(st).all() and np.isfinite(en).all()):
        return [ordered]
    uncovered = st[1:] - en[:-1]
    limit = max(float(np.median(uncovered)), 0.0) + max(GAP_MIN_SECONDS, 0.5 * float(np.median(en - st)))
    cuts = np.flatnonzero(uncovered > limit) + 1
    return np.split(ordered, cuts) if len(cuts) else [ordered]


def _window_names(ids: list[str], members: np.ndarray) -> list[str]:
    """Last row's id, or the parent ``P`` of sub-items ``P#0..P#k`` when the
    window holds exactly those and no other window shares that parent."""
    n_children: dict[str, int] = {}
    for x in ids:
        parent, sep, _ = x.rpartition("#")
        if sep:
            n_children[parent] = n_children.get(parent, 0) + 1
    names: list[str] = []
    for row in members:
        names.append(ids[row[-1]])
        parents = {ids[j].rpartition("#")[0] if "#" in ids[j] else None for j in row}
        if len(parents) == 1:
            (p,) = parents
            if p is not None and len(set(row.tolist())) == len(row) == n_children.get(p):
                names[-1] = p
    counts: dict[str, int] = {}
    for x in names:
        counts[x] = counts.get(x, 0) + 1
    return [ids[row[-1]] if counts[x] > 1 else x for x, row in zip(names, members)]


def samples_of(group: Any, spec: SequenceSpec = ROWS, *, independent: bool | None = None) -> Samples:
    """Samples of a :class:`~aanbench.store.DatasetGroup` (its item table).
    ``independent`` (see :func:`build_samples`): ``None`` reads it from the
    installed dataset plugin the group was stored for (its
    :attr:`~aanbench.contracts.Dataset.independent_excerpts`), so training
    (``run``) and ``predict`` obey the same rule."""
    t = group.item_table()
    if independent is None:
        independent = stored_independent(group)
    return build_samples(t["id"].tolist(), t["group"].tolist(), t["split"].tolist(), t["path"].tolist(),
                         t["start"].to_numpy(), t["end"].to_numpy(), spec, independent=independent)


def stored_independent(group: Any) -> bool:
    """Whether the dataset a store group holds declares its items
    independent excerpts (``False`` when that dataset plugin is not installed:
    the store alone does not say)."""
    name = str(group.attrs.get("dataset", ""))
    from aanbench.plugin_manager import get_plugins

    ds = get_plugins().datasets.get(name)
    return bool(getattr(ds, "independent_excerpts", False))


def samples_of_items(items: Sequence[Item], spec: SequenceSpec = ROWS, *, independent: bool = False) -> Samples:
    """Samples of a list of items, as :func:`samples_of` would build them once stored."""
    nan = float("nan")
    return build_samples([it.id for it in items], [it.group for it in items], [it.split for it in items],
                         [str(it.path) if it.path is not None else "" for it in items],
                         np.array([nan if it.start is None else it.start for it in items], dtype=np.float64),
                         np.array([nan if it.end is None else it.end for it in items], dtype=np.float64), spec,
                         independent=independent)


# --------------------------------------------------------------------------
# Which windows a run uses

SEQUENCE_SETTINGS = {"sequence_length": "length", "sequence_stride": "stride", "sequence_scope": "scope",
                     "sequence_label": "label", "sequence_start": "start"}


def resolve_spec(model_input: str, dataset: Dataset, settings: dict[str, Any], *, model: str = "") -> SequenceSpec:
    """The :class:`SequenceSpec` of a run.

    Row models take single rows (a ``sequence_length`` other than 1 is
    refused). Sequence models take the dataset's declared windows
    (:attr:`Dataset.windows`), with any ``sequence_*`` setting of the
    experiment applied over them; without declared windows the experiment
    must give ``sequence_length`` (defaults: stride 1, scope group, labelled
    by the last row, short windows dropped). A dataset of independent
    excerpts (:attr:`Dataset.independent_excerpts`) takes windows of one
    file only: a wider scope is refused here, before any work.
    """
    over = {SEQUENCE_SETTINGS[k]: v for k, v in settings.items() if k in SEQUENCE_SETTINGS and v is not None}
    for k in ("length", "stride"):
        if k in over:
            over[k] = _whole(f"sequence_{k}", over[k])
    if model_input == "rows":
        if over.get("length", 1) != 1 or over.get("stride", 1) != 1:
            raise AanbenchError(f"model {model!r} takes single rows: sequence_length/sequence_stride must be 1 "
                                f"(got {over.get('length', 1)}/{over.get('stride', 1)})")
        return ROWS
    base = getattr(dataset, "windows", None)
    if base is None:
        if "length" not in over:
            raise AanbenchError(
                f"model {model!r} takes sequences, and dataset {dataset.name!r} declares no windows: "
                + _windowed_variants_hint(dataset.name)
                + "set sequence_length (and optionally sequence_stride, sequence_scope, sequence_label, "
                "sequence_start) in the experiment")
        base = SequenceSpec(length=over["length"])
    spec = SequenceSpec(**{**base.to_dict(), **over})
    if getattr(dataset, "independent_excerpts", False) and spec.length > 1 and spec.scope != "file":
        raise AanbenchError(f"model {model!r} on dataset {dataset.name!r}: " + _crossing_scope_message(spec.scope))
    return spec


def _whole(name: str, v: Any) -> int:
    try:
        if isinstance(v, bool):
            raise ValueError
        iv = int(v)
        if float(v) != iv:
            raise ValueError
    except (TypeError, ValueError):
        raise AanbenchError(f"{name} must be an integer >= 1, not {v!r}") from None
    return iv


def _windowed_variants_hint(name: str) -> str:
    """'use eimt16-temporal, which declares windows, or ' when installed
    variants of dataset ``name`` declare windows; else ''."""
    try:
        from aanbench.plugin_manager import get_plugins

        found = sorted(n for n, ds in get_plugins().datasets.items()
                       if n != name and n.startswith(name) and getattr(ds, "windows", None) is not None)
    except Exception:  # a hint must never hide the real error
        return ""
    return f"use {', '.join(found)} (which declares windows), or " if found else ""
