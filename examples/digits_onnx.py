"""Handwritten digits: a scikit-learn model run by ONNX Runtime, in batches.

    cluster up --api examples/digits_onnx.py:DigitsAPI
    curl -X POST localhost:8000/predict -H 'Content-Type: application/json' -d '{"pixels":
        [0,0,5,13,9,1,0,0, 0,0,13,15,10,15,5,0, 0,3,15,2,0,11,8,0, 0,4,12,0,0,8,8,0,
         0,5,8,0,0,9,8,0, 0,4,11,0,1,12,7,0, 0,2,14,5,10,12,0,0, 0,0,6,13,10,0,0,0]}'
    # {"digit":0,"probability":0.9998}

`setup` trains a logistic regression on the digits scikit-learn ships (8x8
images, pixel values 0 to 16), converts it with skl2onnx and loads it into an
ONNX Runtime session: the loading code a trained model would use, with no
download. A request is one image of 64 pixels; up to 32 are run at once.
Needs `pip install "zeroserve[examples]"`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import zeroserve as zs

PIXELS = 64


def session_options() -> Any:
    """ONNX Runtime keeps a thread per core unless told, and reads no thread variable: take
    this process's share of the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = zs.threads_per_process()
    options.inter_op_num_threads = 1
    return options


def train_onnx() -> bytes:
    """The model as an ONNX graph: what a training job would have saved to a file."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    features = digits.data.astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(features, digits.target)
    graph = to_onnx(model, features[:1], options={id(model.steps[-1][1]): {"zipmap": False}})
    return graph.SerializeToString()


class DigitsAPI(zs.LitAPI):
    max_batch_size = 32
    batch_timeout = 0.002

    def setup(self, device: str) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            train_onnx(), session_options(), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def decode_request(self, request: Any) -> np.ndarray:
        pixels = request.get("pixels") if isinstance(request, dict) else None
        if not isinstance(pixels, list) or len(pixels) != PIXELS:
            raise zs.HTTPException(422, f'send {{"pixels": [{PIXELS} numbers from 0 to 16]}}')
        try:
            return np.asarray(pixels, dtype=np.float32)
        except (TypeError, ValueError):
            raise zs.HTTPException(422, "pixels must be numbers") from None

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, images: np.ndarray) -> Any:
        single = images.ndim == 1  # max_batch_size 1: one image, not a batch of them
        feed = {self.input_name: images[None] if single else images}
        labels, probabilities = self.session.run(None, feed)
        best = probabilities.max(axis=1)
        answers = [(int(label), float(p)) for label, p in zip(labels, best, strict=True)]
        return answers[0] if single else answers

    def unbatch(self, output: list[tuple[int, float]]) -> list[tuple[int, float]]:
        return output

    def encode_response(self, output: tuple[int, float]) -> dict[str, Any]:
        digit, probability = output
        return {"digit": digit, "probability": round(probability, 4)}
