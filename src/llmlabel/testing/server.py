"""The fake server itself: a small asyncio HTTP/1.1 server (h11 for parsing) on loopback.

It is a raw asyncio server rather than uvicorn so a reply can do what real providers and
networks do to a client: hang without a byte, or reset the TCP connection (SO_LINGER 0, then
abort) with no response at all. ``FakeLLMServer`` runs it on its own event loop in a background
thread, so synchronous and ``asyncio.run`` tests alike can call it; ``serve`` is the coroutine
the subprocess CLI runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any

import h11

from llmlabel.testing.replies import Reply, error
from llmlabel.testing.responders import ReplyLike, Responder, as_responder, to_reply
from llmlabel.testing.wire import ChatRequest, completion_body, error_body, models_body

_MAX_BODY = 16 * 1024 * 1024


class _Core:
    """Routing, recording and answering; shared by the thread and the subprocess modes."""

    def __init__(self, responder: Responder, model: str) -> None:
        self.responder = responder
        self.model = model
        self.lock = threading.Lock()
        self.records: list[ChatRequest] = []
        self.attempts: Counter[str] = Counter()
        self.stop_event: asyncio.Event | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def serve(
        self,
        host: str,
        port: int,
        on_ready: Callable[[int], None],
        stop: asyncio.Event | None = None,
    ) -> None:
        self.stop_event = stop or asyncio.Event()
        server = await asyncio.start_server(self._connection, host, port, reuse_address=True)
        try:
            on_ready(server.sockets[0].getsockname()[1])
            await self.stop_event.wait()
        finally:
            server.close()
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)
            await asyncio.sleep(0)  # let the closed transports run connection_lost

    # -- one connection: a loop of request/response cycles (keep-alive) --------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                body = bytearray()
                while True:
                    event = await _next_event(conn, reader)
                    if isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > _MAX_BODY:
                            return
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                keep = await self._exchange(conn, reader, writer, request, bytes(body))
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            pass
        finally:
            self.connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()  # flushes what is buffered; hang and reset abort() themselves

    async def _exchange(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        raw: bytes,
    ) -> bool:
        """Answer one request; False when the connection must not be reused."""
        record = self._record(request, raw)
        reply = await self._decide(record)
        record.reply = reply
        if reply.latency:
            await asyncio.sleep(reply.latency)
        if reply.reset:
            record.outcome = "reset"
            record.answered_at = time.monotonic()
            _reset(writer)
            return False
        if reply.hang is not None:
            record.outcome = "hang"
            await self._hang(reader, reply.hang)
            record.answered_at = time.monotonic()
            writer.transport.abort()
            return False
        status, payload, headers = self._render(record, reply)
        record.status = status
        record.outcome = "response"
        data = json.dumps(payload).encode("utf-8")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            ("x-request-id", f"req-fake-{record.index}"),
            *headers,
        ]
        record.answered_at = time.monotonic()
        reason = _reason(status)
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=reason)))
        writer.write(conn.send(h11.Data(data=data)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    def _record(self, request: h11.Request, raw: bytes) -> ChatRequest:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        key = (
            request.target.decode()
            + "\n"
            + (json.dumps(body, sort_keys=True) if body is not None else raw.decode("latin-1"))
        )
        path = request.target.decode().split("?", 1)[0]
        admin = path.startswith("/_fake/")  # the harness asking, not a client: not recorded
        with self.lock:
            if not admin:
                self.attempts[key] += 1
            record = ChatRequest(
                index=-1 if admin else len(self.records),
                method=request.method.decode(),
                path=path,
                headers={k.decode().lower(): v.decode("latin-1") for k, v in request.headers},
                raw=raw,
                body=body,
                received_at=time.monotonic(),
                received_at_wall=time.time(),
                attempt=self.attempts[key],
            )
            if not admin:
                self.records.append(record)
        return record

    async def _decide(self, record: ChatRequest) -> Reply:
        route = record.path.rstrip("/")
        if route in ("/v1/chat/completions", "/chat/completions"):
            if record.method != "POST":
                return error(405, "use POST")
            if not isinstance(record.body, dict):
                return error(400, "request body is not a JSON object")
            if not isinstance(record.body.get("messages"), list):
                return error(400, "'messages' is required and must be a list")
            if record.body.get("stream"):
                return error(400, "the llmlabel fake server does not stream; send stream=false")
            try:
                result: ReplyLike | Any = self.responder(record)
                if inspect.isawaitable(result):
                    result = await result
                return to_reply(result)
            except Exception as exc:  # a broken responder is a test bug: say so in a 500
                return error(500, f"fake server responder raised {type(exc).__name__}: {exc}")
        if route in ("/v1/models", "/models", "/_fake/stats", "/_fake/health"):
            return Reply()  # rendered by _render
        return error(404, f"no route {record.method} {record.path}")

    def _render(self, record: ChatRequest, reply: Reply) -> tuple[int, Any, list[tuple[str, str]]]:
        headers = [(k.lower(), v) for k, v in reply.headers.items()]
        if reply.status != 200:
            if reply.retry_after is not None:
                ra = reply.retry_after
                headers.append(("retry-after", str(int(ra)) if ra == int(ra) else f"{ra:g}"))
                headers.append(("retry-after-ms", str(round(ra * 1000))))
            return reply.status, error_body(reply.status, reply.message), headers
        route = record.path.rstrip("/")
        if route.endswith("/models"):
            return 200, models_body(self.model), headers
        if route == "/_fake/health":
            return 200, {"ok": True}, headers
        if route == "/_fake/stats":
            return 200, self.stats(), headers
        return 200, completion_body(record, reply, default_model=self.model), headers

    async def _hang(self, reader: asyncio.StreamReader, seconds: float) -> None:
        """Wait ``seconds``, or until the client closes or the server stops."""
        assert self.stop_event is not None
        stop = asyncio.ensure_future(self.stop_event.wait())
        gone = asyncio.ensure_future(reader.read())  # EOF when the client hangs up
        try:
            await asyncio.wait(
                {stop, gone},
                timeout=None if math.isinf(seconds) else seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            gone.cancel()

    def stats(self) -> dict[str, Any]:
        with self.lock:
            records = list(self.records)
        return {
            "request_count": len(records),
            "status_counts": {str(k): v for k, v in _status_counts(records).items()},
            "outcome_counts": dict(Counter(r.outcome for r in records if r.outcome)),
            "requests": [r.to_dict() for r in records],
        }


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        return event


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST: linger 0, then close without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _status_counts(records: list[ChatRequest]) -> Counter[int]:
    return Counter(r.status for r in records if r.status is not None)


class FakeLLMServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, scripted by a responder.

    >>> with FakeLLMServer(answer({"label": "positive"})) as srv:
    ...     client = AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)

    ``responder`` is a ``Reply``, a dict/str (constant answer), or a callable
    ``(ChatRequest) -> Reply`` (see ``responders``); it can be swapped while running.
    """

    def __init__(
        self,
        responder: Responder | ReplyLike | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake",
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._core = _Core(as_responder(responder), model)
        self._start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port: int | None = None
        self._failure: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Bind and serve in a background thread; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("this FakeLLMServer was already started; make a new one")
        ready = threading.Event()

        def on_ready(port: int) -> None:
            self._port = port
            ready.set()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._core.serve(self.host, self._requested_port, on_ready))
            except BaseException as exc:  # surfaced by start()
                self._failure = exc
            finally:
                loop.close()
                ready.set()

        self._thread = threading.Thread(target=run, name="llmlabel-fake-llm", daemon=True)
        self._thread.start()
        if not ready.wait(self._start_timeout):
            raise RuntimeError(f"fake LLM server did not start within {self._start_timeout}s")
        if self._port is None:
            raise RuntimeError(
                f"fake LLM server failed to start on {self.host}:{self._requested_port}: "
                f"{self._failure!r}"
            ) from self._failure
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: hanging replies are released, open connections closed. Idempotent."""
        loop, event, thread = self._loop, self._core.stop_event, self._thread
        if loop is None or event is None or thread is None or not thread.is_alive():
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop already closed
            return
        thread.join(timeout)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake LLM server is not started; use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what ``api_base`` / ``base_url`` take."""
        return self.url + "/v1"

    # -- scripting ----------------------------------------------------------------------------

    @property
    def responder(self) -> Responder:
        return self._core.responder

    @responder.setter
    def responder(self, value: Responder | ReplyLike | None) -> None:
        self._core.responder = as_responder(value)

    @property
    def model(self) -> str:
        """The model name answered when a request names none, and listed by ``/v1/models``."""
        return self._core.model

    # -- what happened ------------------------------------------------------------------------

    @property
    def requests(self) -> list[ChatRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._core.lock:
            return list(self._core.records)

    @property
    def request_count(self) -> int:
        with self._core.lock:
            return len(self._core.records)

    @property
    def arrival_times(self) -> list[float]:
        """``time.monotonic()`` of each request's arrival, in order."""
        return [r.received_at for r in self.requests]

    @property
    def status_counts(self) -> Counter[int]:
        """How many responses were sent with each HTTP status (resets and hangs send none)."""
        return _status_counts(self.requests)

    @property
    def outcome_counts(self) -> Counter[str]:
        """``{"response": …, "hang": …, "reset": …}`` over the answered requests."""
        return Counter(r.outcome for r in self.requests if r.outcome)

    def clear(self) -> None:
        """Forget recorded requests and attempt counts (the responder is kept)."""
        with self._core.lock:
            self._core.records.clear()
            self._core.attempts.clear()

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ChatRequest]:
        """Block until at least ``count`` requests arrived; raise ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while self.request_count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"expected {count} request(s) within {timeout}s, got {self.request_count}"
                )
            time.sleep(0.005)
        return self.requests


async def serve(
    responder: Responder | ReplyLike | None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model: str = "fake",
    on_ready: Callable[[int], None] = lambda port: None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve on the running loop until ``stop`` is set (the subprocess CLI's entry point)."""
    core = _Core(as_responder(responder), model)
    await core.serve(host, port, on_ready, stop)
