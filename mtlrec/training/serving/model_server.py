"""``mtlrec serve``: TF Serving's REST API over an export directory, on aiohttp.

Endpoints (as ``tensorflow_model_server --rest_api_port`` answers them):

- ``POST /v1/models/<name>[/versions/<n>]:predict``: row (``instances``) or columnar
  (``inputs``) form, optional ``signature_name``; ``{"predictions": ...}`` /
  ``{"outputs": ...}`` (``request_parsing``);
- ``GET /v1/models/<name>[/versions/<n>]``: ``{"model_version_status": [...]}``;
- ``GET /v1/models/<name>[/versions/<n>]/metadata``: the signatures.

Errors are ``{"error": "..."}``: 400 for a request the model cannot answer (naming the
input and what was expected), 404 for an unknown model or version. Concurrent requests
are batched (``RequestBatcher``); new export versions are picked up while serving
(``ExportVersions``, polled every ``poll_seconds``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from mtlrec.training.serving.model_versions import ExportVersions
from mtlrec.training.serving.request_batcher import RequestBatcher
from mtlrec.training.serving.request_parsing import RequestError, parse_predict, response_body

logger = logging.getLogger("mtlrec.serve")

_ROUTE = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<action>:[A-Za-z]+|/metadata)?$"
)


class ServerSetupError(ValueError):
    """The server cannot start as asked (a name it cannot serve, a port in use)."""


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, allow_nan=True).encode("utf-8"), status=status, content_type="application/json"
    )


def _error(message: str, status: int) -> web.Response:
    return _json({"error": message}, status)


@web.middleware
async def _json_errors(request, handler):
    """aiohttp's own refusals (no such path, wrong method) in TF Serving's error form."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(f"{exc.reason}: {request.method} {request.path}", exc.status)


