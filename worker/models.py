"""The models one worker process holds, when its API serves many (``load_model``).

A least-recently-used set of at most ``max_models_per_worker`` models, keyed by model id.
A miss calls the API's ``load_model(model_id)`` once, however many requests ask for that
model at the same time: under the async loop the others await the same load; the sync
loops run one batch at a time, so the next batch finds the model loaded. A model in use by
a running batch is never evicted; past the limit the least recently used idle one goes,
through the API's ``unload_model(model_id, model)`` when it defines one.

``load_model`` refuses a model by raising ``KeyError`` (or any ``LookupError``) or by
returning None: the request is answered 404 naming the model, and nothing is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

#: Models a worker process holds unless its API says otherwise: Ray Serve's default for its
#: model multiplexing. Enough that a few hot models do not evict each other at every switch,
#: few enough that models of a typical size fit in one process's memory together.
DEFAULT_MAX_MODELS = 3

#: Runs one of the API's methods with its arguments and returns its result, awaiting it
#: when the method is a coroutine (``Pipeline.invoke``).
Invoke = Callable[..., Awaitable[Any]]


class UnknownModel(LookupError):
    """``load_model`` refused the model id: a 404 that names it."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"model {model_id!r} not found")
        self.model_id = model_id


class ModelCache:
    """Loaded models by id, least recently used first; counters for status and metrics."""

    def __init__(
        self,
        load: Callable[[str], Any],
        unload: Callable[[str, Any], Any] | None,
        limit: int,
        *,
        concurrent: bool = False,
    ) -> None:
        self._load = load
        self._unload = unload
        self.limit = limit
        #: Under the async loop, several requests may ask at once: a miss is then a shared future.
        self.concurrent = concurrent
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}
        self._users: Counter[str] = Counter()
        #: What the heartbeats report (read from another thread: replaced whole, never changed).
        self.held: tuple[str, ...] = ()
        #: Requests that found their model loaded, those that did not (they waited for a
        #: load), the loads begun and the evictions; models refused count in none.
        self.hits = 0
        self.misses = 0
        self.loads = 0
        self.evictions = 0

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def counters(self) -> dict[str, Any]:
        return {
            "loaded_models": list(self.held),
            "model_hits": self.hits,
            "model_misses": self.misses,
            "model_loads": self.loads,
            "model_evictions": self.evictions,
        }

    async def acquire(self, model_id: str, invoke: Invoke) -> Any:
        """The model, loaded when it is not; held in use until ``release``. Raises
        ``UnknownModel`` when ``load_model`` refuses it, or what ``load_model`` raised."""
        model = self._models.get(model_id)
        if model is not None:
            self._models.move_to_end(model_id)
            self.hits += 1
            self._users[model_id] += 1
            return model
        self.misses += 1
        pending = self._loading.get(model_id)
        if pending is not None:
            try:
                model = await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                self.misses -= 1
                return await self.acquire(model_id, invoke)  # the load was: try it again
            except UnknownModel:
                self.misses -= 1
                raise
            self._users[model_id] += 1
            return model
        future = asyncio.get_running_loop().create_future() if self.concurrent else None
        if future is not None:
            self._loading[model_id] = future
            self._show()
        self.loads += 1
        try:
            model = await invoke(self._load, model_id)
            if model is None:
                raise UnknownModel(model_id)
        except BaseException as exc:
            refused = UnknownModel(model_id) if isinstance(exc, LookupError) else exc
            if isinstance(refused, UnknownModel):  # an unknown model counts for nothing
                self.misses -= 1
                self.loads -= 1
            if future is not None and isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif future is not None:
                future.set_exception(refused)
                future.exception()  # retrieved: no "never retrieved" warning without waiters
            if refused is exc:
                raise
            raise refused from None
        finally:
            if future is not None:
                del self._loading[model_id]
                self._show()  # a load that failed is held no more
        self._models[model_id] = model
        self._users[model_id] += 1
        if future is not None:
            future.set_result(model)
        log.info("loaded model %r (%d held)", model_id, len(self._models))
        await self._evict(invoke)
        return model

    async def release(self, model_id: str, invoke: Invoke) -> None:
        """A batch is done with the model: it may be evicted now."""
        self._users[model_id] -= 1
        if self._users[model_id] <= 0:
            del self._users[model_id]
        await self._evict(invoke)

    async def _evict(self, invoke: Invoke) -> None:
        while len(self._models) > self.limit:
            victim = next((m for m in self._models if not self._users.get(m)), None)
            if victim is None:
                break  # all in use: the limit is met again once a batch lets go
            model = self._models.pop(victim)
            self.evictions += 1
            log.info("evicted model %r (least recently used)", victim)
            if self._unload is not None:
                try:
                    await invoke(self._unload, victim, model)
                except Exception:
                    log.exception("unload_model(%r) raised", victim)
        self._show()

    def _show(self) -> None:
        self.held = (*self._models, *(m for m in self._loading if m not in self._models))
