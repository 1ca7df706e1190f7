"""`hybrid-router promote` / `rollback`: switch a route's specialist through the policy file.

Promote reads the candidate's `distill.json`, refuses a candidate whose held-out accuracy is
below the serving version's (or that was compared with another version than the one serving
now, or whose labels differ), then rewrites the policy: the candidate joins `specialists:` as
`<name>@<version>` (its directory, absolute), the route names it, and the route's
`rollback_to` keeps the specialist it served before. Rollback puts `rollback_to` back and drops
the entries no route uses any more.

The new text is validated exactly as the server validates it (the candidate loaded and
sha256-checked), then written next to the old file and renamed over it: a replica watching the
file (or told by SIGHUP, `POST /admin/policy/reload` or a replica's announcement) reloads it
whole, or keeps serving the old policy if it were invalid. Comments in the file are kept.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from router.policy import ClassifyRoute, LoadedPolicy, PolicyConfigError, parse_policy, read_policy_text
from router.policy_specialists import extend
from specialists import ArtifactError, Specialist, SpecialistSet

from .distill import DISTILL_FILE

__all__ = ["PromotionError", "promote", "rollback"]


class PromotionError(Exception):
    """The switch is refused; the policy file is unchanged. `exit_code` 3 = the candidate is worse."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _load(policy_path: Path, specialists_dir: Path) -> tuple[str, Any, SpecialistSet, LoadedPolicy]:
    text = read_policy_text(policy_path)
    specialists = extend(SpecialistSet.load(specialists_dir), text, str(policy_path), len(text) + 1)
    loaded = parse_policy(text, str(policy_path), {n: specialists[n].classes for n in specialists}, len(text) + 1)
    return text, YAML(typ="rt").load(text), specialists, loaded


def _write(policy_path: Path, doc: Any, specialists_dir: Path) -> LoadedPolicy:
    """Validate the edited document like the server, then replace the file atomically."""
    buf = io.StringIO()
    YAML(typ="rt").dump(doc, buf)
    text = buf.getvalue()
    specialists = extend(SpecialistSet.load(specialists_dir), text, str(policy_path), len(text) + 1)
    loaded = parse_policy(text, str(policy_path), {n: specialists[n].classes for n in specialists}, len(text) + 1)
    fd, tmp = tempfile.mkstemp(prefix=f".{policy_path.name}.", dir=policy_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, policy_path.stat().st_mode & 0o777)
        os.replace(tmp, policy_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return loaded


def _classify_route(loaded: LoadedPolicy, route: str) -> ClassifyRoute:
    r = loaded.route(route)
    if not isinstance(r, ClassifyRoute):
        raise PromotionError(f"{route!r} is not a classification route of {loaded.path}")
    return r


def promote(policy_path: Path, route: str, candidate_dir: Path, specialists_dir: Path) -> dict[str, Any]:
    """Switch `route` to the candidate; returns what changed."""
    try:
        _, doc, specialists, loaded = _load(policy_path, specialists_dir)
    except PolicyConfigError as exc:
        raise PromotionError(str(exc)) from exc
    current = _classify_route(loaded, route)
    serving = specialists[current.specialist]
    directory = candidate_dir.resolve()
    try:
        report = json.loads((directory / DISTILL_FILE).read_text(encoding="utf-8"))
        candidate = Specialist(directory)
    except (OSError, ValueError, ArtifactError) as exc:
        raise PromotionError(f"{candidate_dir}: not a candidate written by `hybrid-router distill` ({exc})") from exc
    if report.get("route") != route:
        raise PromotionError(f"{candidate_dir} was distilled for route {report.get('route')!r}, not {route!r}")
    if report.get("candidate", {}).get("version") != candidate.version:
        raise PromotionError(f"{candidate_dir}: the model changed after distill compared it; run distill again")
    if report.get("serving", {}).get("version") != serving.version:
        raise PromotionError(
            f"{candidate_dir} was compared with version {report.get('serving', {}).get('version')}, but route "
            f"{route!r} now serves {serving.version}: run distill again")
    if candidate.classes != serving.classes:
        raise PromotionError(f"{candidate_dir}: its labels differ from the serving specialist's")
    held = report.get("heldout", {})
    cand_acc, serv_acc = held.get("candidate_accuracy"), held.get("serving_accuracy")
    if not isinstance(cand_acc, (int, float)) or not isinstance(serv_acc, (int, float)):
        raise PromotionError(f"{candidate_dir}/{DISTILL_FILE}: no held-out comparison")
    if cand_acc < serv_acc:
        raise PromotionError(
            f"refusing to promote: the candidate is worse on held-out data ({100 * cand_acc:.2f}% < "
            f"{100 * serv_acc:.2f}% for the serving version, {held.get('n')} rows)", exit_code=3)
    name = f"{candidate.name}@{candidate.version}"
    if name == current.specialist:
        raise PromotionError(f"route {route!r} already serves {name}")
    if "specialists" not in doc or doc["specialists"] is None:
        doc["specialists"] = {}
    doc["specialists"][name] = str(directory)
    doc["routes"][route]["specialist"] = name
    doc["routes"][route]["rollback_to"] = current.specialist
    try:
        new = _write(policy_path, doc, specialists_dir)
    except PolicyConfigError as exc:
        raise PromotionError(str(exc)) from exc
    return {"route": route, "specialist": name, "previous": current.specialist, "policy_version": new.version,
            "heldout_accuracy": {"candidate": cand_acc, "serving": serv_acc}}


def rollback(policy_path: Path, route: str, specialists_dir: Path) -> dict[str, Any]:
    """Switch `route` back to the specialist it served before the last promote."""
    try:
        _, doc, _, loaded = _load(policy_path, specialists_dir)
    except PolicyConfigError as exc:
        raise PromotionError(str(exc)) from exc
    current = _classify_route(loaded, route)
    if current.rollback_to is None:
        raise PromotionError(f"route {route!r} has nothing to roll back to (no rollback_to: never promoted)")
    node = doc["routes"][route]
    node["specialist"] = current.rollback_to
    del node["rollback_to"]
    used = {r["specialist"] for r in doc["routes"].values()} | {
        r["rollback_to"] for r in doc["routes"].values() if r.get("rollback_to")}
    extra = doc.get("specialists") or {}
    for name in [n for n in extra if n not in used]:
        del extra[name]
    if "specialists" in doc and not extra:
        del doc["specialists"]
    try:
        new = _write(policy_path, doc, specialists_dir)
    except PolicyConfigError as exc:
        raise PromotionError(str(exc)) from exc
    return {"route": route, "specialist": current.rollback_to, "previous": current.specialist,
            "policy_version": new.version}
