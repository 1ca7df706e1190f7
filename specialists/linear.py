"""``LinearGraph``: the exported gather-and-sum ONNX graph, evaluated with numpy.

``specialists.training.graph`` writes one graph shape only::

    probabilities = Softmax((MatMul(weights[:, None, :], Gather(W, ids))[:, 0, :] + b) / T)

(with a ``Cast`` after the ``Gather`` when ``W`` is stored as float16). For a single text that
is a ~10 µs ``onnxruntime`` call, most of it fixed per-call overhead, and a session holds the
weight matrix about twice. :meth:`LinearGraph.from_onnx` reads the model file's protobuf and
accepts it only if its nodes, wiring, attributes, inputs, outputs and initializer types are
exactly that graph; the runtime then evaluates it with a few numpy calls. The matrix is held in
float32 (a float16 one is widened once, at load: numpy's per-call float16 casts are slow); the
gathered rows, the weighted sum, bias, temperature and softmax are computed in float64, because
float32 sums (onnxruntime's, or numpy's) differ from the scikit-learn reference by up to ~1.5e-6
on the bundled banking model, over the 1e-6 parity budget. Any other model (``None``) is run by
onnxruntime as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import exp
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["LinearGraph"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# ONNX TensorProto.DataType values used by the exporter
_FLOAT, _INT64, _FLOAT16 = 1, 7, 10
_DTYPES: dict[int | None, np.dtype[Any]] = {_FLOAT: np.dtype("<f4"), _INT64: np.dtype("<i8"), _FLOAT16: np.dtype("<f2")}
_PY_SOFTMAX_MAX = 16  # classes up to which one text's softmax is computed on Python floats
_CHUNK_CELLS = 1 << 19  # batch evaluation: at most this many gathered values (entries x classes) at once


class _Malformed(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Protobuf wire format -> ``[(field number, wire type, int or bytes)]`` (no groups)."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if i > len(buf):
            raise _Malformed("truncated field")
        out.append((number, wire, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _strings(fields: list[tuple[int, int, int | bytes]], number: int) -> list[str]:
    return [v.decode() for n, w, v in fields if n == number and isinstance(v, bytes)]


def _tensor(buf: bytes) -> tuple[str, npt.NDArray[np.generic]]:
    """TensorProto -> (name, array) for raw_data tensors of the exporter's types."""
    fields = _fields(buf)
    dims: list[int] = []
    dtype: int | None = None
    name: str | None = None
    raw: bytes | None = None
    for number, wire, value in fields:
        if number == 1 and isinstance(value, int):
            dims.append(_signed(value))
        elif number == 1 and isinstance(value, bytes):  # packed dims
            j = 0
            while j < len(value):
                d, j = _varint(value, j)
                dims.append(_signed(d))
        elif number == 2 and isinstance(value, int):
            dtype = value
        elif number == 8 and isinstance(value, bytes):
            name = value.decode()
        elif number == 9 and isinstance(value, bytes):
            raw = value
        elif number in (4, 5, 6, 7, 10, 11, 13, 14):  # typed data fields, external data
            raise _Malformed("initializer not stored as raw_data")
    if dtype not in _DTYPES or name is None or raw is None:
        raise _Malformed("unsupported initializer")
    array = np.frombuffer(raw, dtype=_DTYPES[dtype])
    if array.size != int(np.prod(dims, dtype=np.int64)):
        raise _Malformed(f"initializer {name}: {array.size} values for dims {dims}")
    return name, array.reshape(dims)


def _node(buf: bytes) -> tuple[str, tuple[str, ...], tuple[str, ...], dict[str, int]]:
    fields = _fields(buf)
    attrs: dict[str, int] = {}
    for number, _, value in fields:
        if number == 5 and isinstance(value, bytes):
            attr = _fields(value)
            attr_name = _strings(attr, 1)
            ints = [v for n, w, v in attr if n == 3 and isinstance(v, int)]
            if len(attr_name) != 1 or len(ints) != 1:
                raise _Malformed("unsupported attribute")
            attrs[attr_name[0]] = _signed(ints[0])
    domains = _strings(fields, 7)
    if domains and domains != [""]:
        raise _Malformed("custom operator domain")
    op = _strings(fields, 4)
    return (op[0] if op else "", tuple(_strings(fields, 1)), tuple(_strings(fields, 2)), attrs)


def _value_names(fields: list[tuple[int, int, int | bytes]], number: int) -> list[str]:
    return [_strings(_fields(v), 1)[0] for n, w, v in fields if n == number and isinstance(v, bytes)]


# The exporter's node list: (op, inputs, outputs, attributes); float16 models add the Cast.
_HEAD32 = [("Gather", ("W", "ids"), ("rows",), {"axis": 0})]
_HEAD16 = [("Gather", ("W", "ids"), ("rows16",), {"axis": 0}),
           ("Cast", ("rows16",), ("rows",), {"to": _FLOAT})]
