"""Fits in this process: the ``local`` choice of
:func:`aanbench.workflows.fit_backend` (``aanbench run|benchmark --backend
local``, the default). :class:`aanbench.backends.fits_ray.RayFits` is the
other; both take the same runs and give the same results documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from aanbench.contracts import Dataset
from aanbench.plugin_manager import Plugins
from aanbench.registry import ExperimentConfig
from aanbench.store import DatasetGroup


class LocalFits:
    """Each run trained here, one after another (:func:`aanbench.runner.run_experiment`).

    ``device``: torch device of torch models (cpu, cuda, cuda:N);
    ``threads``: CPU threads of a batched stack's first layer (None: every
    CPU this process may use; any number gives the same numbers)."""

    name = "local"

    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        self.device = device
        self.threads = threads

    def run(
        self,
        runs: Sequence[tuple[ExperimentConfig, int | None]],
        dataset: Dataset,
        group: DatasetGroup,
        plugins: Plugins,
        *,
        sequential: bool = False,
        save_models: Path | None = None,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        on_result: Callable[[int, dict[str, Any] | BaseException], None] | None = None,
    ) -> list[dict[str, Any] | BaseException]:
        """Each ``(experiment, seed)`` of ``runs`` (seed None: the
        experiment's own); returns, in order, each run's results document or
        the exception that stopped it (the other runs go on; Ctrl-C stops
        all). ``on_start(i)`` before run ``i``, ``on_progress(done, total,
        "target / fold")`` as its fits end, ``on_result(i, doc_or_exception)``
        after it."""
        from aanbench.runner import run_experiment

        out: list[dict[str, Any] | BaseException] = []
        for i, (exp, seed) in enumerate(runs):
            if on_start is not None:
                on_start(i)

            def on_fit(target: str, fold: str, done: int, total: int) -> None:
                if on_progress is not None:
                    on_progress(done, total, f"{target} / {fold}")

            try:
                got: dict[str, Any] | BaseException = run_experiment(
                    exp, dataset, group, plugins, seed=seed, save_models=save_models, on_fit=on_fit,
                    sequential=sequential, device=self.device, threads=self.threads)
            except Exception as exc:  # a clear error, or a bug in a model plugin: this run fails, the others go on
                got = exc
            out.append(got)
            if on_result is not None:
                on_result(i, got)
        return out
