import asyncio
import re
import time

import pytest
from asgi_lifespan import LifespanManager
from fastapi.testclient import TestClient
from httpx import ASGITransport, AsyncClient

import zeroserve as ls
from zeroserve.callbacks import CallbackRunner, EventTypes
from zeroserve.callbacks.defaults import PredictionTimeLogger
from zeroserve.callbacks.defaults.metric_callback import RequestTracker
from zeroserve.utils import wrap_litserve_start


async def run_simple_request(server, num_requests=1):
    with wrap_litserve_start(server) as server:
        async with (
            LifespanManager(server.app) as manager,
            AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as ac,
        ):
            responses = [ac.post("/predict", json={"input": 4.0}) for _ in range(num_requests)]
            responses = await asyncio.gather(*responses)
            for response in responses:
                assert response.json() == {"output": 16.0}, "Unexpected response"


class SlowAPI(ls.test_examples.SimpleLitAPI):
    def predict(self, x):
        time.sleep(1)
        return super().predict(x)


def test_callback_runner():
    cb_runner = CallbackRunner()
    assert cb_runner._callbacks == [], "Callbacks list must be empty"

    cb = PredictionTimeLogger()
    cb_runner._add_callbacks(cb)
    assert cb_runner._callbacks == [cb], "Callback not added to runner"


def test_callback(capfd):
    lit_api = ls.test_examples.SimpleLitAPI()
    server = ls.LitServer(lit_api, callbacks=[PredictionTimeLogger()])

    with wrap_litserve_start(server) as server, TestClient(server.app) as client:
        response = client.post("/predict", json={"input": 4.0})
        assert response.json() == {"output": 16.0}

    captured = capfd.readouterr()
    pattern = r"Prediction took \d+\.\d{2} seconds"
    assert re.search(pattern, captured.out), f"Expected pattern not found in output: {captured.out}"


def test_metric_logger(capfd):
    cb = PredictionTimeLogger()
    cb_runner = CallbackRunner()
    cb_runner._add_callbacks(cb)
    assert cb_runner._callbacks == [cb], "Callback not added to runner"
    cb_runner.trigger_event(EventTypes.BEFORE_PREDICT.value, lit_api=None)
    cb_runner.trigger_event(EventTypes.AFTER_PREDICT.value, lit_api=None)

    captured = capfd.readouterr()
    pattern = r"Prediction took \d+\.\d{2} seconds"
    assert re.search(pattern, captured.out), f"Expected pattern not found in output: {captured.out}"


@pytest.mark.asyncio
async def test_request_tracker(capfd):
    lit_api = SlowAPI()

    server = ls.LitServer(lit_api, track_requests=False, callbacks=[RequestTracker()])
    await run_simple_request(server, 1)
    captured = capfd.readouterr()
    assert "Active requests: None" in captured.out, f"Expected pattern not found in output: {captured.out}"

    server = ls.LitServer(lit_api, track_requests=True, callbacks=[RequestTracker()])
    await run_simple_request(server, 4)
    captured = capfd.readouterr()
    assert "Active requests: 4" in captured.out, f"Expected pattern not found in output: {captured.out}"


@pytest.mark.asyncio
async def test_request_tracker_with_spec(capfd):
    from zeroserve.specs.openai_embedding import OpenAIEmbeddingSpec
    from zeroserve.test_examples.openai_embedding_spec_example import TestEmbedAPI

    lit_api = TestEmbedAPI(spec=OpenAIEmbeddingSpec())
    server = ls.LitServer(lit_api, track_requests=True, callbacks=[RequestTracker()])

    with wrap_litserve_start(server) as server:
        async with (
            LifespanManager(server.app) as manager,
            AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as ac,
        ):
            resp = await ac.post("/v1/embeddings", json={"input": "test", "model": "test"})
            assert resp.status_code == 200

    captured = capfd.readouterr()
    assert "Active requests: 1" in captured.out, f"Expected pattern not found in output: {captured.out}"


@pytest.mark.asyncio
async def test_request_tracker_with_openai_spec(capfd):
    from zeroserve.specs.openai import OpenAISpec
    from zeroserve.test_examples.openai_spec_example import TestAPI

    lit_api = TestAPI(spec=OpenAISpec())
    server = ls.LitServer(lit_api, track_requests=True, callbacks=[RequestTracker()])

    with wrap_litserve_start(server) as server:
        async with (
            LifespanManager(server.app) as manager,
            AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://test") as ac,
        ):
            resp = await ac.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "test"}], "model": "test"}
            )
            assert resp.status_code == 200

    captured = capfd.readouterr()
    assert "Active requests: 1" in captured.out, f"Expected pattern not found in output: {captured.out}"
