"""The launcher's scaling decision on its own, given the time and the brokers' word."""

from __future__ import annotations

from zeroserve.worker.scaling import Load, Scaler

BUSY = Load(queued=3, in_flight=2)
WORKING = Load(queued=0, in_flight=2)
IDLE = Load()


def test_waiting_work_adds_a_process_at_a_time_up_to_the_maximum() -> None:
    scaler = Scaler(1, 3, scale_down_after_s=5.0, grow_grace_s=1.0)
    assert scaler.decide(0.0, 1, BUSY) == 1
    assert scaler.decide(0.5, 2, BUSY) == 0, "the new process is given time to start"
    assert scaler.decide(1.0, 2, BUSY) == 1
    assert scaler.decide(5.0, 3, BUSY) == 0, "never past the maximum"
    assert scaler.decide(6.0, 3, WORKING) == 0


def test_an_idle_service_sheds_processes_one_at_a_time_down_to_the_minimum() -> None:
    scaler = Scaler(1, 3, scale_down_after_s=2.0, grow_grace_s=1.0)
    assert scaler.decide(0.0, 3, IDLE) == 0
    assert scaler.decide(1.9, 3, IDLE) == 0
    assert scaler.decide(2.0, 3, IDLE) == -1
    assert scaler.decide(3.0, 2, IDLE) == 0, "the idle clock starts again"
    assert scaler.decide(4.0, 2, IDLE) == -1
    assert scaler.decide(9.0, 1, IDLE) == 0, "never under the minimum"


def test_work_in_flight_resets_the_idle_clock() -> None:
    scaler = Scaler(1, 3, scale_down_after_s=2.0, grow_grace_s=1.0)
    assert scaler.decide(0.0, 2, IDLE) == 0
    assert scaler.decide(1.5, 2, WORKING) == 0
    assert scaler.decide(3.0, 2, IDLE) == 0
    assert scaler.decide(5.0, 2, IDLE) == -1


def test_fewer_than_the_minimum_grows_at_once() -> None:
    assert Scaler(2, 4, 1.0, 1.0).decide(0.0, 1, IDLE) == 1
