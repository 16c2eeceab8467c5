"""The real models of examples/ served through real processes, answers checked against the model."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
import pytest

from tests.cluster import ROOT, Cluster

pytest.importorskip("onnxruntime")
EXAMPLES = ROOT / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_are_recognised_in_batches_and_bad_images_refused(cluster: Cluster) -> None:
    from sklearn.datasets import load_digits

    cluster.up(f"{EXAMPLES / 'digits_onnx.py'}:DigitsAPI")
    digits = load_digits()
    images, labels = digits.data[:64], digits.target[:64]

    def ask(image: np.ndarray) -> dict:
        r = cluster.post({"pixels": [int(v) for v in image]})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, images))
    right = sum(a["digit"] == label for a, label in zip(answers, labels, strict=True))
    assert right >= 60, answers
    assert all(0.0 < a["probability"] <= 1.0 for a in answers)

    short = cluster.post({"pixels": [0] * 63})
    assert short.status_code == 422
    assert "64 numbers" in short.json()["detail"]
    assert cluster.post({"pixels": ["x"] * 64}).status_code == 422
    assert ask(images[0])["digit"] == labels[0]


def test_the_network_answers_what_it_computes_in_process(cluster: Cluster) -> None:
    cluster.up(f"{EXAMPLES / 'cnn_onnx.py'}:ConvNetAPI")
    module = example("cnn_onnx")
    local = module.ConvNetAPI()
    local.setup("cpu")
    rng = np.random.default_rng(7)
    images = rng.random((12, module.PIXELS)).round(3)

    def ask(image: np.ndarray) -> dict:
        r = cluster.post({"pixels": image.tolist()})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, images))
    for image, answer in zip(images, answers, strict=True):
        # With max_batch_size 1, predict takes one image: the same answer.
        expected = local.encode_response(
            local.predict(local.decode_request({"pixels": image.tolist()}))
        )
        assert answer["class"] == expected["class"]
        assert answer["probability"] == pytest.approx(expected["probability"], abs=2e-4)
