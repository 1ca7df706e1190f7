"""The ``manifest.json`` of a specialist: a typed view plus loading and validation."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specialists.errors import ArtifactError

__all__ = [
    "FEATURES_FILE",
    "KINDS",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "Manifest",
    "sha256_hex",
    "verify_sha256",
]

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
FEATURES_FILE = "features.json"
TOKENIZER_FILE = "tokenizer.json"
# kind -> the artifact besides model.onnx that the runtime needs (sha256-checked like the model).
# "tfidf": n-gram featurizer + gather-and-sum graph (tier 1, tens of µs); "transformer": a
# fine-tuned encoder fed by a `tokenizers` tokenizer (tier 2, a few ms).
KINDS: dict[str, str] = {"tfidf": FEATURES_FILE, "transformer": TOKENIZER_FILE}
_REQUIRED = ("name", "task", "version", "sha256", "classes", "input", "io", "opset")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Manifest:
    """Metadata of one specialist, as written by ``specialists.training`` into manifest.json."""

    name: str
    task: str
    version: str
    sha256: dict[str, str]
    classes: tuple[str, ...]
    oos_label: str | None
    max_chars: int
    input_names: tuple[str, str]
    output_name: str
    opset: int
    kind: str = "tfidf"
    novelty: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    trained_with: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ArtifactError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            classes = tuple(str(c) for c in data["classes"])
            sha = {str(k): str(v) for k, v in dict(data["sha256"]).items()}
            io = dict(data["io"])
            inputs = [str(x) for x in io["inputs"]]
            oos = data.get("oos_label")
            kind = str(data.get("kind", "tfidf"))
            manifest = cls(
                name=str(data["name"]),
                task=str(data["task"]),
                version=str(data["version"]),
                sha256=sha,
                classes=classes,
                oos_label=None if oos is None else str(oos),
                max_chars=int(dict(data["input"])["max_chars"]),
                input_names=(inputs[0], inputs[1]),
                output_name=str(io["output"]),
                opset=int(data["opset"]),
                kind=kind,
                novelty=str(data.get("novelty", "")),
                metrics=dict(data.get("metrics", {})),
                source=dict(data.get("source", {})),
                trained_with=dict(data.get("trained_with", {})),
                raw=data,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ArtifactError(f"{where}: malformed field ({exc!r})") from exc
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ArtifactError(f"{where}: classes must be >= 2 distinct names")
        if manifest.oos_label is not None and manifest.oos_label not in classes:
            raise ArtifactError(f"{where}: oos_label {manifest.oos_label!r} is not a class")
        if manifest.max_chars <= 0:
            raise ArtifactError(f"{where}: input.max_chars must be positive")
        if kind not in KINDS:
            raise ArtifactError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        for needed in (MODEL_FILE, KINDS[kind]):
            if needed not in sha:
                raise ArtifactError(f"{where}: sha256 for {needed} missing")
        return manifest

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ArtifactError(f"{path}: file missing") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: unreadable or not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{path}: top level is not an object")
        return cls.from_dict(data, str(path))


def verify_sha256(path: Path, expected: str) -> bytes:
    """Read ``path`` and return its bytes; raise ArtifactError if its sha256 differs."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read artifact ({exc})") from exc
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise ArtifactError(f"{path.name}: sha256 mismatch in {path}: expected {expected}, actual {actual}")
    return data
