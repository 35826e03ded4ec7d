"""Micro-batching: concurrent requests share one model call, up to N requests or T ms, whichever comes first.

One asyncio task gathers waiting requests and hands each batch to a worker thread (torch and ONNX Runtime release
the GIL inside their kernels, so the event loop keeps accepting requests meanwhile). With `workers` > 1, that many
batches run at once (a single-threaded ONNX Runtime session per batch keeps every core busy without the intra-op
thread pool's synchronisation). While the workers are busy, new requests queue; the next batch takes them at once,
so under load batches grow by themselves. The T ms wait applies only under load (the last batch held more than one
request): a lone client would otherwise pay T ms per request for nothing. The queue is bounded: a request beyond
`queue_size` waiting gets 503 at once instead of using up memory. A request whose client gave up (deadline,
disconnect) is dropped before its batch runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tunewise.serve.errors import ServeError


@dataclass
class _Job:
    texts: list[Any]
    future: asyncio.Future
    queued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """`await batcher.submit(texts) -> list[result]`; `predict(all_texts) -> list[result]` runs in a thread."""

    def __init__(self, name: str, predict: Callable[[list[Any]], Sequence[Any]], *, max_requests: int,
                 max_wait_ms: float, queue_size: int, metrics=None, workers: int = 1):  # noqa: ANN001
        self.name, self.predict = name, predict
        self.workers = max(1, workers)
        self.max_requests, self.max_wait = max_requests, max_wait_ms / 1000.0
        self.queue_size, self.metrics = queue_size, metrics
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"tunewise-{name}")
        self._running: set[asyncio.Task] = set()
        self.waiting = 0  # admitted requests not answered yet (queued or in the running batch)
        self.last_batch_requests = 0  # requests in the last batch: >1 means load, so the next batch waits for more

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(), name=f"tunewise-batcher-{self.name}")

    async def stop(self) -> None:
        for task in [self._task, *self._running]:
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[Any]) -> list[Any]:
        if self._queue is None:
            raise ServeError(503, "not_ready", "the model is still loading; retry shortly")
        if self.waiting >= self.queue_size:
            raise ServeError(503, "overloaded", f"the {self.name} queue is full ({self.queue_size} requests "
                                                f"waiting); retry shortly", headers={"Retry-After": "1"})
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
        self.waiting += 1
        self._gauge()
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self.waiting -= 1
            self._gauge()
            if not job.future.done():
                job.future.cancel()  # the caller gave up: the batch loop skips it

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(endpoint=self.name).set(self.waiting)

    async def _gather(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        # wait for company only under load: when the last batch was a lone request (one client, or an idle server)
        # the T ms would delay it for nobody; requests already queued are still taken at once
        deadline = time.monotonic() + (self.max_wait if self.last_batch_requests > 1 else 0.0)
        while len(jobs) < self.max_requests:
            try:
                jobs.append(self._queue.get_nowait())  # already waiting: take it without a pause
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [j for j in jobs if not j.future.done()]

    async def _loop(self) -> None:
        free = asyncio.Semaphore(self.workers)
        while True:
            await free.acquire()  # gather only once a worker can take the batch: meanwhile requests pile up
            jobs = await self._gather()
            if not jobs:
                free.release()
                continue
            self.last_batch_requests = len(jobs)
            if self.workers == 1:
                await self._run(jobs, free)
            else:
                task = asyncio.create_task(self._run(jobs, free))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _run(self, jobs: list[_Job], free: asyncio.Semaphore) -> None:
        try:
            flat = [t for j in jobs for t in j.texts]
            if self.metrics is not None:
                self.metrics.batch_size.labels(endpoint=self.name).observe(len(flat))
                self.metrics.batch_requests.labels(endpoint=self.name).observe(len(jobs))
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, flat)
            except Exception as exc:  # noqa: BLE001  # the model failed: every request of the batch gets a 500
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                return
            start = 0
            for j in jobs:
                part = list(results[start:start + len(j.texts)])
                start += len(j.texts)
                if not j.future.done():
                    j.future.set_result(part)
        finally:
            free.release()
