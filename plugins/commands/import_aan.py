"""Convert the published AttendAffectNet checkpoints into aanbench model files:
the command ``aanbench models import-aan``.

The converter itself (reading the legacy pickle with
:mod:`aanbench.pluginkit.legacy_pickle`, checking the stored forward passes, writing an
:mod:`aanbench.modelfile`) is :mod:`aanbench_plugins.commands._aan_legacy_convert`; see
its documentation. It imports torch, so this module, which every CLI call
loads to register the command, imports it only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aanbench import hookimpl

# --------------------------------------------------------------------------
# CLI


@hookimpl
def aanbench_commands(cli: Any) -> None:
    import typer

    # CliGroups.command turns an AanbenchError into a one-line message + exit 2.
    register = cli.command(cli.models, "import-aan") if hasattr(cli, "command") else cli.models.command("import-aan")

    @register
    def import_aan(
        checkpoint: Path = typer.Argument(..., help="legacy AttendAffectNet checkpoint (.pth)"),
        out: Path = typer.Option(..., "--out", help="aanbench model file to write"),
        target: str | None = typer.Option(None, "--target", help="arousal|valence, when the file name lacks it"),
    ) -> None:
        """Convert a published AttendAffectNet checkpoint (legacy torch.save of a
        whole module) into an aanbench model file, without running code from it."""
        from aanbench.modelfile import load_model
        from aanbench_plugins.commands._aan_legacy_convert import convert_checkpoint

        path = convert_checkpoint(checkpoint, out, target)
        payload = load_model(path)
        cfg = payload["state"]["config"]
        typer.echo(f"converted {checkpoint.name} ({payload['provenance']['variant']}, {payload['target']}, "
                   f"inputs {', '.join(payload['features'])}, head {cfg['head_activation']}, "
                   f"feed-forward {cfg['feed_forward']}) -> {path}")
