"""Where the fits of ``run`` and ``benchmark`` run: one choice, by name, as
for extraction's backends. ``local`` (:class:`aanbench.backends.fits_local.LocalFits`)
or ``ray`` (:class:`aanbench.backends.fits_ray.RayFits`); both take runs and
give results documents (or the exception that stopped a run)."""

from __future__ import annotations

import contextlib
from typing import Any

from aanbench.contracts import AanbenchError

FIT_BACKENDS = ("local", "ray")


def fit_backend(name: str = "local", *, address: str | None = None, workers: int | None = None,
                device: str = "cpu", threads: int | None = None) -> Any:
    """The fit backend ``name`` with its options, checked before any work:
    ``address`` and ``workers`` are Ray's; Ray fits run on one CPU thread
    each, so a GPU ``device`` or ``threads`` other than 1 is refused there."""
    if name not in FIT_BACKENDS:
        raise AanbenchError(f"unknown backend {name!r} (known: {', '.join(FIT_BACKENDS)})")
    if name == "local":
        if address or workers is not None:
            raise AanbenchError("--address and --workers are options of --backend ray")
        from aanbench.backends.fits_local import LocalFits

        return LocalFits(device=device, threads=threads)
    if workers is not None and workers < 1:
        raise AanbenchError(f"--workers must be at least 1, not {workers}")
    if device != "cpu":
        raise AanbenchError(f"--device {device} is not available with --backend ray (Ray fits run on CPU workers); "
                            "train on the GPU with the local backend")
    if threads is not None and threads != 1:
        raise AanbenchError(f"--threads {threads} is not available with --backend ray (each Ray task trains on one "
                            "CPU thread; give Ray more --workers instead)")
    from aanbench.backends.fits_ray import RayFits

    return RayFits(address=address, workers=workers)


def one_blas_thread() -> Any:
    """BLAS on one thread while a benchmark fits its small models: on a shared
    2-core machine a threaded SVD of a 108 x 1739 matrix took 33 times longer
    (4.9 s against 0.15 s for seven) than on one thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its threads
        return contextlib.nullcontext()
    return threadpool_limits(1)


def check_device(device: str) -> str:
    """``device`` checked before any work (e.g. cuda where torch has none)."""
    from aanbench.runner import check_device as _check

    return _check(device)
