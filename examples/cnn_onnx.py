"""A small convolutional network (6.5 million parameters) run by ONNX Runtime, in batches.

    cluster up --api examples/cnn_onnx.py:ConvNetAPI
    python -c 'import json; print(json.dumps({"pixels": [0.5] * 784}))' |
        curl -X POST localhost:8000/predict -H 'Content-Type: application/json' -d @-
    # {"class":3,"probability":0.1...}

An MNIST-shaped classifier (28x28 grey images, 10 classes): two 3x3
convolutions of 64 and 128 channels, a 2x2 max-pool, a dense layer of 256 and
the output layer. One image costs about 130 million floating-point operations,
milliseconds of one core, so batching and where processes run matter.
`setup` builds the graph with fixed-seed weights (a trained file would load
the same way: `InferenceSession(path)`), so nothing is downloaded.
Needs `pip install "zeroserve[examples]"`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import zeroserve as zs

SIDE = 28
PIXELS = SIDE * SIDE


def session_options() -> Any:
    """ONNX Runtime keeps a thread per core unless told, and reads no thread variable: take
    this process's share of the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = zs.threads_per_process()
    options.inter_op_num_threads = 1
    return options


def build_onnx(seed: int = 0) -> bytes:
    """The network as an ONNX graph, its weights drawn from a fixed seed."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> Any:
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        values = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        return numpy_helper.from_array(values, name)

    def zeros(name: str, size: int) -> Any:
        return numpy_helper.from_array(np.zeros(size, np.float32), name)

    weights = [
        weight("c1", 64, 1, 3, 3), zeros("c1b", 64),
        weight("c2", 128, 64, 3, 3), zeros("c2b", 128),
        weight("d1", 128 * 14 * 14, 256), zeros("d1b", 256),
        weight("d2", 256, 10), zeros("d2b", 10),
    ]  # fmt: skip
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["image", "c1", "c1b"], ["a1"], **conv),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2", "c2b"], ["a2"], **conv),
        helper.make_node("Relu", ["a2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f2"]),
        helper.make_node("Gemm", ["f2", "d1", "d1b"], ["a3"]),
        helper.make_node("Relu", ["a3"], ["r3"]),
        helper.make_node("Gemm", ["r3", "d2", "d2b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class ConvNetAPI(zs.LitAPI):
    max_batch_size = 16
    batch_timeout = 0.002

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            build_onnx(), session_options(), providers=["CPUExecutionProvider"]
        )

    def decode_request(self, request: Any) -> np.ndarray:
        pixels = request.get("pixels") if isinstance(request, dict) else None
        if not isinstance(pixels, list) or len(pixels) != PIXELS:
            raise zs.HTTPException(422, f'send {{"pixels": [{PIXELS} numbers from 0 to 1]}}')
        try:
            return np.asarray(pixels, dtype=np.float32).reshape(1, SIDE, SIDE)
        except (TypeError, ValueError):
            raise zs.HTTPException(422, "pixels must be numbers") from None

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, images: np.ndarray) -> np.ndarray:
        single = images.ndim == 3  # max_batch_size 1: one image, not a batch of them
        probabilities = self.session.run(None, {"image": images[None] if single else images})[0]
        return probabilities[0] if single else probabilities

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, probabilities: np.ndarray) -> dict[str, Any]:
        best = int(probabilities.argmax())
        return {"class": best, "probability": round(float(probabilities[best]), 4)}
