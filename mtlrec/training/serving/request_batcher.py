"""Concurrent requests' rows scored in one model call.

A request joins a queue; a batch closes when it holds ``max_rows`` rows or when
``wait_ms`` have passed since its first request arrived (TF Serving's
``max_batch_size`` and ``batch_timeout_micros``). Requests that arrive while the
model is busy wait in the queue and form the next batch, so under load batches grow
by themselves with the default ``wait_ms=0``, and a lone request waits for no one (on
a busy machine a timer's wake-up alone can cost milliseconds). Each batch is one call of the signature (on a
thread of its own, so the event loop keeps reading requests); its outputs are split
back by rows. Requests for different versions or signatures are never mixed, and a
request whose inputs have different row counts runs alone. If a batch fails, its
requests are run one by one, so one request the graph refuses does not fail the others.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def merged(values: list, spec) -> np.ndarray:
    """One input's arrays from several requests -> one array: id lists padded after their
    items to the longest (the graph keeps each row's most recent ``max_len`` items)."""
    if len(values) == 1:
        return values[0]
    if spec.rank == 2 and spec.pad is not None:
        width = max(v.shape[1] for v in values)
        if any(v.shape[1] != width for v in values):
            padded = []
            for v in values:
                out = np.full((v.shape[0], width), spec.pad, dtype=v.dtype)
                out[:, : v.shape[1]] = v
                padded.append(out)
            values = padded
    return np.concatenate(values, axis=0)


class _Job:
    __slots__ = ("version", "request", "future", "arrived")

    def __init__(self, version, request, future, arrived):
        self.version, self.request, self.future, self.arrived = version, request, future, arrived

    def key(self):
        """Jobs of one key can share a call (fixed-width lists must match: no padding there)."""
        request = self.request
        specs = self.version.inputs[request.signature]
        widths = tuple(
            a.shape[1] for n, a in sorted(request.arrays.items()) if specs[n].rank == 2 and specs[n].pad is None
        )
        return id(self.version), request.signature, widths


class RequestBatcher:
    """Batches ``PredictRequest``s of ``ServedVersion``s; ``await predict(version, request)``.

    Args:
        max_rows: rows of one batch at most (a larger request runs alone, whole).
        wait_ms: how long a batch waits for company after its first request (0: it takes
            what is queued when the model is free).
    """

    def __init__(self, max_rows: int = 256, wait_ms: float = 0.0):
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1. Received: max_rows={max_rows}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must be at least 0. Received: wait_ms={wait_ms}")
        self.max_rows = max_rows
        self.wait = wait_ms / 1000.0
        self._jobs: collections.deque = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlrec-model")
        self.requests = self.calls = self.rows = 0  # requests scored, model calls, rows

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def predict(self, version, request) -> dict:
        """The outputs of ``request``'s rows (numpy arrays by output name)."""
        loop = asyncio.get_running_loop()
        job = _Job(version, request, loop.create_future(), loop.time())
        self._jobs.append(job)
        self._arrived.set()
        return await job.future

    async def _collect(self) -> list:
        loop = asyncio.get_running_loop()
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._jobs.popleft()
        jobs, rows = [first], first.request.rows
        if rows is None:
            return jobs
        deadline = first.arrived + self.wait
        while rows < self.max_rows:
            if not self._jobs:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except asyncio.TimeoutError:
                    break
                continue
            job = self._jobs[0]
            if job.request.rows is None or rows + job.request.rows > self.max_rows:
                break
            jobs.append(self._jobs.popleft())
            rows += job.request.rows
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            groups: dict = {}
            for job in jobs:
                if not job.future.done():  # a client that left is not scored
                    groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                self.requests += len(group)
                results = await loop.run_in_executor(self._pool, self._run, group)
                for job, result in zip(group, results):
                    if job.future.done():
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def _run(self, jobs: list) -> list:
        """One call for ``jobs`` (on the model thread): outputs or an exception per job."""
        version, signature = jobs[0].version, jobs[0].request.signature
        try:
            if len(jobs) == 1:
                self.calls += 1
                self.rows += jobs[0].request.rows or 0
                return [version.call(signature, jobs[0].request.arrays)]
            specs = version.inputs[signature]
            arrays = {
                name: merged([job.request.arrays[name] for job in jobs], specs[name]) for name in specs
            }
            self.calls += 1
            self.rows += sum(job.request.rows for job in jobs)
            outputs = version.call(signature, arrays)
        except Exception as err:  # noqa: BLE001  (answered per request below)
            if len(jobs) == 1:
                return [err]
            return [self._run([job])[0] for job in jobs]
        total = sum(job.request.rows for job in jobs)
        if any(np.ndim(value) == 0 or len(value) != total for value in outputs.values()):
            return [self._run([job])[0] for job in jobs]  # outputs not by row: no split
        results, start = [], 0
        for job in jobs:
            end = start + job.request.rows
            results.append({name: value[start:end] for name, value in outputs.items()})
            start = end
        return results
