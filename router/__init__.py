"""Hybrid Router: an OpenAI-compatible gateway where cheap ONNX specialists answer first and a
foundation model (through litellm) answers only when they are not confident."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
