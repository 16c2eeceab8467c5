"""Keeps N copies of a process running: restarts crashed ones with back-off, stops them all.

Children are started with the ``spawn`` method, so that none inherits a
ZeroMQ context, a thread or an event loop from the parent.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Set by `cluster up` on its children: the pid whose end should end them too.
PARENT_ENV = "ZEROSERVE_PARENT_PID"
#: A file where a process that stops for good writes why, in one line, for the process that
#: started it (``cluster up`` ends with that line).
EXIT_REPORT_ENV = "ZEROSERVE_EXIT_REPORT"
PARENT_CHECK_S = 0.5
#: Held while this process's environment is changed for a child being started, and by whoever
#: copies it for a child of its own, so that no other child inherits the change.
ENVIRON_LOCK = threading.Lock()


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """This process's environment with `changes` (None: removed) for the block, under
    ENVIRON_LOCK: what a child started in it inherits, when its start method takes no
    environment of its own (multiprocessing's)."""
    with ENVIRON_LOCK:
        saved = {name: os.environ.get(name) for name in changes}
        try:
            apply_environment(changes)
            yield
        finally:
            apply_environment(saved)


def apply_environment(
    changes: Mapping[str, str | None], target: MutableMapping[str, str] = os.environ
) -> None:
    """Set each variable of `changes` in `target`; None removes it."""
    for name, value in changes.items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def stop_with_parent(parent_pid: int | None = None) -> None:
    """End this process (SIGTERM to itself, so it stops the usual way) once the process that
    started it is gone: a `cluster up` killed with -9 must not leave its children behind.

    The pid comes from `parent_pid` or PARENT_ENV, which is removed so that this process's own
    children do not inherit it.
    """
    given = os.environ.pop(PARENT_ENV, None)
    if parent_pid is None:
        if given is None or not given.isdigit():
            return
        parent_pid = int(given)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        log.warning("the process that started this one (pid %d) is gone; stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass
class _Slot:
    index: int
    process: Any = None
    started_at: float = 0.0
    failures: int = 0
    next_start: float = 0.0
    #: How its last run ended, and what the process said of it (see ``report``).
    last_exit: str = ""
    #: The read end of the pipe the running process may say why it stops on.
    said: Any = None
    #: Asked to stop for good (the launcher shrinks): not restarted when it ends.
    retiring: bool = False


class Supervisor:
    def __init__(
        self,
        name: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        count: int,
        *,
        stop_timeout_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        args_for: Callable[[int], tuple[Any, ...]] | None = None,
        final_exits: dict[int, str] | None = None,
        on_tick: Callable[[], None] | None = None,
        reports: bool = False,
        restart: bool = True,
        restarted_anyway: frozenset[int] = frozenset(),
        done_exits: frozenset[int] = frozenset(),
        env: Mapping[str, str | None] | None = None,
        signals: bool = True,
    ) -> None:
        self.name = name
        self.target = target
        self.args = args
        #: The arguments of copy k, when they differ (each its own device, say).
        self.args_for = args_for
        #: Exit codes that no restart can mend (with what they mean): they stop every copy,
        #: and become the supervisor's own exit code.
        self.final_exits = final_exits or {}
        #: Called a few times a second from the supervising loop.
        self.on_tick = on_tick
        #: Each process gets, as its last argument, a pipe end to say why it stops (``report``).
        self.reports = reports
        #: Without restarts, a copy that ends stops them all (exit code 1 unless final).
        self.restart = restart
        #: Exit codes restarted even so: ends this system chose (a hung process killed).
        self.restarted_anyway = restarted_anyway
        #: Exit codes of a copy whose work is done (a drained worker): it is not restarted,
        #: and once every copy has ended so, the supervisor stops with 0.
        self.done_exits = done_exits
        #: Changes to the environment each process starts with (None: this one's as it is).
        self.env = env
        #: SIGTERM and SIGINT stop it (run in a process of its own); else ``request_stop``.
        self.signals = signals
        self._final_code = 0
        self.stop_timeout_s = stop_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.slots = [_Slot(i) for i in range(count)]
        self._context = multiprocessing.get_context("spawn")
        self._stop_signal: int | None = None

    def request_stop(self, signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        self._stop_signal = signum

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT, then stop every child; returns the exit code."""
        if self.signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        for slot in self.slots:
            self._start(slot)
        while self._stop_signal is None:
            alive = [s.process.sentinel for s in self.slots if s.process is not None]
            if alive:
                multiprocessing.connection.wait(alive, timeout=0.2)
            else:
                time.sleep(0.2)
            now = time.monotonic()
            for slot in list(self.slots):
                if slot.process is not None and not slot.process.is_alive():
                    self._on_exit(slot, now)
                if (
                    slot.process is None
                    and not slot.retiring
                    and now >= slot.next_start
                    and self._stop_signal is None
                ):
                    self._start(slot)
            if self.on_tick is not None:
                self.on_tick()
        log.info("%s: stopping %d process(es)", self.name, len(self.pids()))
        self._stop_all()
        return self._final_code

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.is_alive()]

    @property
    def wanted(self) -> int:
        """Copies kept running (those asked to stop for good not counted)."""
        return sum(1 for s in self.slots if not s.retiring)

    def grow(self) -> None:
        """One more copy."""
        slot = _Slot(max((s.index for s in self.slots), default=-1) + 1)
        self.slots.append(slot)
        self._start(slot)
        log.info("%s: added process %d (%d now)", self.name, slot.process.pid, self.wanted)

    def shrink(self) -> None:
        """One copy fewer: the newest stops the usual way (a worker drains first) and is not
        restarted."""
        running = [s for s in self.slots if not s.retiring and s.process is not None]
        if not running:
            return
        slot = running[-1]
        slot.retiring = True
        slot.process.terminate()
        log.info("%s: removing process %d (%d left)", self.name, slot.process.pid, self.wanted)

    def problem(self) -> str:
        """Why copies keep failing, in one line ("" while none does)."""
        now = time.monotonic()
        failing = [
            s
            for s in self.slots
            if s.failures and (s.process is None or now - s.started_at < self.stable_after_s)
        ]
        if not failing:
            return ""
        slot = max(failing, key=lambda s: s.failures)
        waiting = [s.next_start for s in failing if s.process is None]
        when = f"; next try in {max(0.0, min(waiting) - now):.0f} s" if waiting else ""
        return (
            f"{len(failing)} of {len(self.slots)} process(es) failing; the last "
            f"{slot.last_exit} ({slot.failures} time(s) in a row){when}"
        )

    def _start(self, slot: _Slot) -> None:
        args = self.args_for(slot.index) if self.args_for is not None else self.args
        writer = None
        if self.reports:
            slot.said, writer = self._context.Pipe(duplex=False)
            args = (*args, writer)
        process = self._context.Process(
            target=self.target, args=args, name=f"{self.name}-{slot.index}"
        )
        with environment(self.env or {}):
            process.start()
        if writer is not None:
            writer.close()
        slot.process = process
        slot.started_at = time.monotonic()
        log.debug("%s: started process %d", self.name, process.pid)

    def _on_exit(self, slot: _Slot, now: float) -> None:
        process, slot.process = slot.process, None
        code, pid = process.exitcode, process.pid
        process.close()
        said = _read_report(slot.said)
        slot.said = None
        if slot.retiring:
            self.slots.remove(slot)
            log.info("%s: process %d removed (exit code %s)", self.name, pid, code)
            return
        if code in self.done_exits:
            slot.retiring = True  # for good: never started again
            self.slots.remove(slot)
            log.info("%s: process %d is done (%d left)", self.name, pid, len(self.slots))
            if not self.slots:
                log.info("%s: every process is done; stopping", self.name)
                self._stop_signal = signal.SIGTERM
            return
        if code in self.final_exits or not (self.restart or code in self.restarted_anyway):
            why = self.final_exits.get(code, f"ended (exit code {code}), restarts are off")
            if said:
                why = f"{why}: {said}"
            log.error("%s: process %d %s; stopping", self.name, pid, why)
            leave_exit_report(why)
            self._final_code = code if code in self.final_exits else 1
            self._stop_signal = signal.SIGTERM
            return
        if now - slot.started_at >= self.stable_after_s:
            slot.failures = 0
        delay = min(self.backoff_initial_s * (2**slot.failures), self.backoff_max_s)
        slot.failures += 1
        slot.next_start = now + delay
        how = (
            f"was killed by signal {-code}"
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        slot.last_exit = f"{how}: {said}" if said else how
        log.warning("%s: process %d %s; restarting in %.1f s", self.name, pid, how, delay)

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process is not None]
        for process in running:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in running:
            if process.is_alive():
                log.warning(
                    "%s: process %d did not stop in time; killing it", self.name, process.pid
                )
                process.kill()
                process.join(5)


#: The longest report a process may leave.
MAX_REPORT_BYTES = 1000


def report(said: Any, text: str) -> None:
    """From a supervised process: say in one line why it stops (its supervisor shows it).
    Plain bytes, never a pickle."""
    if said is not None:
        with contextlib.suppress(OSError, ValueError):
            said.send_bytes(text.encode()[:MAX_REPORT_BYTES])


def leave_exit_report(text: str) -> None:
    """Write why this process stops for good where its starter looks (EXIT_REPORT_ENV)."""
    path = os.environ.get(EXIT_REPORT_ENV)
    if path:
        with contextlib.suppress(OSError), open(path, "w", encoding="utf-8") as f:
            f.write(text[:MAX_REPORT_BYTES])


def read_exit_report(path: str) -> str:
    """What a process left with ``leave_exit_report``; empty when nothing."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        return f.read(MAX_REPORT_BYTES).strip()
    return ""


def _read_report(said: Any) -> str:
    if said is None:
        return ""
    try:
        if said.poll():
            return said.recv_bytes(MAX_REPORT_BYTES).decode(errors="replace")
    except (OSError, EOFError, ValueError):
        pass
    finally:
        said.close()
    return ""