_TAIL = [
    ("Unsqueeze", ("weights", "axis1"), ("w3",), {}),
    ("MatMul", ("w3", "rows"), ("summed3",), {}),
    ("Squeeze", ("summed3", "axis1"), ("summed",), {}),
    ("Add", ("summed", "b"), ("logits",), {}),
    ("Div", ("logits", "T"), ("scaled",), {}),
    ("Softmax", ("scaled",), ("probabilities",), {"axis": -1}),
]


@dataclass(frozen=True, slots=True)
class LinearGraph:
    """Weight matrix ``W`` [rows, classes] (row 0 = padding), bias ``b`` and temperature ``T``."""

    W: npt.NDArray[np.float32]
    b: F64
    T: float
    _b: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_b", self.b.tolist())

    @classmethod
    def from_onnx(cls, model: bytes) -> LinearGraph | None:
        """The graph in ``model`` if it is exactly the exporter's gather-and-sum graph, else None."""
        try:
            top = _fields(model)
            graphs = [v for n, w, v in top if n == 7 and isinstance(v, bytes)]
            opsets = [_fields(v) for n, w, v in top if n == 8 and isinstance(v, bytes)]
            if len(graphs) != 1 or any(_strings(o, 1) not in ([], [""]) for o in opsets):
                return None
            graph = _fields(graphs[0])
            nodes = [_node(v) for n, w, v in graph if n == 1 and isinstance(v, bytes)]
            inits = dict(_tensor(v) for n, w, v in graph if n == 5 and isinstance(v, bytes))
            inputs, outputs = _value_names(graph, 11), _value_names(graph, 12)
        except (_Malformed, UnicodeDecodeError, IndexError, ValueError):
            return None
        if inputs != ["ids", "weights"] or outputs != ["probabilities"] or set(inits) != {"W", "b", "T", "axis1"}:
            return None
        W, b, T, axis1 = inits["W"], inits["b"], inits["T"], inits["axis1"]
        head = _HEAD16 if W.dtype == np.float16 else _HEAD32
        if [(op, i, o, a) for op, i, o, a in nodes] != head + _TAIL:
            return None
        if (W.ndim != 2 or W.dtype not in (np.float16, np.float32) or b.dtype != np.float32
                or b.shape != (W.shape[1],) or T.dtype != np.float32 or T.shape != ()
                or axis1.dtype != np.int64 or axis1.tolist() != [1]):
            return None
        return cls(W=np.ascontiguousarray(W, dtype=np.float32), b=b.astype(np.float64), T=float(T))

    @property
    def n_classes(self) -> int:
        return int(self.W.shape[1])

    def _softmax(self, summed: F64) -> F64:
        logits = summed + self.b
        logits /= self.T
        logits -= logits.max(axis=-1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=-1, keepdims=True)
        return logits

    def one(self, ids: npt.NDArray[np.integer[Any]], weights: F64) -> list[float]:
        """Class probabilities of one text given its feature ``ids`` and tf-idf ``weights``."""
        summed = weights @ self.W.take(ids, axis=0).astype(np.float64)
        if self.n_classes > _PY_SOFTMAX_MAX:
            probs: list[float] = self._softmax(summed).tolist()
            return probs
        # A few classes: plain floats beat numpy's per-call overhead (same float64 arithmetic).
        T = self.T
        z = [(s + b) / T for s, b in zip(summed.tolist(), self._b)]
        top = max(z)
        e = [exp(x - top) for x in z]
        total = sum(e)
        return [x / total for x in e]

    def batch(self, ids: I64, weights: F64, lens: I64) -> F64:
        """Probabilities [texts, classes] of a flattened batch (text ``r`` owns ``lens[r]`` entries)."""
        n_texts = len(lens)
        summed = np.zeros((n_texts, self.n_classes), dtype=np.float64)
        ends = np.cumsum(lens)
        starts = ends - lens
        per_chunk = max(1, _CHUNK_CELLS // self.n_classes)
        first = 0
        while first < n_texts:
            # texts [first, last) whose entries fit one chunk (a longer text is a chunk of its own)
            last = int(np.searchsorted(ends, starts[first] + per_chunk, side="right"))
            last = min(n_texts, max(last, first + 1))
            lo, hi = int(starts[first]), int(ends[last - 1])
            if hi > lo:
                rows = np.take(self.W, ids[lo:hi], axis=0).astype(np.float64)
                rows *= weights[lo:hi, None]
                nonempty = np.flatnonzero(lens[first:last])
                summed[first + nonempty] = np.add.reduceat(rows, starts[first:last][nonempty] - lo, axis=0)
            first = last
        return self._softmax(summed)
