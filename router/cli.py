"""The `hybrid-router` command: serve, check policies, and the specialists' offline tools.

The only argv reader. `serve` builds `Settings` (environment plus the options given here) and
runs uvicorn; `train`, `eval` and `specialists-build` forward to `specialists.training`, imported
only when those commands run, so the serving process never loads training libraries.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["main", "app"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hybrid Router: specialists first, "
                  "foundation models when needed.")
policy_app = typer.Typer(no_args_is_help=True, help="Routing policy tools.")
app.add_typer(policy_app, name="policy")

_FORWARD: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ROUTER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (ROUTER_PORT).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (ROUTER_POLICY_PATH).")] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    from .app import create_app
    from .settings import Settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if policy is not None:
        overrides["policy_path"] = policy
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(settings)
    uvicorn.run(application, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                access_log=False, loop="uvloop", http="httptools")


@policy_app.command("check")
def policy_check(
    files: Annotated[list[Path], typer.Argument(help="Policy files to validate.")],
    specialists_dir: Annotated[Path | None, typer.Option(help="Specialists to check names against.")] = None,
) -> None:
    """Validate policy files exactly as the server does at start-up and on reload."""
    from specialists import SpecialistSet

    from .policy import PolicyConfigError, load_policy
    from .settings import Settings

    directory = specialists_dir or Settings().specialists_dir
    specialists = SpecialistSet.load(directory)
    classes = {n: specialists[n].classes for n in specialists}
    failed = False
    for f in files:
        try:
            loaded = load_policy(f, classes)
        except PolicyConfigError as exc:
            failed = True
            typer.echo(str(exc), err=True)
            continue
        typer.echo(f"{f}: ok (version {loaded.version}, {len(loaded.policy.routes)} routes, "
                   f"{len(loaded.policy.aliases)} aliases)")
    raise typer.Exit(1 if failed else 0)


def _forward(command: str, args: list[str]) -> None:
    from specialists.training.cli import main as training_main

    raise typer.Exit(training_main([command, *args]))


@app.command(context_settings=_FORWARD)
def train(ctx: typer.Context) -> None:
    """Train, calibrate and export one specialist (see `hybrid-router train --help`)."""
    _forward("train", ctx.args)


@app.command("eval", context_settings=_FORWARD)
def evaluate(ctx: typer.Context) -> None:
    """Evaluate the bundled specialists on their test splits; write reliability / risk-coverage PNGs."""
    _forward("eval", ctx.args)


@app.command("specialists-build", context_settings=_FORWARD)
def specialists_build(ctx: typer.Context) -> None:
    """Rebuild the bundled specialists from ../shared/data."""
    _forward("build", ctx.args)


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="hybrid-router")
