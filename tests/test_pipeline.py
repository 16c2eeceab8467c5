"""The user's API as a worker calls it: the LitServe order, errors, and checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from zeroserve import HTTPException, LitAPI, Response
from zeroserve.common import protocol as p
from zeroserve.common.errors import ConfigError
from zeroserve.worker.config import WorkerConfig
from zeroserve.worker.job import Job
from zeroserve.worker.loader import load_api, resolve_settings
from zeroserve.worker.pipeline import Pipeline as _Pipeline


def job(body: bytes, ct: str = "application/json", method: str = "POST") -> Job:
    return Job(b"c", b"r", {"ct": ct, "method": method}, body, 1e18, 0.0, 1)


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict
    error: Any


class Pipeline:
    """The real pipeline, with its whole answers read back as one Answer per job."""

    def __init__(self, api: Any, max_batch_size: int, expose_errors: bool = True) -> None:
        self.inner = _Pipeline(
            api, max_batch_size=max_batch_size, stream=False, expose_errors=expose_errors
        )

    def run_batch(self, jobs: list[Job]) -> list[Answer]:
        answers = {id(j): outs for j, outs in self.inner.run(jobs)}
        result = []
        for j in jobs:
            [(command, meta, body)] = answers[id(j)]
            if command == p.ERROR:
                result.append(Answer(meta["status"], "", b"", {}, meta["error"]))
            else:
                result.append(
                    Answer(meta["status"], meta["ct"], body, meta.get("headers", {}), None)
                )
        return result


class Doubler(LitAPI):
    def decode_request(self, request: Any) -> Any:
        return request["x"]

    def predict(self, x: Any) -> Any:
        if x == "boom":
            raise RuntimeError("kaput")
        if x == "teapot":
            raise HTTPException(418, {"why": "tea"})
        return x * 2

    def encode_response(self, output: Any) -> Any:
        return {"y": output}


def test_one_request_through_every_stage() -> None:
    [answer] = Pipeline(Doubler(), 1).run_batch([job(b'{"x": 21}')])
    assert (answer.status, answer.content_type, json.loads(answer.body)) == (
        200,
        "application/json",
        {"y": 42},
    )


def test_errors_become_answers() -> None:
    pipeline = Pipeline(Doubler(), 1)
    [bad_json] = pipeline.run_batch([job(b"{nope")])
    assert bad_json.status == 400 and "malformed JSON" in bad_json.error
    [empty] = pipeline.run_batch([job(b"")])
    assert empty.status == 400
    [missing] = pipeline.run_batch([job(b"{}")])
    assert missing.status == 500 and "decode_request failed: KeyError" in missing.error
    [crash] = pipeline.run_batch([job(b'{"x": "boom"}')])
    assert crash.status == 500 and "RuntimeError: kaput" in crash.error
    [tea] = pipeline.run_batch([job(b'{"x": "teapot"}')])
    assert (tea.status, tea.error) == (418, {"why": "tea"})


def test_what_user_code_raised_is_not_told_unless_asked() -> None:
    [crash] = Pipeline(Doubler(), 1, expose_errors=False).run_batch([job(b'{"x": "boom"}')])
    assert (crash.status, crash.error) == (500, "Internal server error")


def test_foreign_http_exceptions_keep_their_status() -> None:
    class FastAPIStyle(Exception):
        def __init__(self) -> None:
            self.status_code = 404
            self.detail = "not here"

    class API(LitAPI):
        def decode_request(self, request: Any) -> Any:
            raise FastAPIStyle()

        def predict(self, x: Any) -> Any:
            return x

    [answer] = Pipeline(API(), 1).run_batch([job(b"{}")])
    assert (answer.status, answer.error) == (404, "not here")


def test_batches_keep_order_and_isolate_bad_inputs() -> None:
    class Batched(Doubler):
        def predict(self, xs: list[Any]) -> list[Any]:
            return [x * 2 for x in xs]

    answers = Pipeline(Batched(max_batch_size=4), 4).run_batch(
        [job(b'{"x": 1}'), job(b"{bad"), job(b'{"x": 3}')]
    )
    assert [a.status for a in answers] == [200, 400, 200]
    assert json.loads(answers[2].body) == {"y": 6}


def test_unbatch_length_mismatch_fails_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    class Short(Doubler):
        def predict(self, xs: list[Any]) -> list[Any]:
            return xs[:1]

    answers = Pipeline(Short(max_batch_size=4), 4).run_batch([job(b'{"x": 1}'), job(b'{"x": 2}')])
    assert [a.status for a in answers] == [500, 500]
    assert "1 output(s) for a batch of 2" in answers[0].error
    assert "Short" in caplog.text


def test_async_methods_and_raw_responses() -> None:
    class Async(LitAPI):
        async def decode_request(self, request: Any) -> Any:
            return request

        async def predict(self, x: Any) -> Any:
            return x.upper()

        def encode_response(self, output: Any) -> Any:
            return Response(output, status_code=201, media_type="text/plain", headers={"X-A": "1"})

    [answer] = Pipeline(Async(), 1).run_batch([job(b"shout", ct="text/plain")])
    assert (answer.status, answer.content_type, answer.body, answer.headers) == (
        201,
        "text/plain; charset=utf-8",
        b"SHOUT",
        {"x-a": "1"},
    )


def test_bodies_by_content_type() -> None:
    seen = []

    class Spy(LitAPI):
        def predict(self, x: Any) -> Any:
            seen.append(x)
            return None

    pipeline = Pipeline(Spy(), 1)
    pipeline.run_batch([job(b"\x00\x01", ct="application/octet-stream")])
    pipeline.run_batch([job(b"a=1&b=two", ct="application/x-www-form-urlencoded")])
    pipeline.run_batch([job(b"[1]", ct="")])
    pipeline.run_batch([job(b"", method="GET")])
    assert seen == [b"\x00\x01", {"a": "1", "b": "two"}, [1], None]


def test_a_malformed_form_is_the_clients_400_and_costs_nothing_else() -> None:
    pipeline = Pipeline(Doubler(), 1)
    ct = "multipart/form-data; boundary=xx"
    [bad, good] = pipeline.run_batch([job(b"no boundary here", ct=ct), job(b'{"x": 2}')])
    assert bad.status == 400 and "malformed form body" in bad.error
    assert good.status == 200


def test_a_worker_imports_tornado_only_for_a_form() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import zeroserve.worker.pipeline, zeroserve.worker.process; "
        "print('tornado' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_values_json_cannot_encode_are_a_500() -> None:
    class Unencodable(LitAPI):
        def predict(self, x: Any) -> Any:
            return {1, 2}

    [answer] = Pipeline(Unencodable(), 1).run_batch([job(b"{}")])
    assert answer.status == 500 and "not JSON" in answer.error


def test_loader_takes_files_modules_classes_and_instances(tmp_path: Any) -> None:
    source = tmp_path / "my_api.py"
    source.write_text(
        "from zeroserve import LitAPI\n"
        "class A(LitAPI):\n"
        "    max_batch_size = 4\n"
        "    def predict(self, x):\n"
        "        return x\n"
        "instance = A(api_path='/other')\n"
    )
    made = load_api(f"{source}:A")
    assert type(made).__name__ == "A"
    assert load_api(f"{source}:instance").api_path == "/other"
    assert type(load_api("zeroserve.worker.demo:SquareAPI")).__name__ == "SquareAPI"
    settings = resolve_settings(made, WorkerConfig(brokers=("x",), api="x"))
    assert (settings.max_batch_size, settings.capacity, settings.service) == (4, 8, "A")
    flags = WorkerConfig(brokers=("x",), api="x", max_batch_size=2, route="/r", service="s")
    overridden = resolve_settings(made, flags)
    assert (overridden.max_batch_size, overridden.route, overridden.service) == (2, "/r", "s")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "MODULE:ATTR"),
        ("no_such_module_zz:A", "no module named"),
        ("zeroserve.worker.demo:Nope", "has no attribute"),
        ("zeroserve.worker.demo:LitAPI", "does not implement predict"),
        ("/no/such/file.py:A", "no such file"),
    ],
)
def test_loader_errors_are_clear(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_api(spec)


def test_settings_are_checked() -> None:
    class Gen(LitAPI):
        def predict(self, x: Any) -> Any:
            yield x

    with pytest.raises(ConfigError, match="generator"):
        resolve_settings(Gen(), WorkerConfig(brokers=("x",), api="x"))
    with pytest.raises(ConfigError, match="max_batch_size"):
        resolve_settings(Doubler(max_batch_size=0), WorkerConfig(brokers=("x",), api="x"))
    with pytest.raises(ConfigError, match="api_path"):
        resolve_settings(Doubler(api_path="predict"), WorkerConfig(brokers=("x",), api="x"))


def run_stream(api: Any, jobs: list[Job], max_batch_size: int = 1) -> dict[int, list]:
    """Every message a streaming pipeline emits, per job."""
    sent: dict[int, list] = {id(j): [] for j in jobs}
    pipeline = _Pipeline(
        api,
        max_batch_size=max_batch_size,
        stream=True,
        emit=lambda j, outs: sent[id(j)].extend(outs),
    )
    for j, outs in pipeline.run(jobs):
        sent[id(j)].extend(outs)
    return sent


def test_stream_pieces_then_end() -> None:
    class Counting(LitAPI):
        def predict(self, x: Any) -> Any:
            yield from ({"n": i} for i in range(x["upto"]))

    [messages] = run_stream(Counting(), [job(b'{"upto": 2}')]).values()
    assert [m[0] for m in messages] == [p.CHUNK, p.CHUNK, p.END]
    assert messages[0][1] == {"status": 200, "ct": "application/x-ndjson"}
    # Written as LitServe writes streamed dicts: json.dumps's own separators.
    assert [m[2] for m in messages[:2]] == [b'{"n": 0}\n', b'{"n": 1}\n']


def test_a_cancelled_stream_closes_its_generator() -> None:
    closed = []

    class Endless(LitAPI):
        def predict(self, x: Any) -> Any:
            try:
                while True:
                    yield "tick"
            finally:
                closed.append(True)

    j = job(b"{}")
    sent: list = []

    def emit(job_: Job, outs: list) -> None:
        sent.extend(outs)
        if len(sent) == 2:
            job_.cancelled = True

    _Pipeline(Endless(), max_batch_size=1, stream=True, emit=emit).run([j])
    assert closed == [True]
    assert [m[0] for m in sent] == [p.CHUNK, p.CHUNK, p.ERROR]
    assert sent[-1][1]["status"] == 499


def test_batched_streams_end_one_by_one_and_check_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from zeroserve import STREAM_END

    class Steps(LitAPI):
        def predict(self, xs: list[Any]) -> Any:
            for step in range(3):
                yield [step if step < x["n"] else STREAM_END for x in xs]

    short, long = job(b'{"n": 1}'), job(b'{"n": 3}')
    sent = run_stream(Steps(), [short, long], max_batch_size=2)
    assert [m[0] for m in sent[id(short)]] == [p.CHUNK, p.END]
    assert [m[0] for m in sent[id(long)]] == [p.CHUNK, p.CHUNK, p.CHUNK, p.END]

    class Lossy(LitAPI):
        def predict(self, xs: list[Any]) -> Any:
            yield [1]

    sent = run_stream(Lossy(), [job(b"{}"), job(b"{}")], max_batch_size=2)
    for messages in sent.values():
        assert messages[-1][0] == p.ERROR and messages[-1][1]["status"] == 500
        assert "1 output(s) for a batch of 2" in messages[-1][1]["error"]
    assert "Lossy" in caplog.text


def test_context_reaches_every_stage_that_asks() -> None:
    class WithContext(LitAPI):
        def decode_request(self, request: Any, context: dict) -> Any:
            context["decoded"] = True
            return request

        def predict(self, x: Any, context: dict) -> Any:
            return {"decoded": context["decoded"]}

        def encode_response(self, output: Any, context: dict) -> Any:
            return {**output, "same": "decoded" in context}

    [answer] = Pipeline(WithContext(), 1).run_batch([job(b"{}")])
    assert json.loads(answer.body) == {"decoded": True, "same": True}


def test_async_generators_stream_too() -> None:
    class AsyncStream(LitAPI):
        async def predict(self, x: Any) -> Any:
            for word in ("a", "b"):
                yield word

        async def encode_response(self, output: Any) -> Any:
            async for word in output:
                yield word.upper()

    [messages] = run_stream(AsyncStream(), [job(b"{}")]).values()
    assert [m[2] for m in messages] == [b"A", b"B", b""]
    assert messages[0][1]["ct"].startswith("text/plain")
