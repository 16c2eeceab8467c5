"""Built-in demo APIs that need no download.

``SquareAPI`` is LitServe's quick-start model (x squared), batched.
``ChatAPI`` is a small word-trigram language model trained at start-up on a
text shipped with zeroserve; serve it with ``--spec openai`` for a streaming
chat endpoint an OpenAI client can talk to.
"""

from __future__ import annotations

import random
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from zeroserve.common.errors import HTTPException
from zeroserve.worker.api import LitAPI
from zeroserve.worker.demo_corpus import CORPUS


class SquareAPI(LitAPI):
    """POST {"input": 4} to /predict and get {"output": 16}."""

    max_batch_size = 8
    batch_timeout = 0.002

    def setup(self, device: str) -> None:
        self.model = lambda x: x**2

    def decode_request(self, request: Any) -> float:
        value = request.get("input") if isinstance(request, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HTTPException(422, 'send a JSON object with a number, like {"input": 4}')
        return value

    def predict(self, x: list[float]) -> list[float]:
        return [self.model(v) for v in x]

    def encode_response(self, output: float) -> dict[str, float]:
        return {"output": output}


_WORD = re.compile(r"[A-Za-z']+|[.,!?;:]")


class ChatAPI(LitAPI):
    """Answers in the style of its training text, one word at a time."""

    stream = True
    #: Seconds between words, so that a person sees the stream arrive.
    word_delay_s = 0.03
    default_max_tokens = 60

    def setup(self, device: str) -> None:
        words = _WORD.findall(CORPUS)
        self.chain: dict[tuple[str, str], list[str]] = defaultdict(list)
        for a, b, c in zip(words, words[1:], words[2:], strict=False):
            self.chain[(a, b)].append(c)
        self.starts = [pair for pair in self.chain if pair[0][0].isupper()]
        self.vocabulary = {w.lower() for w in words}

    def _start(self, prompt: str, rng: random.Random) -> tuple[str, str]:
        """Begin near a word of the prompt when the text knows it."""
        for word in reversed(_WORD.findall(prompt)):
            if word.lower() in self.vocabulary and word.isalpha():
                pairs = [p for p in self.chain if p[0].lower() == word.lower()]
                if pairs:
                    return rng.choice(pairs)
        return rng.choice(self.starts)

    def predict(
        self, messages: list[dict[str, Any]], context: dict[str, Any] | None = None
    ) -> Iterator[str]:
        prompt = " ".join(
            m["content"]
            for m in messages
            if m.get("role") == "user" and isinstance(m.get("content"), str)
        )
        rng = random.Random(zlib.crc32(prompt.encode()))
        fields = context or {}
        limit = fields.get("max_completion_tokens") or fields.get("max_tokens")
        limit = (
            min(int(limit), 512)
            if isinstance(limit, int) and limit > 0
            else self.default_max_tokens
        )
        a, b = self._start(prompt, rng)
        yield a[0].upper() + a[1:]
        words = [a]
        for _ in range(limit - 1):
            words.append(b)
            yield b if b in ".,!?;:" else " " + b
            time.sleep(self.word_delay_s)
            if b in ".!?" and len(words) >= limit // 2:
                return
            followers = self.chain.get((a, b))
            if not followers:
                return
            a, b = b, rng.choice(followers)
