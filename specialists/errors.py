"""Exception hierarchy of the specialists runtime."""

from __future__ import annotations

__all__ = ["ArtifactError", "InferenceError", "SpecialistError"]


class SpecialistError(Exception):
    """Base class of every error raised by the specialists package."""


class ArtifactError(SpecialistError):
    """A bundled artifact is missing, unreadable, corrupt or fails its sha256 check."""


class InferenceError(SpecialistError):
    """Running a specialist on an input failed."""
