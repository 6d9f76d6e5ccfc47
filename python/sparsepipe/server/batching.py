"""Dynamic request batching: concurrent requests to one endpoint merged into one pipeline call."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import anyio
from pydantic import BaseModel

from ..pipeline import BatchFields

__all__ = ["DynamicBatcher", "Merged", "PipelineCrashed", "call_contained"]


class PipelineCrashed(RuntimeError):
    """A pipeline call ended with a BaseException that is not an Exception (``SystemExit``,
    ``KeyboardInterrupt`` raised by pipeline code): the request fails, the server does not."""


def call_contained(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with a non-Exception BaseException turned into PipelineCrashed."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        raise
    except BaseException as e:
        raise PipelineCrashed(f"the pipeline raised {type(e).__name__}({e!r})") from e


@dataclass
class Merged:
    """What one request gets back from a merged call."""

    output: Any
    timings: Any
    queue_s: float
    batch_items: int


class DynamicBatcher:
    """Merges requests arriving within ``max_delay_s`` of the first, up to ``max_items`` items,
    as the pipeline's task declares (`BatchFields`)."""

    def __init__(
        self,
        fields: BatchFields,
        pipeline: Callable[..., Any],
        input_model: type[BaseModel],
        output_model: type[BaseModel],
        *,
        max_items: int,
        max_delay_s: float,
        timings: Callable[[], Any],
    ) -> None:
        fields.check(input_model, output_model)
        self.fields = fields
        self.pipeline = pipeline
        self.input_model = input_model
        self.output_model = output_model
        self.max_items = max_items
        self.max_delay_s = max_delay_s
        self.timings = timings
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None

    def _count(self, body: BaseModel) -> int:
        return self.fields.count(body)

    async def submit(self, body: BaseModel) -> Merged:
        """Queues ``body`` and waits for its share of a merged call (exceptions propagate)."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        assert self._queue is not None
        await self._queue.put((body, future, time.perf_counter()))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            first = await queue.get()
            if first[1].done():  # its caller gave up (timed out or disconnected): skip it
                continue
            group = [first]
            items = self._count(first[0])
            deadline = time.perf_counter() + self.max_delay_s
            while items < self.max_items:
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    break
                if nxt[1].done():
                    continue
                group.append(nxt)
                items += self._count(nxt[0])
            await self._run(group, items)

    async def _run(self, group: Sequence[Any], items: int) -> None:
        started = time.perf_counter()
        group = [entry for entry in group if not entry[1].done()]  # callers still waiting
        if not group:
            return
        items = sum(self._count(body) for body, _, _ in group)
        if len(group) == 1:
            await self._run_one(group[0], items, started)
            return
        bodies = [body for body, _, _ in group]
        try:
            merged, counts, singles = self.fields.merge(bodies, self.input_model)
            out, timings = await anyio.to_thread.run_sync(self._call, merged)
            parts = self.fields.split(out, self.output_model, counts, singles)
        except Exception:
            for entry in group:  # one bad request must not fail the others: run each alone
                await self._run_one(entry, self._count(entry[0]), started)
            return
        for (_, future, received), part in zip(group, parts):
            if not future.done():
                future.set_result(Merged(part, timings, started - received, items))

    async def _run_one(self, entry: Any, items: int, started: float) -> None:
        body, future, received = entry
        try:
            out, timings = await anyio.to_thread.run_sync(self._call, body)
        except Exception as e:
            if not future.done():
                future.set_exception(e)
            return
        if not future.done():
            future.set_result(Merged(out, timings, started - received, items))

    def _call(self, body: BaseModel) -> tuple[Any, Any]:
        out = call_contained(self.pipeline, body)
        return out, self.timings()
