"""The `hybrid-router` command: serve, check policies, simulate/tune thresholds, specialists' offline tools.

The only argv reader. `serve` builds `Settings` (environment plus the options given here) and
runs uvicorn; `train`, `eval` and `specialists-build` forward to `specialists.training`, imported
only when those commands run, so the serving process never loads training libraries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .loop_cli import register as register_loop

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Hybrid Router: specialists first, "
                  "foundation models when needed.")
policy_app = typer.Typer(no_args_is_help=True, help="Routing policy tools.")
app.add_typer(policy_app, name="policy")
keys_app = typer.Typer(no_args_is_help=True, help="API keys for /v1/* (needs ROUTER_AUTH__SECRET; with "
                       "ROUTER_REDIS__URL the keys live in Redis, else in ROUTER_AUTH__KEYS_FILE).")
app.add_typer(keys_app, name="keys")

register_loop(app)

_FORWARD: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ROUTER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (ROUTER_PORT).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (ROUTER_POLICY_PATH).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (ROUTER_WORKERS).")] = None,
) -> None:
    """Run the gateway."""
    from router.serve import run

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if policy is not None:
        overrides["policy_path"] = policy.resolve()
    if workers is not None:
        overrides["workers"] = workers
    code = run(overrides)
    if code:
        raise typer.Exit(code)


@policy_app.command("check")
def policy_check(
    files: Annotated[list[Path], typer.Argument(help="Policy files to validate.")],
    specialists_dir: Annotated[Path | None, typer.Option(help="Specialists to check names against.")] = None,
) -> None:
    """Validate policy files exactly as the server does at start-up and on reload."""
    from router.policy import PolicyConfigError, load_policy, read_policy_text
    from router.policy_specialists import extend
    from router.settings import Settings
    from specialists import SpecialistSet

    settings = Settings()
    specialists = SpecialistSet.load(specialists_dir or settings.specialists_dir)
    failed = False
    for f in files:
        try:
            named = extend(specialists, read_policy_text(f, settings.policy_max_bytes), str(f),
                           settings.policy_max_bytes)
            loaded = load_policy(f, {n: named[n].classes for n in named}, settings.policy_max_bytes)
        except PolicyConfigError as exc:
            failed = True
            typer.echo(str(exc), err=True)
            continue
        typer.echo(f"{f}: ok (version {loaded.version}, {len(loaded.policy.routes)} routes, "
                   f"{len(loaded.policy.aliases)} aliases)")
    raise typer.Exit(1 if failed else 0)


def _with_key_store(action: Any) -> Any:
    """Run `action(store, secret)` against the configured key store; store errors exit 1."""
    import asyncio

    from router.keys import KeyStoreError, open_store
    from router.redis_state import RedisState
    from router.settings import Settings

    settings = Settings()
    if settings.auth.secret is None:
        typer.echo("error: set ROUTER_AUTH__SECRET (the same value the gateway replicas have)", err=True)
        raise typer.Exit(2)
    secret = settings.auth.secret.get_secret_value().encode()

    async def run() -> Any:
        state = None
        if settings.redis.configured:  # a command may wait longer than a request would
            slow = settings.redis.model_copy(update={"timeout_s": 5.0, "breaker_failures": 1_000_000})
            state = RedisState(slow, lambda event: None)
        try:
            return await action(open_store(state, settings.auth.keys_file), secret)
        finally:
            if state is not None:
                await state.close()

    try:
        return asyncio.run(run())
    except KeyStoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _targets(value: str) -> str | list[str]:
    if value.strip() in ("all", "none"):
        return "all" if value.strip() == "all" else []
    return [v.strip() for v in value.split(",") if v.strip()]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Key name: lowercase letters, digits, '-', '_' (at most 32).")],
    routes: Annotated[str, typer.Option(help="Routes the key may use: comma list, 'all' or 'none'.")] = "all",
    aliases: Annotated[str, typer.Option(help="Foundation aliases it may use or escalate to: comma list, "
                                              "'all' or 'none'.")] = "all",
    usd_per_hour: Annotated[float | None, typer.Option(help="Foundation spend budget per UTC hour.")] = None,
    usd_per_day: Annotated[float | None, typer.Option(help="Foundation spend budget per UTC day.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Foundation tokens per minute.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Cache namespace (default: the name).")] = None,
) -> None:
    """Create a key and print it once (only its keyed digest is stored)."""
    from datetime import UTC, datetime

    from pydantic import ValidationError

    from router.keys import KeyRecord, issue_key

    try:
        record = KeyRecord(name=name, routes=_targets(routes), aliases=_targets(aliases),
                           usd_per_hour=usd_per_hour, usd_per_day=usd_per_day, rpm=rpm, tpm=tpm, tenant=tenant,
                           created=datetime.now(UTC).replace(microsecond=0))
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(f"error: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}", err=True)
        raise typer.Exit(2) from exc
    key = _with_key_store(lambda store, secret: issue_key(store, secret, record))
    typer.echo(key)
    typer.echo(f"key {name!r} created; it is shown only this once", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """Names, permissions and limits of every key (never keys or digests)."""

    async def load(store: Any, secret: bytes) -> Any:
        from router.keys import KeyStoreError

        records = await store.load()
        if records is None:
            raise KeyStoreError(f"cannot read {store.where}")
        return sorted(records.values(), key=lambda r: (r.name, r.created))

    def show(v: object) -> str:
        return "-" if v is None else ",".join(v) if isinstance(v, tuple) else str(v)

    rows = [("name", "tenant", "routes", "aliases", "usd/h", "usd/day", "rpm", "tpm", "created", "status")]
    for r in _with_key_store(load):
        status = "active" if r.revoked is None else f"revoked {r.revoked.isoformat()}"
        rows.append((r.name, r.cache_tenant, show(r.routes), show(r.aliases), show(r.usd_per_hour),
                     show(r.usd_per_day), show(r.rpm), show(r.tpm), r.created.isoformat(), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="Name of the key to revoke.")]) -> None:
    """Revoke the active key of NAME; every replica refuses it within ROUTER_AUTH__REFRESH_S."""
    from router.keys import revoke_keys

    count = _with_key_store(lambda store, secret: revoke_keys(store, name))
    if not count:
        typer.echo(f"error: no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name!r}")


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Output file: .html (SVG and tables) or .svg.")] = Path("report.html"),
    prometheus: Annotated[str | None, typer.Option(help="Prometheus base URL to query.")] = None,
    window: Annotated[str, typer.Option(help="With --prometheus: the PromQL window, e.g. 1h, 24h.")] = "1h",
    metrics: Annotated[str | None, typer.Option(
        help="A gateway's /metrics URL (totals since start). Default, with no other source: the local gateway's "
             "(ROUTER_HOST/ROUTER_PORT, ROUTER_METRICS_TOKEN).")] = None,
    simulation: Annotated[Path | None, typer.Option("--simulate", help="A `simulate --json` file.")] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "Hybrid Router: traffic, cost and latency by path",
) -> None:
    """Render traffic, cost and latency by path and route, and each route's specialist alone /
    foundation model alone / hybrid comparison, as an HTML page or an SVG image."""
    import httpx
    from pydantic import ValidationError

    from router.settings import Settings

    from .report import (
        from_metrics_text,
        from_prometheus,
        from_simulation,
        load_simulation,
        render_html,
        render_svg,
    )
    from .report_compare import compare, read_cards

    if out.suffix not in (".html", ".svg"):
        typer.echo("--out must end in .html or .svg (for a PNG: rsvg-convert report.svg > report.png)", err=True)
        raise typer.Exit(2)
    sources = [s for s in (prometheus, metrics, simulation) if s is not None]
    if len(sources) > 1:
        typer.echo("give at most one of --prometheus, --metrics, --simulate", err=True)
        raise typer.Exit(2)
    try:
        settings = Settings()
    except ValidationError as exc:
        typer.echo(f"invalid ROUTER_* settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    headers = {}
    if not sources:  # the gateway `make serve` / `hybrid-router serve` runs here
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        metrics = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/metrics"
        if settings.metrics_token is not None:
            headers["authorization"] = f"Bearer {settings.metrics_token.get_secret_value()}"
    try:
        if prometheus is not None:
            split = from_prometheus(prometheus, window, title)
        elif metrics is not None:
            split = from_metrics_text(httpx.get(metrics, headers=headers, timeout=10).raise_for_status().text, title)
        elif simulation is not None:
            split = from_simulation(load_simulation(simulation), title)
    except (httpx.HTTPError, ValueError, OSError) as exc:
        typer.echo(f"cannot read the source: {exc}", err=True)
        if not sources:
            typer.echo("(no source given: is the gateway running? `make serve`, or pass --metrics URL, "
                       "--prometheus URL or --simulate FILE)", err=True)
        raise typer.Exit(2) from exc
    if split.routes:
        cards, why_not = read_cards(settings.policy_path, settings.specialists_dir)
        split.comparison = compare(split.routes, split.buckets, cards)
        if why_not is not None:
            split.notes.append(why_not)
    if out.suffix == ".html":
        render_html(split, out)
    else:
        out.write_text(render_svg(split))
    for row in split.rows:
        typer.echo(f"{row.path:>10}  {row.requests:>10,.0f} requests  {row.cost_usd:>12.6f} USD")
    typer.echo(f"{'avoided':>10}  {'':>19}  {split.cost_avoided_usd:>12.6f} USD")
    for c in split.comparison:
        usd = "" if c.usd_per_1000 is None else f"{c.usd_per_1000:.6f}"
        acc = "" if c.accuracy is None else f"{c.accuracy:.1%} ({c.accuracy_kind})"
        typer.echo(f"{c.route:>14}  {c.option:<16}  local {c.local_share:>6.1%}  USD/1k {usd:>10}  {acc}")
    typer.echo(f"written to {out}")


def _plot(draw: Callable[[], Path]) -> Path:
    """Draw a --plot PNG; without matplotlib (the serving install) say so instead of a traceback."""
    try:
        return draw()
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


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


def _offline(**kwargs: Any) -> tuple[Any, Any]:
    """Run the shared offline set-up; input errors become a message and exit code 2."""
    from router.policy import PolicyConfigError
    from specialists import SpecialistError

    from ._offline import OfflineRequest, run_offline
    from .replay import ReplayError
    from .simulate import SimulationError

    try:
        return run_offline(OfflineRequest(**kwargs))
    except (SimulationError, ReplayError, PolicyConfigError, SpecialistError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def simulate(
    route: Annotated[str, typer.Option(help="Route to simulate (classify, or chat gated by a specialist).")],
    data: Annotated[Path, typer.Option(help="Labelled JSONL: {\"text\", \"label\"} per line.")],
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: ROUTER_POLICY_PATH).")] = None,
    foundation_replay: Annotated[Path | None, typer.Option(
        help="Recorded foundation answers: JSONL {text, answer, prompt_tokens?, completion_tokens?, model?}.")] = None,
    foundation: Annotated[str | None, typer.Option(
        help="'live': call the route's escalate_to alias for real (use --limit).")] = None,
    foundation_accuracy: Annotated[float | None, typer.Option(
        help="Assume the foundation model is right with this probability (an expectation, not sampled); "
             "with a replay, used for inputs the replay lacks.")] = None,
    price_as: Annotated[str | None, typer.Option(help="litellm model name to price foundation calls as.")] = None,
    foundation_latency_ms: Annotated[float, typer.Option(help="Assumed foundation latency per call.")] = 800.0,
    sweep: Annotated[str, typer.Option(help="min_confidence values: START:STOP:STEP or a comma list.")] =
        "0:0.99:0.01",
    table_step: Annotated[float, typer.Option(help="Print sweep rows at multiples of this.")] = 0.05,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows (cap for live calls).")] = None,
    concurrency: Annotated[int, typer.Option(help="Concurrent live foundation calls.")] = 8,
    completion_tokens: Annotated[int | None, typer.Option(
        help="Completion tokens per escalation when not recorded (default: label length; chat: 200).")] = None,
    specialists_dir: Annotated[Path | None, typer.Option(help="Specialists directory.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of accuracy and cost vs escalation share.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the raw sweep as JSON.")] = None,
) -> None:
    """Replay labelled traffic through a route's decision and sweep its min_confidence."""
    if foundation is not None and foundation != "live":
        typer.echo("error: --foundation takes only 'live'", err=True)
        raise typer.Exit(2)
    from router.settings import Settings

    sim, _ = _offline(
        policy_path=policy or Settings().policy_path, route=route, data_path=data,
        foundation_replay=foundation_replay, foundation_live=foundation == "live",
        foundation_accuracy=foundation_accuracy, price_as=price_as, foundation_latency_ms=foundation_latency_ms,
        sweep=sweep, limit=limit, concurrency=concurrency, completion_tokens=completion_tokens,
        specialists_dir=specialists_dir,
    )
    from .simulate import format_table

    typer.echo(format_table(sim, table_step))
    if json_out is not None:
        import orjson

        json_out.write_bytes(orjson.dumps(sim.to_dict(), option=orjson.OPT_INDENT_2))
        typer.echo(f"sweep written to {json_out}")
    if plot is not None:
        from .report_plot import plot_sweep

        typer.echo(f"plot written to {_plot(lambda: plot_sweep(sim, plot))}")


