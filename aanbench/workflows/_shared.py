"""What every workflow needs: the plugins, the registry, a configured dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from aanbench.contracts import AanbenchError, Dataset


def plugins():
    """The plugin manager's view of the installed plugins (loaded once)."""
    from aanbench.plugin_manager import get_plugins

    return get_plugins()


def registry(path: str | Path | None = None):
    """The built-in registry plus ``path`` (or ``$AANBENCH_REGISTRY``)."""
    from aanbench.registry import load_registry

    return load_registry(Path(path) if path is not None else None)


def parse_options(options: Sequence[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings (or a mapping) as a dict of dataset options."""
    if isinstance(options, Mapping):
        return {str(k): str(v) for k, v in options.items()}
    out: dict[str, str] = {}
    for o in options or []:
        if "=" not in o:
            raise AanbenchError(f"--option expects KEY=VALUE, got {o!r}")
        k, v = o.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def resolve_dataset(dataset: str | Dataset, options: Sequence[str] | Mapping[str, Any] | None = None, *,
                    labelled: bool = False) -> Dataset:
    """The dataset plugin named ``dataset`` (or ``dataset`` itself), configured
    with ``options``; ``labelled``: refuse one that has no labels (a dataset
    a command that trains cannot use)."""
    ds = plugins().dataset(dataset) if isinstance(dataset, str) else dataset
    name = getattr(ds, "name", dataset)
    opts = parse_options(options)
    if opts:
        configure = getattr(ds, "configure", None)
        if configure is None:
            raise AanbenchError(f"dataset {name!r} takes no options (got {', '.join(opts)})")
        ds = configure(**opts)
    if labelled:
        from aanbench.registry import require_labelled

        require_labelled(ds)
    return ds


def extractor_names(extractors: str | Sequence[str] | None) -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` as a list of names; None for every installed one."""
    if extractors is None:
        return None
    if isinstance(extractors, str):
        names = [n.strip() for n in extractors.split(",") if n.strip()]
        return names or None
    return list(extractors)


def check_feature_set(name: str | None, reg: Any) -> None:
    """A clear error, before any work, for a ``--features`` name the registry lacks."""
    if name is not None and name not in reg.feature_sets:
        raise AanbenchError(f"--features: no feature set {name!r} (known: {', '.join(sorted(reg.feature_sets))}; "
                            "see `aanbench experiments`)")


def check_protocol(name: str | None) -> None:
    """A clear error, before any work, for an unknown ``--protocol``."""
    if name is not None:
        from aanbench.protocols import get_protocol

        get_protocol(name)


def configure_experiment(exp: Any, reg: Any, *, features: str | None = None, protocol: str | None = None,
                         installed: Any = None) -> Any:
    """``exp`` (an :class:`aanbench.registry.ExperimentConfig` resolved for a
    dataset) run on the registry's feature set ``features`` and/or with
    ``protocol`` instead of its own (``None``: keep it; an experiment without
    a protocol uses its dataset's). The results record both, so the
    leaderboard row says which. A ``fusion_groups`` parameter (indices into
    the feature set: one late-fused model per group) is regrouped by the new
    set's modalities (video, audio), as the registry groups the paper sets.

    A single-modality experiment (every feature of its own set video, or
    every one audio: ``feature-aan-video``) keeps its modality: it runs on
    the features of ``features`` of that modality, named as the registry's
    set of exactly those features where there is one (``weightfree-both``
    for a video experiment: ``weightfree-video``), else ``SET (video part)``,
    so that its row never reads as a video model while it saw the audio too.
    Where ``features`` has none of that modality, :class:`AanbenchError`
    says so (``benchmark`` skips the experiment with that reason)."""
    from dataclasses import replace

    check_feature_set(features, reg)
    check_protocol(protocol)
    if protocol is not None:
        exp = replace(exp, protocol=protocol)
    if features is None or features == exp.feature_set:
        return exp
    extractors = (installed or plugins()).extractors
    names = tuple(reg.feature_sets[features])
    label = features
    own = {getattr(extractors.get(n), "modality", None) for n in exp.features}
    if len(own) == 1 and None not in own:  # a single-modality experiment keeps its modality
        [modality] = own
        part = tuple(n for n in names if getattr(extractors.get(n), "modality", None) == modality)
        if not part:
            raise AanbenchError(f"{exp.name} reads {modality} features only, and feature set {features} "
                                f"({', '.join(names)}) has none")
        if part != names:
            same = [k for k, v in reg.feature_sets.items() if tuple(v) == part]
            label = same[0] if same else f"{features} ({modality} part)"
            names = part
    if label == exp.feature_set:
        return exp
    params = dict(exp.params)
    if isinstance(params.get("fusion_groups"), list) and params["fusion_groups"]:
        by_modality: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            by_modality.setdefault(str(getattr(extractors.get(n), "modality", n)), []).append(i)
        params["fusion_groups"] = list(by_modality.values())
    return replace(exp, feature_set=label, features=names, params=params)
