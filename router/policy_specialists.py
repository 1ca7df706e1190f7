"""Specialists a policy names by directory (`specialists:`): loaded besides the bundled ones.

`hybrid-router promote` points a route at a candidate by adding `name: directory` under the
policy's `specialists:` and naming it in the route; start-up and every reload call `extend` so
the candidate is loaded (sha256-checked, warmed up) before the policy that uses it is validated
and swapped in. A specialist already loaded under the same name and from the same directory is
reused, so a reload costs nothing when nothing changed.
"""

from __future__ import annotations

from pathlib import Path

from specialists import ArtifactError, Specialist, SpecialistSet

from .policy import PolicyConfigError, parse_policy

__all__ = ["extend", "specialist_dirs"]


def specialist_dirs(text: str, path: str, max_bytes: int) -> dict[str, Path]:
    """Name -> resolved directory of the specialists a policy text names (relative to its file)."""
    loaded = parse_policy(text, path, None, max_bytes)
    base = Path(path).resolve().parent
    return {name: (base / d).resolve() for name, d in loaded.policy.specialists.items()}


def extend(current: SpecialistSet, text: str, path: str, max_bytes: int) -> SpecialistSet:
    """`current` plus the specialists the policy text names; `current` itself if none is new.

    Blocking (reads and hashes model files): callers on the event loop run it in a thread.
    Raises PolicyConfigError for a directory that does not hold a loadable specialist.
    """
    extra: dict[str, Specialist] = {}
    for name, directory in specialist_dirs(text, path, max_bytes).items():
        if name in current and current[name].directory.resolve() == directory:
            continue
        try:
            spec = Specialist(directory)
        except ArtifactError as exc:
            raise PolicyConfigError(path, [f"{path}: specialists.{name}: {exc}"]) from exc
        spec.predict_one("warm up")  # first inference allocates: not on a request
        extra[name] = spec
    return current.with_named(extra) if extra else current
