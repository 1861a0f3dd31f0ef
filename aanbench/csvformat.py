"""How aanbench writes numbers into CSV files (``predict``'s predictions,
``curve``'s emotion curve): one function, so every CSV reads alike.

:func:`number_cell` writes a finite number as Python's shortest round-trip
``repr`` of it as a float64 (``0.1`` stays ``0.1``; a ``float32`` prediction
such as ``0.3`` becomes ``0.30000001192092896``, the float64 value it
holds), and NaN or an infinity as an empty cell. Round-trip exact:
``float(cell)`` gives back the very value computed, so whoever scores a
predictions file scores the model's numbers, not a rounding of them
(``%.6g`` would cut a float32 to 6 of its ~7 significant digits).
"""

from __future__ import annotations

import math
from typing import Any


def number_cell(v: Any) -> str:
    """``repr(float(v))`` for a finite number, ``""`` for NaN/inf (an open
    window bound, a sample left out)."""
    v = float(v)
    return repr(v) if math.isfinite(v) else ""
