"""A LitServe server.py whose only change is its import: `import zeroserve as ls`."""

import os
import sys

import zeroserve as ls


class MultiplyAPI(ls.LitAPI):
    def __init__(self, factor: int) -> None:
        super().__init__(api_path="/multiply")
        self.factor = factor  # made in __main__: it must reach the worker processes

    def setup(self, device):
        self.seen_device = device

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x * self.factor

    def encode_response(self, output):
        return {"output": output, "pid": os.getpid(), "device": self.seen_device}


class Recorder(ls.Callback):
    """LitServe's callback signatures, strictly: each event notes what it was given."""

    def _note(self, text):
        path = os.environ.get("ZS_TEST_EVENTS")
        if path:
            with open(path, "a") as f:
                f.write(text + "\n")

    def on_server_start(self, litserver):
        self._note(f"on_server_start {type(litserver).__name__}")

    def on_request(self, active_requests, litserver):
        self._note(f"on_request {active_requests} {type(litserver).__name__}")

    def on_before_predict(self, lit_api):
        self._note(f"on_before_predict {type(lit_api).__name__}")

    def on_response(self, litserver):
        self._note(f"on_response {type(litserver).__name__}")


class CountAPI(ls.LitAPI):
    def predict(self, x):
        for i in range(x["n"]):
            yield {"i": i}


if __name__ == "__main__":
    server = ls.LitServer(
        [MultiplyAPI(3), CountAPI(api_path="/count", stream=True)],
        accelerator="cpu",
        workers_per_device={"/multiply": 2},
        timeout=False,
        healthcheck_path="/healthz",
        info_path="/about",
        model_metadata={"name": "multiplier", "version": 2},
        track_requests=True,
        callbacks=[Recorder()],
    )
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
