"""A threaded stdlib HTTP server around the emulator's WSGI app.

``wsgiref`` alone serves one request at a time and writes a 500 page on any exception; this
module adds threads (daemon, so Ctrl-C exits), a quiet request log, and the one thing the
fault injection needs from the server: :class:`~openai_batches.emulator.app.DropConnection`
closes the socket without writing a response (or the rest of one).
"""

from __future__ import annotations

import contextlib
import socketserver
import sys
import threading
from types import TracebackType
from typing import Any
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from .app import DropConnection
from .core import Emulator


class _Handler(ServerHandler):
    def handle_error(self) -> None:
        if isinstance(sys.exc_info()[1], DropConnection):
            # Write nothing more: the connection closes when the request handler returns.
            self.close_connection = True
            return
        super().handle_error()

    def close(self) -> None:
        # Logging a request whose socket is gone must never kill the thread.
        with contextlib.suppress(Exception):
            super().close()


class _RequestHandler(WSGIRequestHandler):
    verbose = False

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _Handler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]
            self.get_stderr(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            super().log_message(format, *args)


class _VerboseRequestHandler(_RequestHandler):
    verbose = True


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(
    emulator: Emulator, host: str, port: int, verbose: bool = False
) -> ThreadingWSGIServer:
    handler = _VerboseRequestHandler if verbose else _RequestHandler
    server = ThreadingWSGIServer((host, port), handler)
    server.set_app(emulator.wsgi_app)
    return server


class EmulatorServer:
    """Serve an :class:`Emulator` over real HTTP from background threads.

    A ticker thread calls ``emulator.tick()`` every ``tick_interval`` seconds so batches move
    (and webhooks fire) in real time even when nobody polls::

        with EmulatorServer(emu, port=0) as server:
            client = OpenAI(base_url=server.base_url, api_key="sk-test")
    """

    def __init__(
        self,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        verbose: bool = False,
        tick_interval: float = 0.1,
    ) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self.verbose = verbose
        self.tick_interval = tick_interval
        self._server: ThreadingWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url``: ``/v1`` for OpenAI, ``/openai/v1`` for
        Azure's v1 surface, the root for Anthropic (its SDK adds ``/v1/messages/...``).
        Azure's ``AzureOpenAI(azure_endpoint=...)`` takes :attr:`root_url`."""
        return f"{self.root_url}{self.emulator.flavor.base_path}"

    def start(self) -> EmulatorServer:
        self._server = make_server(self.emulator, self.host, self.port, self.verbose)
        self.port = self._server.server_port
        self._stop.clear()
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="emulator-http",
            daemon=True,
        )
        ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker", daemon=True)
        self._threads = [serve, ticker]
        for t in self._threads:
            t.start()
        return self

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.tick_interval):
            try:
                self.emulator.tick()
            except Exception as exc:  # keep ticking; a bad batch must not stop the server
                print(f"emulator ticker: {exc!r}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def serve_forever_started(self) -> None:
        """Block until interrupted (after :meth:`start`), then stop."""
        try:
            while not self._stop.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
