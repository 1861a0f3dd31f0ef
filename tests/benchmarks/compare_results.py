"""Compare two benchmark results folders prediction by prediction, bit for bit
(issue 26: which settings change numbers?).

    python tests/benchmarks/compare_results.py RESULTS_A RESULTS_B

For every ``DATASET/EXPERIMENT/seedN.json`` in both: the number of
predictions whose float64 ``y_pred`` differs, the largest difference, and the
metrics (MSE, r) of each side. Exit 1 when any prediction differs."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path) -> dict:
    d = json.loads(path.read_text())
    preds = {(p["item_id"], p.get("start"), p["target"] if "target" in p else None, i): p["y_pred"]
             for i, p in enumerate(d["predictions"])}
    return {"preds": preds, "metrics": {t: v.get("metrics", {}) for t, v in d.get("targets", {}).items()}}


def main(a: Path, b: Path) -> int:
    differ = 0
    for fa in sorted(a.glob("*/*/seed*.json")):
        fb = b / fa.relative_to(a)
        if not fb.is_file():
            print(f"{fa.relative_to(a)}: only in {a}")
            continue
        da, db = load(fa), load(fb)
        keys = sorted(set(da["preds"]) & set(db["preds"]), key=str)
        diffs = [abs(da["preds"][k] - db["preds"][k]) for k in keys if da["preds"][k] != db["preds"][k]]
        differ += bool(diffs)
        ms = "; ".join(f"{t} mse {da['metrics'][t].get('mse', float('nan')):.6f}/{db['metrics'][t].get('mse', float('nan')):.6f}"
                       f" r {da['metrics'][t].get('pearson_r', float('nan')):.6f}/{db['metrics'][t].get('pearson_r', float('nan')):.6f}"
                       for t in sorted(da["metrics"]) if t in db["metrics"])
        print(f"{str(fa.relative_to(a)):45s} {len(diffs):4d}/{len(keys)} predictions differ"
              + (f", max {max(diffs):.3g}" if diffs else "") + f"  [{ms}]")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
