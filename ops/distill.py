"""`hybrid-router distill`: a candidate specialist from the original training data plus the
foundation model's answers in the escalation stream, with the evidence to judge it.

In: the policy (which route, which specialist serves it), the stream `gw:v1:escalations` in Redis
(entries of routes with `keep_inputs`; see `escalation_log.py`), the specialist's original
training data (its recipe in `specialists.training.recipes` over `../shared/data`, or files the
operator names) and optional spot labels (JSONL `{"text" or "request_id", "label"}`).

Steps:

1. Read the route's entries. Escalations with a text and a known label are deduplicated on the
   normalised text (the latest answer wins); shadow entries are kept apart.
2. Measure the foundation model against the specialist on the same inputs
   (`foundation_quality`): shadow agreement bounds its accuracy on confidently answered inputs,
   spot labels measure both directly. When either puts it below the specialist (with at least
   `min_checks` measurements), nothing is trained: `FoundationWeakerError` (exit code 3).
3. Hold out `holdout_share` of the escalations (seeded shuffle); train on the original data plus
   the rest, each foundation-labelled row weighted `foundation_weight` in the loss.
4. Compare the candidate with the serving version on the held-out data (the split the recipe's
   model card reports; nothing is chosen on it: the comparison only gates `promote`), on the
   held-out escalations (agreement with the foundation labels) and on the spot labels.
5. Write the candidate (model, manifest, model card with the comparison, `distill.json`) to a
   directory the operator names, never into the bundled specialists.

Offline only: imports the training code, which the serving process never loads.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.escalation_log import STREAM
from router.foundation_quality import Bounds, shadow_bounds, weaker_than
from router.gateway import normalize
from router.policy import ClassifyRoute, load_policy, read_policy_text
from router.policy_specialists import extend
from router.redis_state import RedisState
from router.settings import RedisSettings
from specialists import Specialist, SpecialistSet
from specialists.training.build import Job, build
from specialists.training.data import Split, default_data_root, load_split
from specialists.training.recipes import BUNDLED, job_for
from specialists.training.train import TrainConfig

__all__ = ["DISTILL_FILE", "DistillError", "DistillRequest", "FoundationWeakerError", "distill", "read_entries"]

DISTILL_FILE = "distill.json"
_BUNDLED_DIR = Path(__file__).resolve().parents[1] / "specialists" / "bundled"


class DistillError(Exception):
    """The inputs do not allow a candidate (exit code 2)."""


class FoundationWeakerError(DistillError):
    """The foundation model is measured worse than the specialist: nothing to learn (exit code 3)."""


@dataclass(frozen=True, slots=True)
class DistillRequest:
    policy_path: Path
    route: str
    out: Path
    redis: RedisSettings
    data_root: Path | None = None
    train_data: Path | None = None
    """JSONL `{"text", "label"}`: the original training data, instead of the recipe's."""
    heldout_data: Path | None = None
    """JSONL `{"text", "label"}`: the held-out data, instead of the recipe's test split."""
    spot_labels: Path | None = None
    foundation_weight: float = 1.0
    holdout_share: float = 0.2
    min_checks: int = 20
    seed: int = 0
    max_entries: int = 1_000_000
    specialists_dir: Path = _BUNDLED_DIR


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    text: str
    foundation_label: str
    specialist_label: str
    confidence: float
    request_id: str


def read_entries(redis: RedisSettings, route: str, max_entries: int) -> list[Entry]:
    """The route's stream entries, oldest first (entries of other routes are skipped)."""
    async def read() -> list[dict[str, str]] | None:
        slow = redis.model_copy(update={"timeout_s": 10.0, "breaker_failures": 1_000_000})
        state = RedisState(slow, lambda event: None)
        try:
            return await state.read_stream(STREAM, max_entries)
        finally:
            await state.close()

    raw = asyncio.run(read())
    if raw is None:
        raise DistillError("cannot read the escalation stream: Redis unreachable (ROUTER_REDIS__URL)")
    out = []
    for f in raw:
        if f.get("route") != route:
            continue
        try:
            confidence = float(f.get("confidence", "-1"))
        except ValueError:
            confidence = -1.0
        out.append(Entry(f.get("kind") or "escalation", f.get("text", ""), f.get("foundation_label", ""),
                         f.get("specialist_label", ""), confidence, f.get("request_id", "")))
    return out


