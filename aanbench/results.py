"""The results document of a run as a typed object: what
:func:`aanbench.runner.run_experiment` returns, ``aanbench run`` and
``benchmark`` write (``results/<dataset>/<experiment>/seed<N>.json``) and the
leaderboard reads.

:class:`RunResult` holds the run's configuration (experiment, model,
dataset and its options, features, protocol, windows, parameters, seed),
one :class:`TargetResult` per target (pooled metrics, per-fold metrics, fit
summaries, counts, per-movie spread) and the test predictions (one dict per
scored sample: ``item_id``, ``start``, ``end``, ``group``, ``fold``,
``target``, ``y_true``, ``y_pred``). :meth:`RunResult.to_payload` gives the
JSON layout (``format`` = ``aanbench.results/1``); :meth:`RunResult.from_payload`
reads every results file aanbench has written under that format, the first
ones included (without ``model_input``, ``dataset_config``,
``items_sha256``, ``samples``, ``settings``, ``device``, per-movie spread,
``n_samples`` or prediction ``start``/``end``: those stay absent).
``skipped_damaged`` (the stored rows a ``--skip-damaged`` run left out)
and ``failed_rows`` (rows left out because their extraction failed), both
part of the configuration fingerprint, are present only where rows were left out. A newer
format (``aanbench.results/2``, ...) is refused with an error naming the
file; keys this version does not know are kept (``extra``) and written back.

Both classes are also read-only mappings of their JSON keys
(``doc["targets"]["valence"]["metrics"]["ccc"]``), for code written against
the JSON document; ``doc["_file"]`` is the file it was read from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aanbench.contracts import AanbenchError
from aanbench.documents import PayloadView, same_payload

RESULTS_FORMAT = "aanbench.results/1"
REQUIRED = ("format", "experiment", "model", "dataset", "protocol", "targets")


@dataclass(eq=False)
class TargetResult(PayloadView):
    """One target of a run: ``metrics`` pooled over the folds' test
    predictions (with small-cluster intervals, aanbench.stats), ``folds`` (fold name -> its
    metrics), ``fits`` (one summary per fold's fit), counts, and
    ``per_group`` (mean and sd over the test movies) when movies were resampled."""

    metrics: dict[str, Any]
    folds: dict[str, Any] = field(default_factory=dict)
    fits: list[dict[str, Any]] = field(default_factory=list)
    n_items: int | None = None
    n_samples: int | None = None
    n_unusable: int | None = None
    per_group: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("metrics", "folds", "fits", "n_items", "n_samples", "n_unusable", "per_group")
    _ALWAYS = ("metrics", "folds", "fits")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TargetResult):
            return NotImplemented
        return same_payload(self.to_payload(), other.to_payload())

    def to_payload(self) -> dict[str, Any]:
        return {**self.extra, **{k: self[k] for k in self._keys() if k in self._KEYS}}

    @classmethod
    def from_payload(cls, d: Any, where: str = "") -> "TargetResult":
        if not isinstance(d, Mapping) or not isinstance(d.get("metrics"), Mapping):
            raise AanbenchError(f"{where}: a damaged results file (a target lacks its metrics)")
        known = set(cls._KEYS)
        return cls(metrics=dict(d["metrics"]), folds=dict(d.get("folds") or {}), fits=list(d.get("fits") or []),
                   n_items=d.get("n_items"), n_samples=d.get("n_samples"), n_unusable=d.get("n_unusable"),
                   per_group=d.get("per_group"), extra={k: v for k, v in d.items() if k not in known})


@dataclass(eq=False)
class RunResult(PayloadView):
    """One run of one experiment with one seed on one dataset (see the module docstring)."""

    experiment: str
    model: str
    dataset: str
    protocol: str
    targets: dict[str, TargetResult]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    aanbench_version: str | None = None
    description: str | None = None
    model_version: str | None = None
    model_input: str | None = None  # "rows" | "sequences"
    dataset_config: dict[str, Any] | None = None
    group: str | None = None  # the store group
    items_sha256: str | None = None
    feature_set: str | None = None
    features: list[dict[str, Any]] = field(default_factory=list)  # name, key, dim, provenance
    seed: int | None = None
    device: str | None = None  # where torch models trained (rounding, not configuration)
    environment: dict[str, Any] | None = None  # aanbench.provenance.environment(): versions, threads, CPU kind
    samples: dict[str, Any] | None = None  # the windows (SequenceSpec) and "n"
    params: dict[str, Any] | None = None  # per target: model parameters
    settings: dict[str, Any] | None = None  # per target: runner settings
    # stored rows left out because their bytes are damaged (``--skip-damaged``): per array
    # {"array", "rows", "ids_sha256", "items", "files"} (aanbench.runner.damaged_rows_of); absent when none
    skipped_damaged: list[dict[str, Any]] | None = None
    # stored rows left out because they are not valid for another reason (their extraction failed):
    # per array {"array", "rows", "ids_sha256", "items"} (aanbench.runner.failed_rows_of); absent when none
    failed_rows: list[dict[str, Any]] | None = None
    seconds: float | None = None
    command: str | None = None  # the command line that ran it
    config_fingerprint: str | None = None  # set by write_results (aanbench.runner.config_fingerprint)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    file: str | None = None  # the file it was read from (not written)

    # JSON key order of the files aanbench writes
    _KEYS = ("format", "aanbench_version", "experiment", "description", "model", "model_version", "model_input",
             "dataset", "dataset_config", "group", "items_sha256", "feature_set", "features", "protocol", "seed",
             "device", "environment", "samples", "params", "settings", "skipped_damaged", "failed_rows", "targets",
             "predictions", "seconds", "command", "config_fingerprint")
    _ALWAYS = ("format", "experiment", "model", "dataset", "protocol", "features", "targets", "predictions")

    def _payload_value(self, key: str) -> Any:
        return RESULTS_FORMAT if key == "format" else getattr(self, key)

    def __getitem__(self, key: str) -> Any:
        if key == "_file" and self.file is not None:
            return self.file
        return super().__getitem__(key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunResult):
            return NotImplemented
        return self.to_payload() == other.to_payload()

    @property
    def target_names(self) -> list[str]:
        return list(self.targets)

    def predictions_of(self, target: str) -> list[dict[str, Any]]:
        """The test predictions of ``target``, in file order."""
        return [p for p in self.predictions if p.get("target") == target]

    def to_payload(self) -> dict[str, Any]:
        """The JSON document (plain containers; keys that were never set are left out)."""
        out: dict[str, Any] = {}
        for k in self._keys():
            if k in self._KEYS:
                v = self._payload_value(k)
                out[k] = {t: r.to_payload() for t, r in v.items()} if k == "targets" else v
        return {**self.extra, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_payload(), indent=1, sort_keys=False, default=float)

    @classmethod
    def from_payload(cls, payload: Any, where: str = "") -> "RunResult":
        """Read a results document; ``where`` (the file) names it in errors."""
        where = where or "results document"
        if not isinstance(payload, Mapping):
            raise AanbenchError(f"{where}: not an aanbench results file (holds a {type(payload).__name__})")
        fmt = payload.get("format")
        if fmt != RESULTS_FORMAT:
            if isinstance(fmt, str) and fmt.startswith("aanbench.results/"):
                raise AanbenchError(f"{where}: results format {fmt} is not one this aanbench reads ({RESULTS_FORMAT}); "
                                    "written by a newer aanbench? Upgrade to read it")
            raise AanbenchError(f"{where}: not an aanbench results file (format {RESULTS_FORMAT} expected, "
                                f"found {fmt!r})")
        missing = [k for k in REQUIRED if k not in payload]
        if missing or not isinstance(payload["targets"], Mapping):
            raise AanbenchError(f"{where}: a damaged results file (lacks {missing or ['targets']})")
        p = payload
        known = set(cls._KEYS) | {"_file"}
        return cls(
            experiment=str(p["experiment"]), model=str(p["model"]), dataset=str(p["dataset"]),
            protocol=str(p["protocol"]),
            targets={str(t): TargetResult.from_payload(v, where) for t, v in p["targets"].items()},
            predictions=[dict(r) for r in p.get("predictions") or []],
            **{k: p.get(k) for k in ("aanbench_version", "description", "model_version", "model_input",
                                     "dataset_config", "group", "items_sha256", "feature_set", "seed", "device",
                                     "environment", "samples", "params", "settings", "skipped_damaged", "failed_rows",
                                     "seconds", "command", "config_fingerprint")},
            features=[dict(f) for f in p.get("features") or []],
            extra={k: v for k, v in p.items() if k not in known},
            file=p.get("_file"),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "RunResult":
        """Read a results file (a clear error naming it when it is not one)."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AanbenchError(f"{path}: not a readable results file ({exc})") from None
        doc = cls.from_payload(payload, str(path))
        doc.file = str(path)
        return doc


def is_results_payload(payload: Any) -> bool:
    """Whether a JSON value claims to be an aanbench results document (any version)."""
    return isinstance(payload, Mapping) and str(payload.get("format", "")).startswith("aanbench.results/")
