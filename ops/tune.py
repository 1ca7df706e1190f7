"""Threshold tuning: a `Simulation` and a target accuracy -> the cheapest `min_confidence`, written back.

`choose_threshold` picks, among the swept thresholds whose overall accuracy meets the target, the
one with the lowest foundation cost (ties: lowest escalated share, then lowest threshold). It
returns None when no threshold meets the target. Note what that promises: the target is met on
the data the sweep ran on; tune on a dev split and check on a test split.

`write_threshold` edits one route's `min_confidence` in the policy file with a ruamel round trip,
so comments, key order, quoting and flow style survive; the new text is validated before it
replaces the file (atomically) and the written file is loaded again with `load_policy`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.representer import RoundTripRepresenter

from router.policy import LoadedPolicy, PolicyConfigError, load_policy, parse_policy, read_policy_text

from .simulate import Simulation, SweepPoint

__all__ = ["choose_threshold", "render_threshold", "write_threshold"]

_DECIMALS = 6


def choose_threshold(sim: Simulation, target_accuracy: float) -> SweepPoint | None:
    """The cheapest point meeting the target; for a cascade simulated with a grid, over every tier's
    threshold at once (the point's `thresholds` then holds one value per tier)."""
    meeting = [p for p in (sim.grid or sim.points) if p.accuracy >= target_accuracy - 1e-12]
    if not meeting:
        return None
    return min(meeting, key=lambda p: (p.cost_usd, p.escalated_share, p.min_confidence))


def render_threshold(value: float) -> float:
    """The value as written to YAML: rounded, and within the schema's [0, 1]."""
    return min(1.0, max(0.0, round(value, _DECIMALS)))


class _Representer(RoundTripRepresenter):
    """ruamel writes None as an empty value; policies spell out `null`."""

    def represent_none(self, data: None) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:null", "null")


_Representer.add_representer(type(None), _Representer.represent_none)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long scalars (canned answers) that were on one line
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.Representer = _Representer
    return yaml


def write_threshold(
    path: Path, route: str, value: float | Sequence[float],
    specialist_classes: Mapping[str, tuple[str, ...]] | None = None, comment: str | None = None,
) -> LoadedPolicy:
    """Set `routes.<route>.min_confidence` in `path`; returns the re-loaded, validated policy.

    A sequence sets the route's own threshold and then `cascade[k].min_confidence` of each further tier.
    `comment`, when given, becomes (or replaces) the end-of-line comment of the route's own key.
    """
    values = [value] if isinstance(value, int | float) else list(value)
    text = read_policy_text(path)
    parse_policy(text, str(path))  # the parsing limits (size, no anchors/aliases) before building anything
    yaml = _yaml()
    doc = yaml.load(text)
    routes = doc.get("routes") if isinstance(doc, CommentedMap) else None
    node = routes.get(route) if isinstance(routes, CommentedMap) else None
    if not isinstance(node, CommentedMap):
        raise PolicyConfigError(str(path), [f"{path}: routes.{route}: no such route mapping"])
    cascade = node.get("cascade") or []
    if len(values) != 1 + len(cascade):
        raise PolicyConfigError(str(path), [(f"{path}: routes.{route}: {len(values)} thresholds for "
                                            f"{1 + len(cascade)} tier(s)")])
    for tier, v in zip([node, *cascade], values):
        new = render_threshold(v)
        if "min_confidence" in tier:
            tier["min_confidence"] = new
        else:
            keys = list(tier)
            at = keys.index("specialist") + 1 if "specialist" in keys else len(keys)
            tier.insert(at, "min_confidence", new)
    if comment is not None:
        node.yaml_add_eol_comment(comment, "min_confidence")
    buf = io.StringIO()
    yaml.dump(doc, buf)
    out = buf.getvalue()
    parse_policy(out, str(path), specialist_classes)  # never write a file the server would refuse
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(out)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return load_policy(path, specialist_classes)