def _spot_labels(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(label by normalised text, label by request id) from a JSONL file."""
    by_text: dict[str, str] = {}
    by_id: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DistillError(f"{path}:{n}: not JSON ({exc.msg})") from None
            label = obj.get("label") if isinstance(obj, dict) else None
            if not isinstance(label, str):
                raise DistillError(f"{path}:{n}: needs a string 'label' and a 'text' or 'request_id'")
            if isinstance(obj.get("text"), str):
                by_text[normalize(obj["text"])] = label
            elif isinstance(obj.get("request_id"), str):
                by_id[obj["request_id"]] = label
            else:
                raise DistillError(f"{path}:{n}: needs a string 'text' or 'request_id'")
    return by_text, by_id


def _accuracy(spec: Specialist, texts: Sequence[str], labels: Sequence[str]) -> float | None:
    if not texts:
        return None
    preds = spec.predict(list(texts))
    return sum(p.label == y for p, y in zip(preds, labels, strict=True)) / len(texts)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _base_data(req: DistillRequest, name: str) -> tuple[Split, Split, TrainConfig, dict[str, Any]]:
    """(original training data, held-out data, recipe config, source) of specialist `name`."""
    config = BUNDLED[name][1] if name in BUNDLED else TrainConfig()
    if req.train_data is not None or req.heldout_data is not None:
        if req.train_data is None or req.heldout_data is None:
            raise DistillError("--train-data and --heldout-data go together")
        train, heldout = load_split(req.train_data), load_split(req.heldout_data)
        return train, heldout, config, {"splits": f"train {req.train_data.name}, held-out {req.heldout_data.name}"}
    if name not in BUNDLED:
        raise DistillError(f"specialist {name!r} has no recipe: name its data with --train-data/--heldout-data")
    root = default_data_root(req.data_root)
    if not (root / BUNDLED[name][0]).is_dir():
        raise DistillError(f"{root / BUNDLED[name][0]}: the training data of {name!r} is missing (--data-root)")
    job = job_for(name, root)
    heldout = job.test if job.oos_test is None else Split(
        job.test.texts + job.oos_test.texts, job.test.labels + job.oos_test.labels, "test+oos_test")
    return job.train, heldout, config, job.source


def _measure(req: DistillRequest, entries: list[Entry], classes: tuple[str, ...]) -> dict[str, Any]:
    """The foundation model against the specialist; raises FoundationWeakerError when weaker."""
    shadow = [e for e in entries if e.kind == "shadow" and e.foundation_label in classes and e.confidence >= 0]
    agree = sum(e.foundation_label == e.specialist_label for e in shadow)
    mean_conf = sum(e.confidence for e in shadow) / len(shadow) if shadow else 1.0
    bounds = shadow_bounds(agree, len(shadow), mean_conf)
    evidence: dict[str, Any] = {"min_checks": req.min_checks, "shadow": {
        "checks": len(shadow), "agreement": _round(agree / len(shadow)) if shadow else None,
        "specialist_mean_confidence": _round(mean_conf) if shadow else None,
        "foundation_accuracy_lower": _round(bounds.lower), "foundation_accuracy_upper": _round(bounds.upper)}}
    reasons = []
    if weaker_than(bounds, mean_conf, req.min_checks):
        reasons.append(f"shadow checks: foundation accuracy at most {bounds.upper:.3f} on {bounds.n} inputs the "
                       f"specialist answered with mean confidence {mean_conf:.3f}")
    if req.spot_labels is not None:
        by_text, by_id = _spot_labels(req.spot_labels)
        matched = []
        for e in entries:
            gold = by_id.get(e.request_id) if e.request_id else None
            if gold is None and e.text:
                gold = by_text.get(normalize(e.text))
            if gold is not None and e.foundation_label in classes:
                matched.append((e, gold))
        n = len(matched)
        f_acc = sum(e.foundation_label == g for e, g in matched) / n if n else None
        s_acc = sum(e.specialist_label == g for e, g in matched) / n if n else None
        evidence["spot_labels"] = {"file": req.spot_labels.name, "matched": n, "foundation_accuracy": _round(f_acc),
                                   "specialist_accuracy": _round(s_acc)}
        if f_acc is not None and s_acc is not None and weaker_than(Bounds(n, f_acc, f_acc), s_acc, req.min_checks):
            reasons.append(f"spot labels: foundation accuracy {f_acc:.3f} < specialist {s_acc:.3f} on the same "
                           f"{n} inputs")
    if reasons:
        raise FoundationWeakerError(
            f"refusing to learn from route {req.route!r}'s foundation model, measured weaker than the specialist: "
            + "; ".join(reasons))
    if not shadow and req.spot_labels is None:
        evidence["note"] = ("foundation accuracy not measured (no shadow checks, no spot labels): only the "
                            "held-out comparison guards promotion")
    return evidence


def distill(req: DistillRequest) -> dict[str, Any]:
    """Build the candidate into `req.out`; returns the comparison written to `distill.json`."""
    out = req.out.resolve()
    if out == _BUNDLED_DIR or _BUNDLED_DIR in out.parents:
        raise DistillError(f"{req.out}: candidates never go into the bundled specialists; name another directory")
    if out.exists() and any(out.iterdir()):
        raise DistillError(f"{req.out}: exists and is not empty")
    if not 0.0 <= req.holdout_share < 1.0 or req.foundation_weight <= 0:
        raise DistillError("--holdout-share must be in [0, 1) and --foundation-weight > 0")
    text = read_policy_text(req.policy_path)
    specialists = extend(SpecialistSet.load(req.specialists_dir), text, str(req.policy_path), len(text) + 1)
    policy = load_policy(req.policy_path, {n: specialists[n].classes for n in specialists}, len(text) + 1)
    route = policy.route(req.route)
    if not isinstance(route, ClassifyRoute):
        raise DistillError(f"{req.route!r} is not a classification route of {req.policy_path}")
    serving = specialists[route.specialist]

    entries = read_entries(req.redis, req.route, req.max_entries)
    evidence = _measure(req, entries, serving.classes)
    latest: dict[str, Entry] = {}
    for e in entries:
        if e.kind == "escalation" and e.text and e.foundation_label in serving.classes:
            latest[normalize(e.text)] = e  # later answers win
    rows = sorted(latest.values(), key=lambda e: normalize(e.text))
    random.Random(req.seed).shuffle(rows)
    n_hold = round(len(rows) * req.holdout_share)
    held, learn = rows[:n_hold], rows[n_hold:]
    if not learn:
        raise DistillError(f"no escalations with inputs for route {req.route!r} in the stream (does the route "
                           "have keep_inputs: true?)")

    base, heldout, config, source = _base_data(req, serving.name)
    unknown = sorted(set(base.labels) - set(serving.classes))
    if unknown:
        raise DistillError(f"the training data has labels the serving specialist lacks: {unknown[:5]}")
    train = Split(base.texts + [e.text for e in learn], base.labels + [e.foundation_label for e in learn],
                  f"{base.origin} + {len(learn)} escalations")
    weights = [1.0] * len(base) + [req.foundation_weight] * len(learn)
    job = Job(name=serving.name, config=config, train=train, test=heldout, oos_label=serving.manifest.oos_label,
              source=source, description=str(serving.manifest.raw.get("description", "")), train_weight=weights)
    build(job, out, measure_speed=False)
    candidate = Specialist(out)

    spot = evidence.get("spot_labels")
    comparison: dict[str, Any] = {
        "route": req.route,
        "serving": {"name": route.specialist, "version": serving.version},
        "candidate": {"version": candidate.version, "directory": str(out)},
        "data": {"original_rows": len(base), "escalations_deduplicated": len(rows), "escalations_trained": len(learn),
                 "escalations_held_out": len(held), "foundation_weight": req.foundation_weight,
                 "holdout_share": req.holdout_share, "seed": req.seed, "heldout": heldout.origin},
        "heldout": {"n": len(heldout), "serving_accuracy": _round(_accuracy(serving, heldout.texts, heldout.labels)),
                    "candidate_accuracy": _round(_accuracy(candidate, heldout.texts, heldout.labels))},
        "escalations_held_out": {
            "n": len(held),
            "serving_agreement": _round(_accuracy(serving, [e.text for e in held], [e.foundation_label for e in held])),
            "candidate_agreement": _round(_accuracy(candidate, [e.text for e in held],
                                                    [e.foundation_label for e in held]))},
        "foundation": evidence,
    }
    if spot:
        comparison["foundation"]["spot_labels"] = spot
    (out / DISTILL_FILE).write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    with (out / "MODEL_CARD.md").open("a", encoding="utf-8") as card:
        card.write(_card_section(comparison))
    return comparison


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * float(x):.2f}%"


def _card_section(c: dict[str, Any]) -> str:
    d, h, e, f = c["data"], c["heldout"], c["escalations_held_out"], c["foundation"]
    sh = f["shadow"]
    lines = [
        "",
        "## Distilled candidate",
        "",
        (f"Trained by `hybrid-router distill` for route `{c['route']}` from the original training data "
        f"({d['original_rows']} rows) plus {d['escalations_trained']} foundation-labelled escalations (deduplicated "
        f"on the normalised text, each weighted {d['foundation_weight']} in the loss); "
        f"{d['escalations_held_out']} escalations ({100 * d['holdout_share']:.0f}%, seed {d['seed']}) held out."),
        "",
        f"| | serving `{c['serving']['version']}` | candidate `{c['candidate']['version']}` |",
        "|---|---|---|",
        (f"| held-out accuracy ({h['n']} rows, {d['heldout']}) | {_pct(h['serving_accuracy'])} | "
        f"{_pct(h['candidate_accuracy'])} |"),
        (f"| agreement with the foundation model on held-out escalations ({e['n']}) | "
        f"{_pct(e['serving_agreement'])} | {_pct(e['candidate_agreement'])} |"),
        "",
        f"Foundation model, measured against the specialist: {sh['checks']} shadow checks"
        + (f", agreement {_pct(sh['agreement'])}, accuracy between {_pct(sh['foundation_accuracy_lower'])} and "
           f"{_pct(sh['foundation_accuracy_upper'])}" if sh["checks"] else ""),
    ]
    spot = f.get("spot_labels")
    if spot:
        lines.append(f"; spot labels: {spot['matched']} matched, foundation {_pct(spot['foundation_accuracy'])}, "
                     f"specialist {_pct(spot['specialist_accuracy'])}")
    if f.get("note"):
        lines.append(f". {f['note']}")
    lines.append(".\n\n`hybrid-router promote` refuses this candidate if its held-out accuracy is below the "
                 "serving version's.\n")
    return "\n".join(lines)
