"""The application layer: what the ``aanbench`` commands do, as plain
functions a notebook calls too (:mod:`aanbench.api` re-exports them). Each
takes progress callbacks (or an events object) and returns a typed result;
none imports Typer or Rich (the CLI, :mod:`aanbench.cli`, parses, calls
these, prints and draws progress)::

    from aanbench.api import benchmark
    res = benchmark("demo", ".aanbench-demo/store", "results", "leaderboard.md")
    [(r.experiment, r.metrics["valence"]["ccc"]) for r in res.runs]
"""

from aanbench.curve import DEMO_WARNING, CurveModel, FilmCurve, load_models
from aanbench.extraction_job import ExtractionInterrupted
from aanbench.workflows._shared import configure_experiment, parse_options, plugins, registry, resolve_dataset
from aanbench.workflows.benchmark import (
    BenchmarkEvents,
    BenchmarkResult,
    NothingRan,
    RunFailure,
    Skip,
    benchmark,
    benchmark_experiments,
    existing_run,
)
from aanbench.workflows.curve import check_curve_request, curve, demo_curve, demo_film, film_curve, film_dataset, film_segmentation
from aanbench.workflows.demo import DemoEvents, DemoResult, demo, demo_experiments, demo_prerequisites
from aanbench.workflows.extract import extract, extract_summary
from aanbench.workflows.fits import check_device, fit_backend, one_blas_thread
from aanbench.workflows.predict import PredictionsWritten, model_info, named_models, predict
from aanbench.workflows.run import (
    ExperimentRun,
    TrainedBundle,
    check_format,
    default_leaderboard,
    leaderboard,
    needed_features,
    resolve_experiment,
    run,
    train,
)
from aanbench.workflows.store import ImportedArray, experiment_settings, import_h5, store_summary, verify as verify_store
from aanbench.workflows.datasets import check_dataset, make_fixture

__all__ = [
    "DEMO_WARNING", "ExtractionInterrupted", "check_dataset", "CurveModel", "FilmCurve", "leaderboard", "load_models", "model_info",
    "BenchmarkEvents", "BenchmarkResult", "check_curve_request", "DemoEvents", "DemoResult", "ExperimentRun", "ImportedArray",
    "PredictionsWritten", "RunFailure", "TrainedBundle", "benchmark", "benchmark_experiments", "check_device",
    "curve", "demo", "demo_curve", "demo_experiments", "demo_film", "demo_prerequisites", "extract",
    "extract_summary", "film_curve", "film_dataset", "film_segmentation", "fit_backend", "import_h5",
    "one_blas_thread", "parse_options", "plugins", "predict", "registry", "resolve_dataset", "run",
    "store_summary", "train", "NothingRan", "Skip", "existing_run", "configure_experiment", "check_format",
    "default_leaderboard", "needed_features", "resolve_experiment", "named_models", "make_fixture", "experiment_settings", "verify_store",
]
