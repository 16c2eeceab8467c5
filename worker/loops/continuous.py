"""The continuous loop: iteration-level batching for ``step``-style APIs (LitServe's contract).

Sequences join the running batch between two steps, as soon as the API's
``has_capacity()`` allows, and leave when their output says they are done;
a finished sequence's place is taken at the next step. Each step's outputs
go out at once, as stream pieces. The serving thread runs the steps and,
between two of them, takes in what arrived without waiting; it waits in a
blocking receive only while no sequence is active.

A sequence whose client left or whose deadline passed ends before the next
step: its answer goes out, its later outputs are dropped, and the API hears
of it through ``cancel_request(uid)`` when it has one. A ``step`` that
raises ends every active sequence with an error; new ones are taken as
before.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from zeroserve.common import protocol as p
from zeroserve.common.logs import LogThrottle
from zeroserve.worker.api import LitAPIStatus, Output
from zeroserve.worker.bridge import drive
from zeroserve.worker.job import Job
from zeroserve.worker.loops.batching import ThreadedLoop
from zeroserve.worker.loops.serving import cancelled_out

log = logging.getLogger(__name__)

#: How long to wait for input when there is nothing to step but work that waits (``step``
#: gave nothing, or ``has_capacity()`` admits none).
IDLE_STEP_MS = 10


class DefaultSteps:
    """LitServe's default variant, as a ``step`` contract: the API's ``predict(inputs,
    generated_sequences)`` gives one token per sequence, ``has_finished`` ends one."""

    def __init__(self, api: Any, max_batch_size: int, max_sequence_length: int) -> None:
        self.api = api
        self.max_batch_size = max_batch_size
        self.max_sequence_length = max_sequence_length
        #: uid -> (decoded input, tokens so far), in the order they joined.
        self.sequences: dict[str, tuple[Any, list[Any]]] = {}

    def add_request(self, uid: str, request: Any) -> None:
        self.sequences[uid] = (request, [])

    def has_capacity(self) -> bool:
        return len(self.sequences) < self.max_batch_size

    def has_active_requests(self) -> bool:
        return bool(self.sequences)

    def cancel_request(self, uid: str) -> None:
        self.sequences.pop(uid, None)

    def step(self, prev_outputs: list[Any] | None) -> list[Output]:
        uids = list(self.sequences)
        inputs = [self.sequences[uid][0] for uid in uids]
        generated = [self.sequences[uid][1] for uid in uids]
        tokens = list(self.api.predict(inputs, generated))
        if len(tokens) != len(uids):
            raise ValueError(f"predict returned {len(tokens)} token(s) for {len(uids)} sequence(s)")
        outputs = []
        for uid, token, sequence in zip(uids, tokens, generated, strict=True):
            sequence.append(token)
            outputs.append(Output(uid, token, LitAPIStatus.OK))
            if self.api.has_finished(uid, token, self.max_sequence_length):
                outputs.append(Output(uid, "", LitAPIStatus.FINISH_STREAMING))
                del self.sequences[uid]
        return outputs


@dataclass(slots=True)
class _Sequence:
    job: Job
    framer: Any
    context: dict[str, Any]


class ContinuousLoop(ThreadedLoop):
    """``step``-style APIs: one batch that sequences join and leave between steps."""

    thread_name = "continuous"

    def __init__(self, *args: Any, steps: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: What runs the steps: the API itself, or DefaultSteps around it.
        self.steps = steps
        self._cancel_hook = getattr(steps, "cancel_request", None)
        self.waiting: deque[Job] = deque()
        self.sequences: dict[str, _Sequence] = {}
        self._uids = itertools.count(1)
        self._prev: list[Any] | None = None
        self._user_log = LogThrottle(10.0)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def _run(self) -> None:
        while not self._stopped:
            if not self.sequences and not self._api_active():
                # Nothing to step: wait for a request, or a while when some wait for room.
                self._wait(IDLE_STEP_MS if self.waiting else None)
            if not self._mailbox.empty():
                self._read_mailbox()
            self._read_socket()
            self._drop_ended()
            self._join()
            self._step()

    def _admit(self, job: Job) -> None:
        self.waiting.append(job)

    def _forget(self, dropped: list[Job]) -> None:
        held = self.jobs
        for uid, seq in list(self.sequences.items()):
            if held.get(seq.job.key) is not seq.job:
                self._leave(uid)
        self.waiting = deque(job for job in self.waiting if held.get(job.key) is job)

    def _cancelled(self, job: Job) -> None:
        """Its answer goes at once; the API hears of it before the next step."""
        self._send_outs(job, [cancelled_out(job)])

    # -- joining and leaving ---------------------------------------------------------------------

    def _api_active(self) -> bool:
        try:
            return bool(self.steps.has_active_requests())
        except Exception as exc:
            self._user_error("has_active_requests", exc)
            return False

    def _user_error(self, method: str, exc: Exception) -> None:
        if self._user_log.ready():
            log.error("%s.%s raised", self.pipeline.name, method, exc_info=exc)

    def _drop_ended(self) -> None:
        """End sequences whose client left or whose deadline passed."""
        now = time.monotonic()
        for uid, seq in list(self.sequences.items()):
            job = seq.job
            if self.jobs.get(job.key) is not job:
                self._leave(uid)
            elif job.deadline <= now:
                self._send_outs(job, [cancelled_out(job)])
                self._leave(uid)

    def _leave(self, uid: str) -> None:
        if self.sequences.pop(uid, None) is not None and self._cancel_hook is not None:
            try:
                self._cancel_hook(uid)
            except Exception as exc:
                self._user_error("cancel_request", exc)

    def _join(self) -> None:
        """Add waiting requests while the API has room."""
        hooks = self.pipeline.hooks
        while self.waiting:
            job = self.waiting[0]
            if self.jobs.get(job.key) is not job or job.deadline <= time.monotonic():
                self.waiting.popleft()
                self._send_outs(job, [cancelled_out(job)])
                continue
            try:
                room = self.steps.has_capacity()
            except Exception as exc:
                self._user_error("has_capacity", exc)
                return
            if not room:
                return
            self.waiting.popleft()
            self.pipeline.waited(job)
            hooks.fire("on_before_decode_request")
            with self.pipeline.stage(job, "decode_request"):
                decoded = drive(self.pipeline.decode(job))
            hooks.fire("on_after_decode_request")
            if isinstance(decoded, list):
                self._send_outs(job, decoded)
                continue
            value, context, framer = decoded
            uid = str(next(self._uids))
            try:
                self.steps.add_request(uid, value)
            except Exception as exc:
                self._send_outs(
                    job, framer.error(*self.pipeline.failure("add_request", exc, [job]))
                )
                continue
            self.sequences[uid] = _Sequence(job, framer, context)

    # -- a step ------------------------------------------------------------------------------------

    def _step(self) -> None:
        if not self.sequences and not self._api_active():
            return
        began = time.monotonic()
        size = len(self.sequences)
        self.working = [seq.job for seq in self.sequences.values()]
        hooks = self.pipeline.hooks
        hooks.fire("on_before_predict")
        try:
            outputs = self.steps.step(self._prev)
            if outputs is None or isinstance(outputs, (str, bytes, dict)):
                raise TypeError("step must return a list of Output(uid, output, status)")
            outputs = list(outputs)
        except Exception as exc:
            self.working = []
            self._prev = None
            self._fail_all(exc)
            return
        finally:
            hooks.flush_logs()
        self.working = []
        hooks.fire("on_after_predict")
        self._count_batch(size, began)
        if not outputs:
            if self.sequences and self._user_log.ready():
                log.warning("%s.step returned no output for active sequences", self.pipeline.name)
            self._wait(IDLE_STEP_MS)
            return
        self._prev = outputs
        for output in outputs:
            self._deliver(output)

    def _fail_all(self, exc: Exception) -> None:
        jobs = [seq.job for seq in self.sequences.values()]
        failure = self.pipeline.failure("step", exc, jobs)
        for uid, seq in list(self.sequences.items()):
            self._send_outs(seq.job, seq.framer.error(*failure))
            self._leave(uid)

    def _deliver(self, output: Any) -> None:
        try:
            uid, value, status = output.uid, output.output, output.status
        except AttributeError:
            if self._user_log.ready():
                log.error("%s.step returned %r, not an Output", self.pipeline.name, output)
            return
        seq = self.sequences.get(uid)
        if seq is None:
            return  # its sequence has ended: a late output
        if status == LitAPIStatus.FINISH_STREAMING:
            # As in LitServe, the output that finishes a stream is not sent.
            self._finish(uid, seq.framer.end())
        elif status == LitAPIStatus.ERROR:
            failure = self.pipeline.failure("step", _as_exception(value), [seq.job])
            self._finish(uid, seq.framer.error(*failure))
        else:
            try:
                encoded = drive(self.pipeline.call("encode_response", value, seq.context))
                outs = seq.framer.piece(encoded)
            except Exception as exc:
                outs = seq.framer.error(*self.pipeline.failure("encode_response", exc, [seq.job]))
            if self._send_outs(seq.job, outs):
                self._leave(uid)

    def _finish(self, uid: str, outs: list[p.Answer]) -> None:
        seq = self.sequences.pop(uid)
        self._send_outs(seq.job, outs)


def _as_exception(value: Any) -> BaseException:
    """What an ERROR output carries: an exception (an HTTP error keeps its status), or a value
    that says what went wrong."""
    if isinstance(value, BaseException):
        return value
    return RuntimeError(str(value) if value not in (None, "") else "the sequence failed")