@app.command()
def tune(
    route: Annotated[str, typer.Option(help="Route whose min_confidence to tune.")],
    data: Annotated[Path, typer.Option(help="Labelled JSONL (a dev split, not the test split).")],
    target_accuracy: Annotated[float, typer.Option(help="Overall accuracy to reach, e.g. 0.98.")],
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: ROUTER_POLICY_PATH).")] = None,
    foundation_replay: Annotated[Path | None, typer.Option(help="Recorded foundation answers (JSONL).")] = None,
    foundation_accuracy: Annotated[float | None, typer.Option(
        help="Assumed foundation accuracy (or for inputs missing from the replay).")] = None,
    price_as: Annotated[str | None, typer.Option(help="litellm model name to price foundation calls as.")] = None,
    foundation_latency_ms: Annotated[float, typer.Option(help="Assumed foundation latency per call.")] = 800.0,
    sweep: Annotated[str, typer.Option(help="Candidate thresholds: START:STOP:STEP or a comma list.")] =
        "0:0.99:0.01",
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    specialists_dir: Annotated[Path | None, typer.Option(help="Specialists directory.")] = None,
    write: Annotated[bool, typer.Option("--write", help="Write the chosen threshold into the policy file.")] =
        False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the sweep with both operating points.")] =
        None,
    last_tier_only: Annotated[bool, typer.Option(
        "--last-tier-only", help="Cascade routes: keep the earlier tiers at the policy's thresholds and tune only "
        "the last tier's (default: every tier's together).")] = False,
) -> None:
    """Pick the cheapest min_confidence that meets a target accuracy; optionally write it."""
    from router.settings import Settings
    from specialists import SpecialistSet

    from ._offline import checked_classes
    from .simulate import describe, render_rows, table_rows
    from .tune import choose_threshold, render_threshold, write_threshold

    settings = Settings()
    policy_path = policy or settings.policy_path
    sim, loaded = _offline(
        policy_path=policy_path, route=route, data_path=data, foundation_replay=foundation_replay,
        foundation_accuracy=foundation_accuracy, price_as=price_as, foundation_latency_ms=foundation_latency_ms,
        sweep=sweep, limit=limit, specialists_dir=specialists_dir, grid=not last_tier_only,
    )
    typer.echo(describe(sim))
    chosen = choose_threshold(sim, target_accuracy)
    if chosen is None:
        best = max(sim.points, key=lambda p: p.accuracy)
        typer.echo(render_rows(table_rows(sim, every=None, extra=[(f"{best.min_confidence:g} (best)", best)])))
        typer.echo(f"no min_confidence in the sweep reaches accuracy {target_accuracy:g}: the best is "
                   f"{best.accuracy:.4f} at {best.min_confidence:g}; the policy file is unchanged", err=True)
        raise typer.Exit(1)
    typer.echo("")
    def name(p: Any) -> str:
        return "/".join(f"{render_threshold(t):g}" for t in p.thresholds) if p.thresholds else \
            f"{render_threshold(p.min_confidence):g}"

    typer.echo(render_rows(table_rows(sim, every=None, extra=[(f"{name(chosen)} (tuned)", chosen)])))
    before = sim.policy
    typer.echo(f"\nmin_confidence {name(before)} -> {name(chosen)}: accuracy "
               f"{100 * before.accuracy:.2f}% -> {100 * chosen.accuracy:.2f}% (target {100 * target_accuracy:g}%), "
               f"escalated {100 * before.escalated_share:.1f}% -> {100 * chosen.escalated_share:.1f}%, "
               f"foundation cost {100 * before.cost_fraction:.1f}% -> {100 * chosen.cost_fraction:.1f}% "
               "of all-foundation")
    if plot is not None:
        from .report_plot import plot_sweep

        typer.echo(f"plot written to {_plot(lambda: plot_sweep(sim, plot, {f'tuned {chosen.min_confidence:g}': chosen}))}")
    if not write:
        typer.echo("dry run: pass --write to update the policy file")
        return
    specialists = SpecialistSet.load(specialists_dir or settings.specialists_dir)
    classes, _ = checked_classes(loaded.policy, specialists)
    written = write_threshold(policy_path, route, chosen.thresholds or chosen.min_confidence, classes)
    typer.echo(f"wrote routes.{route} min_confidence = {name(chosen)} to "
               f"{policy_path} (policy version {loaded.version} -> {written.version}; re-validated)")


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="hybrid-router")
