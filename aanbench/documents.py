"""What aanbench's typed documents share (:class:`aanbench.bundle.ModelBundle`,
:class:`aanbench.results.RunResult`): a read-only mapping view of their
payload keys, for code written against the payload dict, and deep equality of
payload values (tensors and arrays by value)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator


class PayloadView(Mapping):
    """Read-only ``Mapping`` over a document's payload keys (``_KEYS``), each
    read from its attribute in payload form (:meth:`_payload_value`); an
    optional key whose attribute is ``None`` is absent, as in the payload."""

    _KEYS: tuple[str, ...] = ()

    _ALWAYS: tuple[str, ...] = ()  # keys present even when None

    def _keys(self) -> list[str]:
        return [k for k in self._KEYS if k in self._ALWAYS or getattr(self, k, None) is not None] + \
            list(getattr(self, "extra", {}) or {})

    def _payload_value(self, key: str) -> Any:
        return getattr(self, key)

    def __getitem__(self, key: str) -> Any:
        if key in self._KEYS and (key in self._ALWAYS or getattr(self, key, None) is not None):
            return self._payload_value(key)
        extra = getattr(self, "extra", None) or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    __hash__ = None  # mutable dataclasses; equality is the dataclass's


def same_payload(a: Any, b: Any) -> bool:
    """Deep equality of payload values (tensors and arrays compared by value)."""
    import numpy as np

    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_payload(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_payload(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape") or hasattr(b, "shape"):
        try:
            a_, b_ = np.asarray(a), np.asarray(b)
        except Exception:
            return False
        return a_.shape == b_.shape and a_.dtype == b_.dtype and bool(np.array_equal(a_, b_, equal_nan=True))
    return a == b
