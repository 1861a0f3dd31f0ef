"""Evaluation protocols: which samples train and which test, fold by fold,
and the validation split carved from training data only.

Everything here works on sample indices with one ``split`` and one
``group`` per sample (a sample is one stored row, or a window of rows
that never crosses a group or a split: :mod:`aanbench.samples`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from aanbench.contracts import AanbenchError


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray  # sample indices
    test: np.ndarray


class FixedSplit:
    """The dataset's own train/test split (``Item.split``)."""

    name = "fixed"

    def folds(self, splits: np.ndarray, groups: np.ndarray) -> Iterator[Fold]:
        train = np.flatnonzero(splits == "train")
        test = np.flatnonzero(splits == "test")
        if not len(train) or not len(test):
            raise AanbenchError(
                f"fixed split needs items marked train and test (found {len(train)} train, {len(test)} test)"
            )
        yield Fold("test", train, test)

    def training_pool(self, splits: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """What a final model trains on (``aanbench train``): the train split."""
        train = np.flatnonzero(splits == "train")
        if not len(train):
            raise AanbenchError("fixed split: no samples marked train")
        return train


class LeaveOneGroupOut:
    """One fold per group (movie): that group tests, all others train."""

    name = "leave-one-group-out"

    def folds(self, splits: np.ndarray, groups: np.ndarray) -> Iterator[Fold]:
        names = sorted(set(groups.tolist()) - {""})
        if len(names) < 2:
            raise AanbenchError(f"leave-one-group-out needs at least 2 groups, found {len(names)}")
        for g in names:
            yield Fold(g, np.flatnonzero(groups != g), np.flatnonzero(groups == g))

    def training_pool(self, splits: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """What a final model trains on (``aanbench train``): every group,
        except samples the dataset itself marks ``test`` (the demo's held-out
        movies stay unseen, e.g. for a curve of them)."""
        pool = np.flatnonzero(np.asarray(splits) != "test")
        if not len(pool):
            raise AanbenchError("leave-one-group-out: every sample is marked test; nothing to train on")
        return pool


PROTOCOLS = {"fixed": FixedSplit, "leave-one-group-out": LeaveOneGroupOut}


def get_protocol(name: str):
    if name == "none":
        raise AanbenchError("the dataset is unlabelled: nothing to train or evaluate; "
                            "use `aanbench predict MODEL --dataset ...` to apply a trained model")
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise AanbenchError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)})") from None


def carve_validation(train: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training samples into (fit, validation), from training samples only.

    ``train``: sample indices; ``groups``: one group per sample. When the
    training samples span at least 3 groups, whole groups go to validation
    (so one movie's samples never sit on both sides); otherwise single
    samples. About ``fraction`` of the samples, at least one group / sample:
    groups are added (in a seeded random order) while the next one brings
    the validation size nearer to ``fraction`` of the samples, i.e. the
    fraction rounds to the nearest whole movie (10% of 11 equal movies is
    one movie, not two).
    """
    train = np.asarray(train)
    if fraction <= 0 or len(train) < 4:
        return train, train[:0]
    rng = np.random.default_rng(seed)
    tg = groups[train]
    names = sorted(set(tg.tolist()) - {""})
    if len(names) >= 3:
        order = rng.permutation(len(names))
        chosen: list[str] = []
        count = 0
        target = fraction * len(train)
        for i in order:
            size = int((tg == names[i]).sum())
            if len(chosen) >= len(names) - 1:
                break
            if chosen and abs(count + size - target) >= abs(count - target):
                break
            chosen.append(names[i])
            count += size
        is_val = np.isin(tg, chosen)
    else:
        k = max(1, int(round(fraction * len(train))))
        is_val = np.zeros(len(train), dtype=bool)
        is_val[rng.permutation(len(train))[:k]] = True
    return train[~is_val], train[is_val]
