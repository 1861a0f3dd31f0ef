"""Hook specifications: the one door through which every extractor, dataset
and model enters aanbench, built-in or third-party.

A plugin is a module (or object) with functions marked ``@aanbench.hookimpl``
and named like the specifications below, exposed through the ``aanbench``
entry-point group of its distribution::

    [project.entry-points.aanbench]
    my_extractor = "my_package.my_module"

Each hook returns a list; aanbench gathers the lists of all plugins.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("aanbench")
hookimpl = pluggy.HookimplMarker("aanbench")


@hookspec
def aanbench_extractors():
    """Return a list of :class:`aanbench.contracts.Extractor` instances.

    Constructing them must be cheap (no weights read, no network built);
    ``Extractor.load`` does that once per worker. Names must be unique across
    all plugins.
    """


@hookspec
def aanbench_datasets():
    """Return a list of :class:`aanbench.contracts.Dataset` instances."""


@hookspec
def aanbench_models():
    """Return a list of :class:`aanbench.contracts.ModelSpec`."""


@hookspec
def aanbench_commands(cli):
    """Add commands to the CLI. ``cli`` is a :class:`aanbench.cli.CliGroups`
    with the Typer apps ``root``, ``store``, ``models`` and ``datasets``;
    register commands on them with ``@cli.models.command(...)``.
    Return nothing."""
