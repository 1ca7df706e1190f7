"""Hybrid Router specialists: cheap calibrated ONNX text classifiers.

The runtime needs only onnxruntime, numpy and the standard library::

    from specialists import load_specialists
    spec = load_specialists()["sentiment"]
    spec.predict_one("a gorgeous, witty film")
"""

from __future__ import annotations

from specialists.errors import ArtifactError, InferenceError, SpecialistError
from specialists.runtime import Prediction, Specialist, SpecialistSet, load_specialists

__all__ = [
    "ArtifactError",
    "InferenceError",
    "Prediction",
    "Specialist",
    "SpecialistError",
    "SpecialistSet",
    "load_specialists",
]
