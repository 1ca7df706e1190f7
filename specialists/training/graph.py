"""The gather-and-sum ONNX graph, built with ``onnx.helper`` and serialised deterministically.

``probabilities = Softmax((MatMul(weights[:, None, :], Gather(W, ids))[:, 0, :] + b) / T)``:
Gather picks the weight-matrix rows of the input's n-gram ids ([N, K, C]), the batched
MatMul multiplies each row by its tf-idf weight and sums over K, then bias, temperature
and softmax. Row 0 of the stored matrix is all zeros (padding, id 0); feature ``j`` is row ``j + 1``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["INPUT_IDS", "INPUT_WEIGHTS", "IR_VERSION", "OPSET", "OUTPUT", "build_graph"]

OPSET = 17
IR_VERSION = 8
INPUT_IDS = "ids"
INPUT_WEIGHTS = "weights"
OUTPUT = "probabilities"


def build_graph(
    W: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    temperature: float,
    name: str,
    weight_dtype: str = "float32",
) -> bytes:
    """Serialised ONNX model for weight matrix ``W`` [V, C], bias ``b`` [C] and ``temperature``."""
    n_classes = int(W.shape[1])
    W = np.vstack([np.zeros((1, n_classes)), W])  # row 0: padding
    store = np.float16 if weight_dtype == "float16" else np.float32
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(W.astype(store)), "W"),
        numpy_helper.from_array(b.astype(np.float32), "b"),
        numpy_helper.from_array(np.array(temperature, dtype=np.float32), "T"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    if store is np.float16:
        nodes = [
            helper.make_node("Gather", ["W", INPUT_IDS], ["rows16"], axis=0, name="gather"),
            helper.make_node("Cast", ["rows16"], ["rows"], to=TensorProto.FLOAT, name="cast"),
        ]
    else:
        nodes = [helper.make_node("Gather", ["W", INPUT_IDS], ["rows"], axis=0, name="gather")]
    nodes += [
        helper.make_node("Unsqueeze", [INPUT_WEIGHTS, "axis1"], ["w3"], name="unsqueeze"),
        helper.make_node("MatMul", ["w3", "rows"], ["summed3"], name="weighted_sum"),
        helper.make_node("Squeeze", ["summed3", "axis1"], ["summed"], name="squeeze"),
        helper.make_node("Add", ["summed", "b"], ["logits"], name="bias"),
        helper.make_node("Div", ["logits", "T"], ["scaled"], name="temperature"),
        helper.make_node("Softmax", ["scaled"], [OUTPUT], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        f"specialist_{name}",
        [
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["N", "K"]),
            helper.make_tensor_value_info(INPUT_WEIGHTS, TensorProto.FLOAT, ["N", "K"]),
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_classes])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="hybrid-router-specialists",
        producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString(deterministic=True))