def _check_address(host: str, port: int) -> None:
    """Raise ``ServerSetupError`` if ``host:port`` cannot be listened on now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise ServerSetupError(f"cannot listen on {host}:{port}: {err}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's socket
        try:
            probe.bind(address)
        except OSError as err:
            raise ServerSetupError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _set_threads(intra: int, inter: int) -> None:
    import tensorflow as tf

    for name, value, current, setter in (
        ("intra_op_threads", intra, tf.config.threading.get_intra_op_parallelism_threads,
         tf.config.threading.set_intra_op_parallelism_threads),
        ("inter_op_threads", inter, tf.config.threading.get_inter_op_parallelism_threads,
         tf.config.threading.set_inter_op_parallelism_threads),
    ):
        if value < 0:
            raise ServerSetupError(f"{name}: expected 0 (TensorFlow's default) or more, got {value}")
        if value and value != current():
            try:
                setter(value)
            except RuntimeError:
                raise ServerSetupError(f"{name}: TensorFlow has already started in this process; "
                                       f"set it before anything else runs") from None


class ModelServer:
    """TF Serving's REST API over ``model_path`` (``RUN/export`` or ``RUN/export/<n>``).

    Args:
        model_path: an export root (its newest version is served, new versions are
            loaded as they appear) or one version directory.
        name: the model name of the URLs (default: the experiment name in the export's
            metadata, else the run directory's name).
        host, port: where to listen (port 0: any free port; ``url`` says which).
        max_batch_rows, batch_wait_ms: batching (``RequestBatcher``).
        poll_seconds: how often the export root is checked for new versions.
        max_body_mb: the largest request body accepted.
        intra_op_threads, inter_op_threads: TensorFlow's thread pools (0: its default), as
            ``tensorflow_model_server --tensorflow_intra_op_parallelism`` sets them; only
            before TensorFlow has run anything in this process.

    Raises:
        ExportNotFound: no loadable version at ``model_path`` (a ``ValueError``).
    """

    def __init__(self, model_path, name: str | None = None, host: str = "127.0.0.1", port: int = 8501,
                 max_batch_rows: int = 256, batch_wait_ms: float = 0.0, poll_seconds: float = 1.0,
                 max_body_mb: float = 16.0, intra_op_threads: int = 0, inter_op_threads: int = 0):
        if poll_seconds <= 0:
            raise ServerSetupError(f"poll_seconds must be positive, got {poll_seconds}")
        if max_body_mb <= 0:
            raise ServerSetupError(f"max_body_mb must be positive, got {max_body_mb}")
        RequestBatcher(max_batch_rows, batch_wait_ms)  # checks the batching arguments early
        _set_threads(intra_op_threads, inter_op_threads)
        _check_address(host, port)  # before the model loads: a port in use fails at once
        self.versions = ExportVersions(model_path)
        served = self.versions.first_load()
        path = Path(model_path).resolve()
        default = served.meta.get("name") or (path.parent.parent.name if self.versions.fixed else path.parent.name)
        self.name = name or str(default)
        if not re.fullmatch(r"[^/:\s]+", self.name):
            raise ServerSetupError(f"--name: expected a model name without '/', ':' or spaces, got {self.name!r}")
        self.host, self.port = host, port
        self.max_batch_rows, self.batch_wait_ms = max_batch_rows, batch_wait_ms
        self.poll_seconds = poll_seconds
        self.max_body = int(max_body_mb * 2**20)
        self.url: str | None = None
        self.batcher: RequestBatcher | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- requests -------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body, middlewares=[_json_errors])
        app.router.add_route("*", "/v1/models/{tail:.+}", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        match = _ROUTE.match(request.match_info["tail"])
        if match is None:
            return _error(f"Malformed request: {request.method} {request.path}", 404)
        name, version, label, action = match.group("name", "version", "label", "action")
        try:
            if label is not None:
                raise RequestError(f"labels are not served: ask for /v1/models/{name} or "
                                   f"/v1/models/{name}/versions/<n>", 404)
            number = self._version_number(version)
            if action in (":predict", ":classify", ":regress"):
                if request.method != "POST":
                    return _error(f"{action[1:]} takes POST, got {request.method}: {request.path}", 405)
                if action != ":predict":
                    raise RequestError(f"{action[1:]} is not served: these exports answer :predict")
                return await self._predict(request, name, number)
            if action is not None and action != "/metadata":
                return _error(f"Malformed request: {request.method} {request.path}", 404)
            if request.method != "GET":
                return _error(f"the model {'metadata' if action else 'status'} takes GET, got "
                              f"{request.method}: {request.path}", 405)
            if action == "/metadata":
                return self._metadata(name, number)
            return self._status(name, number)
        except RequestError as err:
            return _error(str(err), err.status)
        except Exception as err:  # noqa: BLE001  (a fault of the server, not of the request)
            logger.exception("request %s %s failed", request.method, request.path)
            return _error(f"Internal error: {' '.join(str(err).split()) or type(err).__name__}", 500)

    @staticmethod
    def _version_number(text):
        if text is None:
            return None
        if not text.isdigit():
            raise RequestError(f"version: expected a version number, got {text!r}")
        return int(text)

    def _served(self, name: str, number):
        served = self.versions.current
        if name != self.name or (number is not None and number != served.version):
            wanted = f"Latest({name})" if number is None else f"Specific({name}, {number})"
            raise RequestError(
                f"Servable not found for request: {wanted} (this server serves {self.name} version {served.version})",
                404,
            )
        return served

    async def _body(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise RequestError(self._too_large(request.content_length))
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(self._too_large(None)) from None

    def _too_large(self, size) -> str:
        got = "" if size is None else f" ({size} bytes)"
        return (f"request body too large{got}: this server takes at most {self.max_body} bytes "
                f"(mtlrec serve --max-body-mb); send fewer rows per request")

    async def _predict(self, request: web.Request, name: str, number) -> web.Response:
        import tensorflow as tf

        served = self._served(name, number)
        parsed = parse_predict(await self._body(request), served.inputs)
        try:
            outputs = await self.batcher.predict(served, parsed)
        except tf.errors.InvalidArgumentError as err:  # the graph refused the values
            raise RequestError(" ".join(err.message.split())[:1000]) from None
        return _json(response_body(outputs, parsed.columnar))

    def _status(self, name: str, number) -> web.Response:
        if name != self.name:
            raise RequestError(f"Could not find any versions of model {name} (this server serves {self.name})", 404)
        status = self.versions.status(number)
        if not status:
            raise RequestError(f"Could not find version {number} of model {name}", 404)
        return _json({"model_version_status": status})

    def _metadata(self, name: str, number) -> web.Response:
        served = self._served(name, number)
        defs = served.signature_defs()
        return _json({
            "model_spec": {"name": self.name, "signature_name": "", "version": str(served.version)},
            "metadata": {"signature_def": {"signature_def": defs}},
        })

    # --- running --------------------------------------------------------------------

    async def _follow(self, loader: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await loop.run_in_executor(loader, self.versions.refresh)
            except Exception:  # noqa: BLE001  (keep serving; the next poll tries again)
                logger.exception("checking %s for new versions failed", self.versions.path)

    async def serve(self, announce=None) -> None:
        """Serve until ``stop()`` (or the task is cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.batcher = RequestBatcher(self.max_batch_rows, self.batch_wait_ms)
        self.batcher.start()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlrec-loader")
        follow = None
        try:
            try:
                await web.TCPSite(runner, self.host, self.port).start()
            except OSError as err:
                raise ServerSetupError(
                    f"cannot listen on {self.host}:{self.port}: {err.strerror or err}"
                ) from None
            port = runner.addresses[0][1]
            self.url = f"http://{self.host}:{port}/v1/models/{self.name}"
            if not self.versions.fixed:
                follow = asyncio.get_running_loop().create_task(self._follow(loader))
            if announce is not None:
                announce(self)
            await self._stop.wait()
        finally:
            if follow is not None:
                follow.cancel()
            await runner.cleanup()
            await self.batcher.stop()
            loader.shutdown(wait=True)
            batcher = self.batcher
            if batcher.calls:
                logger.info("answered %d predict requests (%d rows) in %d model calls", batcher.requests,
                            batcher.rows, batcher.calls)

    def run(self, announce=None) -> None:
        """Serve in this thread until SIGINT or SIGTERM."""

        async def main():
            loop = asyncio.get_running_loop()
            task = loop.create_task(self.serve(announce))
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, lambda: self._stop and self._stop.set())
            await task

        asyncio.run(main())

    def start(self, timeout: float = 60.0) -> str:
        """Serve on a background thread; returns the model's URL once it listens."""
        ready, failed = threading.Event(), []

        def main():
            try:
                asyncio.run(self.serve(lambda _: ready.set()))
            except BaseException as err:  # noqa: BLE001  (handed to the caller)
                failed.append(err)
                ready.set()

        self._thread = threading.Thread(target=main, name="mtlrec-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ServerSetupError(f"the server did not start within {timeout} s")
        if failed:
            raise failed[0]
        return self.url

    def stop(self) -> None:
        """Stop a server started with ``start()`` (or ``run()`` from another thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
