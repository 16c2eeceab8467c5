"""Run inside a test host's network namespace: ask the broker for its status, or send load.

    python netns_client.py statuses
    python netns_client.py load URL COUNT CONCURRENCY [SECONDS_EACH]

`statuses` reads lines "tcp://HOST:PORT [TOKEN_FILE]" and answers each with a line of JSON (null
when the broker did not answer): one process for all of a test's status polls. `load` prints
one JSON document.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from zeroserve.common.security import peer_token_keys
from zeroserve.common.status_client import fetch_status


def load(url: str, count: int, concurrency: int, seconds: float) -> list[dict]:
    session_per_thread: dict[int, requests.Session] = {}

    def call(i: int) -> dict:
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        began = time.monotonic()
        try:
            r = session.post(url, json={"op": "sleep", "seconds": seconds, "value": i}, timeout=30)
            body = r.json()
            return {
                "i": i,
                "status": r.status_code,
                "echo": body.get("echo"),
                "pid": body.get("pid"),
                "host": body.get("host"),
                "seconds": time.monotonic() - began,
            }
        except requests.RequestException as exc:
            return {"i": i, "status": -1, "error": str(exc), "seconds": time.monotonic() - began}

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(call, range(count)))


def statuses() -> None:
    for line in sys.stdin:
        endpoint, *token_file = line.split()
        token = Path(token_file[0]).read_text().strip() if token_file else None
        try:
            snapshot = fetch_status(
                endpoint, timeout_s=1.0, keys=peer_token_keys(token) if token else None
            )
        except Exception:  # unreachable, or refused: the test sees null and asks again
            snapshot = None
        print(json.dumps(snapshot), flush=True)


def main() -> None:
    if sys.argv[1] == "statuses":
        statuses()
    else:
        url, count, concurrency = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 0.02
        print(json.dumps(load(url, count, concurrency, seconds)))


if __name__ == "__main__":
    main()
