"""Small APIs: a square, a batched square, a tiny torch model, a stream of three."""

from __future__ import annotations

from typing import Any

from zeroserve.worker.api import LitAPI


class SimpleLitAPI(LitAPI):
    """Squares ``{"input": x}``."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleBatchedAPI(LitAPI):
    """Squares a batch of inputs as one numpy array."""

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> Any:
        import numpy as np

        return np.asarray(request["input"])

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleTorchAPI(LitAPI):
    """A linear layer (weight 2, bias 1) on the process's device; needs torch."""

    def setup(self, device: str) -> None:
        import torch

        self.device = device
        self.model = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.model.weight.fill_(2.0)
            self.model.bias.fill_(1.0)
        self.model.to(device)

    def decode_request(self, request: Any) -> Any:
        import torch

        return torch.tensor([request["input"]], device=self.device)

    def predict(self, x: Any) -> Any:
        return self.model(x[None, :])

    def encode_response(self, output: Any) -> Any:
        return {"output": float(output)}


class SimpleStreamAPI(LitAPI):
    """Streams three pieces naming the input; serve it with ``stream=True``."""

    def setup(self, device: str) -> None:
        self.model = lambda i, x: f"{i}: {x}"

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        for i in range(3):
            yield self.model(i, x)

    def encode_response(self, output_stream: Any) -> Any:
        for output in output_stream:
            yield {"output": output}
