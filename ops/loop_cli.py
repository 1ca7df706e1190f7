"""The learning loop's commands (`distill`, `promote`, `rollback`), registered on `hybrid-router`.

Kept apart from `cli.py` so the loop reads as one place; the work is in `distill.py` and
`promote.py`, imported only when a command runs (training code never enters the server).
Exit codes: 0 done, 2 bad input or refused switch, 3 refused on the evidence (a foundation model
measured weaker than the specialist; a candidate worse on held-out data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

_POLICY = Annotated[Path | None, typer.Option(help="Policy file (default ROUTER_POLICY_PATH).")]
_ROUTE = Annotated[str, typer.Option(help="Classification route.")]
_SPECIALISTS = Annotated[Path | None, typer.Option(help="Bundled specialists directory (default "
                                                   "ROUTER_SPECIALISTS_DIR).")]


def _policy_path(policy: Path | None) -> tuple[Path, Path]:
    from router.settings import Settings

    settings = Settings()
    return (policy or settings.policy_path), settings.specialists_dir


def distill(
    route: _ROUTE,
    out: Annotated[Path, typer.Option(help="Directory for the candidate (new or empty; never the bundled one).")],
    policy: _POLICY = None,
    data_root: Annotated[Path | None, typer.Option(help="Shared datasets (default ../shared/data).")] = None,
    train_data: Annotated[Path | None, typer.Option(help="JSONL {text,label}: original training data "
                                                    "instead of the recipe's.")] = None,
    heldout_data: Annotated[Path | None, typer.Option(help="JSONL {text,label}: held-out data instead of "
                                                      "the recipe's test split.")] = None,
    spot_labels: Annotated[Path | None, typer.Option(help="JSONL {text or request_id, label}: operator labels "
                                                     "of logged inputs.")] = None,
    foundation_weight: Annotated[float, typer.Option(help="Loss weight of a foundation-labelled row.")] = 1.0,
    holdout_share: Annotated[float, typer.Option(help="Share of escalations held out.")] = 0.2,
    min_checks: Annotated[int, typer.Option(help="Measurements needed before the foundation model can be "
                                            "judged weaker.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the escalation hold-out.")] = 0,
    specialists_dir: _SPECIALISTS = None,
) -> None:
    """Train a candidate specialist from the original data plus the route's logged escalations."""
    from router.policy import PolicyConfigError
    from router.settings import Settings
    from specialists import SpecialistError

    from .distill import DistillError, DistillRequest, FoundationWeakerError
    from .distill import distill as run

    settings = Settings()
    if not settings.redis.configured:
        typer.echo("error: set ROUTER_REDIS__URL (the escalation stream lives in Redis)", err=True)
        raise typer.Exit(2)
    req = DistillRequest(policy_path=policy or settings.policy_path, route=route, out=out, redis=settings.redis,
                         data_root=data_root, train_data=train_data, heldout_data=heldout_data,
                         spot_labels=spot_labels, foundation_weight=foundation_weight, holdout_share=holdout_share,
                         min_checks=min_checks, seed=seed, specialists_dir=specialists_dir or settings.specialists_dir)
    try:
        result = run(req)
    except FoundationWeakerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc
    except (DistillError, PolicyConfigError, SpecialistError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    h, e = result["heldout"], result["escalations_held_out"]
    typer.echo(f"candidate {result['candidate']['version']} written to {out}\n"
               f"held-out accuracy: serving {h['serving_accuracy']}, candidate {h['candidate_accuracy']} ({h['n']} rows)\n"
               f"held-out escalations: agreement serving {e['serving_agreement']}, candidate "
               f"{e['candidate_agreement']} ({e['n']} rows)")


def promote(
    route: _ROUTE,
    candidate: Annotated[Path, typer.Option(help="A directory written by `hybrid-router distill`.")],
    policy: _POLICY = None,
    specialists_dir: _SPECIALISTS = None,
) -> None:
    """Switch a route to a distilled candidate (refused if it is worse on held-out data)."""
    from .promote import PromotionError
    from .promote import promote as run

    path, bundled = _policy_path(policy)
    try:
        result = run(path, route, candidate, specialists_dir or bundled)
    except PromotionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    typer.echo(json.dumps(result))


def rollback(route: _ROUTE, policy: _POLICY = None, specialists_dir: _SPECIALISTS = None) -> None:
    """Switch a route back to the specialist it served before the last promote."""
    from .promote import PromotionError
    from .promote import rollback as run

    path, bundled = _policy_path(policy)
    try:
        result = run(path, route, specialists_dir or bundled)
    except PromotionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    app.command()(distill)
    app.command()(promote)
    app.command()(rollback)
