"""One continuous-batching class, written for LitServe, that both servers run unchanged.

Each request asks for ``n`` steps; one step of the model takes 10 ms for the
whole batch (up to 4 sequences), like a decoder emitting one token per
sequence. The class counts its own steps, so that step use is measured the
same way on both servers: sequence-steps / (batch size x steps run), written
to the file named by ``BENCH_STEP_COUNTS`` after every step.
"""

from __future__ import annotations

import os
import time
from typing import Any

import litserve as ls
from litserve.loops import ContinuousBatchingLoop, Output
from litserve.utils import LitAPIStatus

STEP_S = 0.01
BATCH = 4


class MixedSteps(ls.LitAPI):
    def __init__(self) -> None:
        super().__init__(stream=True, max_batch_size=BATCH, loop=ContinuousBatchingLoop())

    def setup(self, device: str) -> None:
        self.active: dict[str, list[int]] = {}
        self.steps_run = 0
        self.sequence_steps = 0
        self.counts = os.environ.get("BENCH_STEP_COUNTS")

    def add_request(self, uid: str, request: Any) -> None:
        self.active[uid] = [int(request["n"]), 0]

    def has_capacity(self) -> bool:
        return len(self.active) < BATCH

    def has_active_requests(self) -> bool:
        return bool(self.active)

    def step(self, prev_outputs: list[Output] | None) -> list[Output]:
        batch = list(self.active.items())  # the forward pass's inputs, then its 10 ms
        time.sleep(STEP_S)
        self.steps_run += 1
        self.sequence_steps += len(batch)
        outputs = []
        for uid, state in batch:
            outputs.append(Output(uid, state[1], LitAPIStatus.OK))
            state[1] += 1
            if state[1] >= state[0]:
                outputs.append(Output(uid, "", LitAPIStatus.FINISH_STREAMING))
                del self.active[uid]
        if self.counts:
            with open(self.counts, "w") as f:
                f.write(f"{self.steps_run} {self.sequence_steps}")
        return outputs

    def encode_response(self, output: Any) -> Any:
        return {"token": output}
