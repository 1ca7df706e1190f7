"""Tier-2 runtime: a fine-tuned transformer encoder exported to ONNX (``kind: transformer``).

Serving needs onnxruntime, numpy and the ``tokenizers`` wheel only (no torch, no transformers).
The graph takes ``input_ids`` / ``attention_mask`` (int64 [N, L]) and returns calibrated
``probabilities`` (temperature and softmax are inside the graph, like the tf-idf specialists).

The onnxruntime session is created on first use, so a process whose requests the tf-idf tier
answers never pays the encoder's memory; the artifacts' sha256 are checked at load time all the
same (and again when the session is created, on the bytes actually loaded).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from specialists.blend import Blend
from specialists.errors import ArtifactError, InferenceError
from specialists.manifest import MODEL_FILE, TOKENIZER_FILE, verify_sha256
from specialists.runtime import Prediction, Specialist, _session

__all__ = ["EncoderSpecialist"]

_BUCKET = 32  # max texts per session.run in predict(): attention cost grows with the padded width
I64 = npt.NDArray[np.int64]


class EncoderSpecialist(Specialist):
    """A calibrated transformer classifier: `tokenizers` + one onnxruntime session (lazy)."""

    def _load(self, directory: Path) -> None:
        m = self.manifest
        if m.kind != "transformer":
            raise ArtifactError(f"{directory}: kind {m.kind!r} is not a transformer specialist")
        verify_sha256(directory / MODEL_FILE, m.sha256[MODEL_FILE])  # fail at start-up, not first use
        raw = verify_sha256(directory / TOKENIZER_FILE, m.sha256[TOKENIZER_FILE])
        try:
            tok = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ArtifactError(f"{directory / TOKENIZER_FILE}: not a tokenizers file ({exc})") from exc
        self.max_tokens = int(m.raw.get("input", {}).get("max_tokens", 128))
        # A tokenizer.json saved with a padding setting pads single texts too (to a fixed length,
        # attention mask included): padding is always off here, the batch pads itself.
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_tokens)
        self._tokenizer = tok
        self._unk_id = tok.token_to_id("[UNK]")
        self._special = {i for i in (tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")) if i is not None}
        self._ids_name, self._mask_name = m.input_names
        self._outputs = [m.output_name]
        # Dynamic int8 quantizes activations with one scale per session.run: texts batched together
        # would change each other's answers (measured: 1.7% of labels on SST-2 for MiniLM), so an
        # int8 model runs one text per call and a text's answer never depends on its batch.
        self._per_text = str(m.raw.get("export", {}).get("chosen", "fp32")) == "int8"
        self._lock = threading.Lock()
        self._encoder: ort.InferenceSession | None = None
        self.blend: Blend | None = Blend.from_manifest(m.raw, len(self.classes))

    @property
    def loaded(self) -> bool:
        """Whether the onnxruntime session exists (it is created on the first prediction)."""
        return self._encoder is not None

    def warm(self) -> None:
        """Create the session now (else on the first prediction)."""
        self._session_now()

    def _session_now(self) -> ort.InferenceSession:
        session = self._encoder
        if session is not None:
            return session
        with self._lock:
            if self._encoder is None:
                path = self.directory / MODEL_FILE
                try:
                    model = verify_sha256(path, self.manifest.sha256[MODEL_FILE])
                    session = _session(model, path)
                except ArtifactError as exc:
                    raise InferenceError(f"{self.name}: {exc}") from exc
                n_out = session.get_outputs()[0].shape[-1]
                if isinstance(n_out, int) and n_out != len(self.classes):
                    raise InferenceError(f"{self.name}: {n_out} outputs but {len(self.classes)} classes")
                self._encoder = session
            return self._encoder

    def _encode(self, text: str) -> tuple[list[int], float]:
        try:
            ids: list[int] = self._tokenizer.encode(text).ids
        except TypeError:  # a lone surrogate (not valid Unicode text): tokenizers refuses the str
            ids = self._tokenizer.encode(text.encode("utf-8", "replace").decode("utf-8")).ids
        pieces = [i for i in ids if i not in self._special]
        novelty = (sum(i == self._unk_id for i in pieces) / len(pieces)) if pieces else 1.0
        return ids, novelty

    def _run_ids(self, rows: Sequence[list[int]]) -> npt.NDArray[np.float32]:
        width = max(len(r) for r in rows)
        ids: I64 = np.zeros((len(rows), width), dtype=np.int64)
        mask: I64 = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r)] = r
            mask[k, : len(r)] = 1
        session = self._session_now()
        try:
            out = session.run(self._outputs, {self._ids_name: ids, self._mask_name: mask})
        except Exception as exc:
            raise InferenceError(f"{self.name}: onnxruntime failed ({exc})") from exc
        return np.asarray(out[0], dtype=np.float32)

    def _scores(self, text: str) -> tuple[list[float], float]:
        ids, novelty = self._encode(text)
        return self._run_ids([ids])[0].tolist(), novelty

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch: texts sorted by token count, buckets of similar length (little padding)."""
        if not self._check_batch(texts):
            return []
        encoded = [self._encode(t[: self.max_chars]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
        probs = np.empty((len(texts), len(self.classes)), dtype=np.float32)
        start = 0
        if self._per_text:
            for i in order:
                probs[i] = self._run_ids([encoded[i][0]])[0]
            return [self._prediction(row, enc[1]) for row, enc in zip(probs.tolist(), encoded)]
        while start < len(order):
            limit = 2 * max(8, len(encoded[order[start]][0]))
            stop = start + 1
            while stop < len(order) and stop - start < _BUCKET and len(encoded[order[stop]][0]) <= limit:
                stop += 1
            rows = order[start:stop]
            probs[rows] = self._run_ids([encoded[i][0] for i in rows])
            start = stop
        return [self._prediction(row, enc[1]) for row, enc in zip(probs.tolist(), encoded)]

    def follow(self, previous: Sequence[Prediction | None], preds: list[Prediction]) -> list[Prediction]:
        """Blend each answer with the previous tier's when that is the sibling version the weights
        were fitted with; otherwise (another specialist or version, or none) this tier answers alone."""
        blend = self.blend
        if blend is None:
            return preds
        out: list[Prediction] = []
        for prev, pred in zip(previous, preds, strict=True):
            if prev is None or not blend.applies(prev.specialist, prev.version):
                out.append(pred)
                continue
            row = blend.combine([prev.probabilities.get(c, 0.0) for c in self.classes],
                                [pred.probabilities[c] for c in self.classes])
            out.append(self._prediction(row, pred.novelty))
        return out
