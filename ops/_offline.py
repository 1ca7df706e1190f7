"""Set-up shared by the offline tools `simulate` and `tune`: files and options -> `Simulation`.

Loads the policy (validated against the specialists, as the server does), picks the route and its
specialist, reads the labelled data, obtains the foundation outcomes (replay, assumed accuracy or
live calls), resolves the price model and runs the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from router.policy import AliasSpec, AutoRoute, ChatRoute, ClassifyRoute, LoadedPolicy, Policy, load_policy
from router.pricing import PriceTable
from router.settings import FoundationSettings, Settings, read_secret_env
from specialists import SpecialistSet

from .replay import (
    DEFAULT_PRICE_MODEL,
    FoundationOutcomes,
    LabeledData,
    assumed_outcomes,
    collect_live,
    load_labeled,
    load_pricing,
    load_replay,
    replay_outcomes,
)
from .simulate import Simulation, SimulationError, parse_sweep, simulate, simulate_cascade

__all__ = ["OfflineRequest", "checked_classes", "load_checked", "run_offline", "specialist_classes"]


@dataclass(frozen=True, slots=True)
class OfflineRequest:
    policy_path: Path
    route: str
    data_path: Path
    foundation_replay: Path | None = None
    foundation_live: bool = False
    foundation_accuracy: float | None = None
    price_as: str | None = None
    foundation_latency_ms: float = 800.0
    sweep: str = "0:0.99:0.01"
    limit: int | None = None
    concurrency: int = 8
    completion_tokens: int | None = None
    specialists_dir: Path | None = None
    grid: bool = False
    """Cascade routes: also evaluate every combination of swept thresholds over the tiers (tune)."""


def price_model(alias: AliasSpec | None, env: FoundationSettings, override: str | None) -> tuple[str, bool]:
    """(litellm name to price with, whether the operator named it explicitly)."""
    if override:
        return override, True
    if alias is not None:
        if alias.price_as:
            return alias.price_as, True
        if alias.model:
            return alias.model, False
        if env.price_as:
            return env.price_as, True
        if env.model:
            return env.model, False
    return DEFAULT_PRICE_MODEL, True


def _outcomes(req: OfflineRequest, loaded: LoadedPolicy, data: LabeledData, classes: Sequence[str],
              prompt: str | None, alias: str | None, settings: Settings, is_chat: bool) -> FoundationOutcomes:
    chosen = sum([req.foundation_replay is not None, req.foundation_live])
    if chosen > 1:
        raise SimulationError("choose one of --foundation-replay and --foundation live")
    if is_chat and chosen:
        raise SimulationError(f"route {req.route!r} is a chat route: the foundation model answers free text, "
                              "which a label replay or live label call cannot score; use --foundation-accuracy A")
    if req.foundation_replay is not None:
        return replay_outcomes(data, load_replay(req.foundation_replay), classes, prompt,
                               req.foundation_accuracy, str(req.foundation_replay))
    if req.foundation_live:
        if alias is None:
            raise SimulationError(f"route {req.route!r} has no escalate_to alias to call")
        from router.escalation import Escalator

        def build() -> Escalator:
            return Escalator(loaded.policy.aliases, settings.foundation, read_secret_env, lambda a, o: None,
                             PriceTable.load())

        return collect_live(data, classes, prompt, alias, build, req.concurrency)
    if req.foundation_accuracy is None:
        raise SimulationError("say how to score the foundation model: --foundation-replay FILE, "
                              "--foundation live, or --foundation-accuracy A")
    return assumed_outcomes(data, classes, prompt, req.foundation_accuracy,
                            req.completion_tokens if req.completion_tokens is not None else (200 if is_chat else None))


def run_offline(req: OfflineRequest, settings: Settings | None = None) -> tuple[Simulation, LoadedPolicy]:
    """Raise SimulationError / ReplayError / PolicyConfigError / ArtifactError with a clear message."""
    settings = settings or Settings()
    if req.foundation_accuracy is not None and not 0.0 <= req.foundation_accuracy <= 1.0:
        raise SimulationError("--foundation-accuracy must be within [0, 1]")
    thresholds = parse_sweep(req.sweep)
    specialists = SpecialistSet.load(req.specialists_dir or settings.specialists_dir)
    loaded, unchecked = load_checked(req.policy_path, specialists)
    route = loaded.route(req.route)
    if route is None:
        raise SimulationError(f"{req.policy_path}: no route {req.route!r} (routes: "
                              f"{', '.join(loaded.policy.routes)})")
    if isinstance(route, AutoRoute):
        raise SimulationError(f"route {req.route!r} is an auto route: its specialist only picks a "
                              "foundation tier and never answers, so there is nothing to simulate")
    if route.specialist not in specialists:
        raise SimulationError(f"route {req.route!r}: specialist {route.specialist!r} is not in "
                              f"{req.specialists_dir or settings.specialists_dir} (found: {', '.join(specialists)})")
    specialist = specialists[route.specialist]
    data = load_labeled(req.data_path, req.limit)
    is_chat = isinstance(route, ChatRoute)
    prompt = route.prompt if isinstance(route, ClassifyRoute) else None
    outcomes = _outcomes(req, loaded, data, specialist.classes, prompt, route.escalate_to, settings, is_chat)
    alias = loaded.policy.aliases.get(route.escalate_to) if route.escalate_to else None
    name, explicit = price_model(alias, settings.foundation, req.price_as)
    pricing = load_pricing(name, explicit)
    if isinstance(route, ClassifyRoute) and route.cascade:
        tiers = [specialists[t.specialist] for t in route.tiers()]
        sim = simulate_cascade(req.route, route, tiers, data, outcomes, pricing, thresholds,
                               req.foundation_latency_ms, grid=req.grid)
    else:
        sim = simulate(req.route, route, specialist, data, outcomes, pricing, thresholds, req.foundation_latency_ms)
    if unchecked:
        sim = replace(sim, notes=[*sim.notes, unchecked])
    return sim, loaded


def specialist_classes(specialists: SpecialistSet) -> dict[str, tuple[str, ...]]:
    return {n: specialists[n].classes for n in specialists}


def checked_classes(policy: Policy, specialists: SpecialistSet) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Classes to validate `policy` against, and the specialists it names that are not built yet.

    A missing specialist stands in with the labels the policy uses for it, so its routes get a
    schema check only; the server itself would refuse such a policy.
    """
    classes = specialist_classes(specialists)
    missing = sorted({r.specialist for r in policy.routes.values()} - set(classes))
    for name in missing:
        used: set[str] = set()
        for r in policy.routes.values():
            if r.specialist == name:
                used |= set(r.tiers) if isinstance(r, AutoRoute) else set(r.escalate_labels)
                used |= set(r.answers) if isinstance(r, ChatRoute) else set()
        classes[name] = tuple(sorted(used))
    return classes, missing


def load_checked(path: Path, specialists: SpecialistSet) -> tuple[LoadedPolicy, str | None]:
    """Validate as the server does; with specialists missing, a note (else None) says what was not."""
    classes, missing = checked_classes(load_policy(path).policy, specialists)
    loaded = load_policy(path, classes)
    if not missing:
        return loaded, None
    return loaded, (f"specialist(s) {', '.join(missing)} named by the policy are not in the specialists "
                    "directory: their routes were checked for schema only (the server would refuse this policy)")
