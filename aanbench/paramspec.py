"""Typed parameter specifications: what values a setting may take.

A model plugin declares one :class:`Param` per parameter it accepts
(``ModelSpec.param_specs``); the runner declares its own settings
(:data:`RUNNER_PARAM_SPECS`). The registry checks every value of an
experiment against them when it is resolved for a run
(:func:`aanbench.registry.check_params`), so ``max_epochs = -5`` or
``val_fraction = 5.0`` is refused before anything is computed, with one line
naming the file, the experiment, the key, the value and what is allowed.

Per-target tables (``batch_size = { valence = 20, arousal = 40 }``) are
checked target by target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# the longest window (in rows) a sequence model may be given: a COGNIMUSE
# movie holds about 400 five-second segments, EIMT16's longest film fewer;
# beyond this a window would only allocate memory (1e9 rows: 7.45 GiB)
MAX_SEQUENCE_ROWS = 4096


@dataclass(frozen=True)
class Param:
    """One parameter's type and range.

    ``kind``: ``"int"``, ``"float"`` (ints accepted), ``"bool"``, ``"str"`` or
    ``"list"`` (of ``item``); ``ge``/``gt``/``le``/``lt``: bounds for numbers
    (and list items via ``item``); ``choices``: the allowed values (for
    strings, or a number-or-string parameter with ``kind="float"``);
    ``nonempty``: for lists; ``optional``: ``None`` allowed (unset)."""

    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] = ()
    item: "Param | None" = None
    nonempty: bool = False
    optional: bool = False

    def describe(self) -> str:
        """What is allowed, in words (``an integer >= 1``, ``a number > 0 and < 1``, ...)."""
        if self.kind == "list":
            inner = self.item.describe() if self.item else "values"
            text = f"a {'non-empty ' if self.nonempty else ''}list of {_plural(inner)}"
        else:
            text = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}[self.kind]
            bounds = [f"{op} {_num(v)}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                      if v is not None]
            if bounds:
                text += " " + " and ".join(bounds)
            if self.choices:
                listed = ", ".join(repr(c) for c in self.choices)
                text = f"one of {listed}" if self.kind == "str" else f"{text}, or one of {listed}"
        if self.optional:
            text += " (or unset)"
        return text

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else a short reason."""
        if value is None:
            return None if self.optional else "a value is required"
        if self.choices and value in self.choices and not isinstance(value, bool):
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else "not true/false"
        if self.kind == "str":
            return None if isinstance(value, str) and not self.choices else "not allowed"
        if self.kind == "list":
            if not isinstance(value, (list, tuple)):
                return "not a list"
            if self.nonempty and not value:
                return "empty"
            if self.item is not None:
                for x in value:
                    if self.item.problem(x) is not None:
                        return f"item {x!r} is not {self.item.describe()}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "not a number"
        if self.kind == "int" and not isinstance(value, int):
            return "not an integer"
        if not math.isfinite(value):
            return "not finite"
        if self.ge is not None and value < self.ge or self.gt is not None and value <= self.gt \
                or self.le is not None and value > self.le or self.lt is not None and value >= self.lt:
            return "out of range"
        return None


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def _plural(s: str) -> str:
    for a in ("an integer", "a number", "a string"):
        if s.startswith(a):
            return a.split(" ", 1)[1] + "s" + s[len(a):]
    return s


def Int(ge: int | None = None, le: int | None = None, optional: bool = False) -> Param:
    return Param("int", ge=ge, le=le, optional=optional)


def Float(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
          choices: Sequence[Any] = (), optional: bool = False) -> Param:
    return Param("float", ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices), optional=optional)


def Bool() -> Param:
    return Param("bool")


def Str(*choices: str, optional: bool = False) -> Param:
    return Param("str", choices=tuple(choices), optional=optional)


def ListOf(item: Param, nonempty: bool = True) -> Param:
    return Param("list", item=item, nonempty=nonempty)


# The shared torch trainer's settings (Adam, early stopping on validation)
TRAINER_PARAM_SPECS: dict[str, Param] = {
    "lr": Float(gt=0, le=10),
    "max_epochs": Int(ge=1),
    "patience": Int(ge=1),
    "batch_size": Int(ge=1),
    "weight_decay": Float(ge=0),
}

# The runner's own settings (aanbench.runner.RUNNER_SETTINGS)
RUNNER_PARAM_SPECS: dict[str, Param] = {
    # 0: no validation split (carve_validation's documented case: no early
    # stopping, e.g. a fixed ridge alpha); 1 or more would leave nothing to fit
    "val_fraction": Float(ge=0, lt=1),
    "standardize": Bool(),
    "sequence_length": Param("int", ge=1, le=MAX_SEQUENCE_ROWS, optional=True),
    "sequence_stride": Param("int", ge=1, le=MAX_SEQUENCE_ROWS, optional=True),
    "sequence_scope": Str("file", "group", optional=True),
    "sequence_label": Str("last", "mean", optional=True),
    "sequence_start": Str("drop", "pad", optional=True),
}

# Seeds (a run's ``seed``, ``--seed``): any integer >= 0
SEED = Int(ge=0)


def check_value(spec: Param, value: Any) -> str | None:
    """The problem with ``value`` (or with one target's value of a per-target
    table, named), or None."""
    if isinstance(value, Mapping):
        for target, v in value.items():
            p = spec.problem(v)
            if p is not None:
                return f"{target} = {v!r}: {p}"
        return None
    p = spec.problem(value)
    return None if p is None else f"{value!r}: {p}"
