"""Published numbers ("reported, not re-run") for the leaderboards.

One CSV per dataset in ``aanbench/data/reported/`` (``leaderboards/reported``
in the repository points there): ``method, citation, features, protocol,
arousal_mse, arousal_pcc, valence_mse, valence_pcc, twin, inputs, note``.
``twin`` names the aanbench experiment that re-runs the same method, so a
leaderboard can show both; ``inputs`` says how the authors fed their
features (``raw``: unstandardised; empty: not known or no features), so
that a twin's line can say where aanbench's default differs; ``note`` says
where the protocol differs and what is and is not verified.
Sources: ``../shared/design/REPORTED.md``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ["method", "citation", "features", "protocol", "arousal_mse", "arousal_pcc", "valence_mse",
           "valence_pcc", "twin", "inputs", "note"]
INPUTS = ("", "raw", "standardised")

# next to a twin whose authors fed raw features (aanbench's runner standardises by default)
RAW_INPUTS_NOTE = ("aanbench standardises features with training statistics by default, the authors fed raw ones "
                   "(`standardize = false` reproduces theirs)")


def reported_path(dataset: str) -> Path | None:
    p = Path(str(resources.files("aanbench") / "data" / "reported" / f"{dataset}.csv"))
    return p if p.is_file() else None


def load_reported(dataset: str) -> pd.DataFrame | None:
    """The published rows for ``dataset`` (``None`` when it has none)."""
    path = reported_path(dataset)
    if path is None:
        return None
    df = pd.read_csv(path, dtype={"twin": str, "inputs": str, "note": str}, keep_default_na=True)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for c in ("twin", "inputs", "note"):
        df[c] = df[c].fillna("")
    bad = sorted(set(df["inputs"]) - set(INPUTS))
    if bad:
        raise ValueError(f"{path}: column inputs: {', '.join(map(repr, bad))} (expected one of {INPUTS})")
    return df[COLUMNS]


def _num(v: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(v) else f"{v:.{digits}f}"


def reported_markdown(dataset: str, targets: tuple[str, ...] = ("valence", "arousal"),
                      ran: set[str] | frozenset[str] = frozenset()) -> str:
    """A markdown section of the published rows (empty string when none).
    ``ran``: experiments this leaderboard ran; their reported twins say so."""
    df = load_reported(dataset)
    if df is None or df.empty:
        return ""
    head = ["method"]
    for t in targets:
        head += [f"{t} MSE", f"{t} r"]
    head += ["features", "source", "note"]
    lines = ["## Reported, not re-run", "",
             "Published numbers, copied from their sources (not computed by aanbench, and not ranked with "
             "the rows above); a note says where the protocol differs.", "",
             "| " + " | ".join(head) + " |",
             "| --- | " + " | ".join("---:" for _ in range(2 * len(targets))) + " | --- | --- | --- |"]
    for _, r in df.iterrows():
        note = r["note"]
        if r["twin"]:
            twin = f"re-run here as `{r['twin']}`" if r["twin"] in ran else f"aanbench experiment `{r['twin']}`"
            if r["inputs"] == "raw":
                twin += f" ({RAW_INPUTS_NOTE})"
            note = f"{twin}; {note}" if note else twin
        cells = [str(r["method"])]
        for t in targets:
            cells += [_num(r[f"{t}_mse"]), _num(r[f"{t}_pcc"])]
        cells += [str(r["features"]), str(r["citation"]), note]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
