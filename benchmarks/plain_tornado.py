"""The ceiling: one Tornado process doing the benchmark's work in its handler, nothing else."""

from __future__ import annotations

import asyncio
import json
import sys

import tornado.web


class Double(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"output": json.loads(self.request.body)["input"] * 2}))


async def main(port: int) -> None:
    tornado.web.Application([(r"/predict", Double)]).listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
