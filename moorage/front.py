"""The Go gRPC front: ``moorage-front`` (``front/``, grpc-go) terminates gRPC on the sidecar's port and hands each
call to this process as frames over one socketpair; :class:`FrontServer` serves them with the same handlers,
interceptors (``CallGuard``) and status codes a ``grpc.aio`` server would.

Why: grpc.aio's Cython core and the asyncio plumbing under it were about two thirds of the sidecar's CPU per
activity — more than the engine and the store together (docs/benchmarks.md). grpc-go does HTTP/2, flow control,
deadlines and TLS on its own threads; this side decodes a batch of small frames per read and writes a batch per
loop turn. :class:`FrontServer` has the part of ``grpc.aio.Server``'s interface the sidecar uses
(``add_generic_rpc_handlers``, ``add_registered_method_handlers``, ``add_insecure_port``, ``add_secure_port``,
``start``, ``stop``), so the services register on it unchanged.

Frames, both ways: ``u32 length`` (of what follows it) ``u8 type`` ``u32 call id`` then the body, little-endian.

* CALL (front → here): ``u16 len, method``, ``u16 len, peer``, ``i64 timeout µs`` (-1: none), ``u16 count`` of
  ``(u16 len, key, u32 len, value)`` metadata, then the request message's bytes.
* CANCEL (front → here): the client cancelled or its deadline passed; the handler is cancelled.
* MESSAGE (here → front): one response message of a stream. UNARY: the response and status OK in one frame.
* STATUS (here → front): ``u32 code``, then the message (UTF-8). It ends the call.
* SHUTDOWN (here → front, call id 0): stop accepting calls; the front exits when this side closes the socket.

The front dies with the sidecar: it exits when its end of the socketpair reads EOF (``kill -9`` included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc.aio import AbortError

from moorage.connection import KEEPALIVE_SECONDS
from moorage.security.tls import ServerTls

log = logging.getLogger("moorage.front")

BINARY_NAME = "moorage-front"

CALL, CANCEL, MESSAGE, STATUS, UNARY, SHUTDOWN = 1, 2, 3, 4, 5, 6
_HEADER = struct.Struct("<IBI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_STATUS_HEAD = struct.Struct("<IBII")  # length, type, call id, code

Handler = Any  # grpc.RpcMethodHandler: generic in the stubs only, and its behaviours are coroutines here


def find_binary() -> str | None:
    """``MOORAGE_FRONT_BINARY``, else ``moorage-front`` beside this Python (``make install`` builds it into the
    venv's bin), else on ``PATH``."""
    explicit = os.environ.get("MOORAGE_FRONT_BINARY")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    beside = Path(sys.executable).parent / BINARY_NAME
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(BINARY_NAME)


@dataclass(frozen=True)
class _CallDetails(grpc.HandlerCallDetails):
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class FrontContext(grpc.aio.ServicerContext):
    """The ``ServicerContext`` of a call that came through the front: what the sidecar's handlers and the
    ``CallGuard`` use (metadata, peer, deadline, abort, stream writes), with grpc.aio's meanings."""

    __slots__ = ("_bridge", "_cancelled", "_code", "_deadline", "_details", "_done", "_id", "_metadata", "_peer")

    def __init__(
        self,
        bridge: _Bridge,
        call_id: int,
        metadata: tuple[tuple[str, str | bytes], ...],
        peer: str,
        deadline: float | None,
    ) -> None:
        self._bridge = bridge
        self._id = call_id
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._cancelled = False
        self._done = False

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = tuple()) -> NoReturn:
        if code == grpc.StatusCode.OK:
            log.error("abort with status OK is not allowed; answering UNKNOWN")
            code = grpc.StatusCode.UNKNOWN
        self._code, self._details = code, details
        raise AbortError()

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details)

    async def read(self) -> Any:
        raise NotImplementedError("the front serves unary and server-streaming methods only")

    async def write(self, message: Any) -> None:
        self._bridge.message(self._id, self._bridge.serializer_of(self)(message))

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        pass  # the front sends its headers with the first message

    def invocation_metadata(self) -> Any:  # (key, value) pairs, as grpc.aio's; its stubs name a wrapper type
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Any:
        return {}

    def time_remaining(self) -> Any:  # seconds, None without a deadline (as grpc.aio; its stubs say float)
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def set_code(self, code: Any) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> Any:
        return self._code

    def details(self) -> Any:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        pass  # no Moorage service sends trailers

    def trailing_metadata(self) -> Any:
        return ()

    def set_compression(self, compression: Any) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def add_done_callback(self, callback: Any) -> None:
        raise NotImplementedError("not used by Moorage's services")


class _Bridge(asyncio.Protocol):
    """This process's end of the socketpair: CALL frames in, handler tasks started, answers out in batches."""

    def __init__(self, server: FrontServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._pending: list[bytes] = []
        self._tasks: dict[int, tuple[asyncio.Task[None], FrontContext]] = {}
        self._serializers: dict[int, Callable[[Any], bytes]] = {}
        self.closed = asyncio.Event()
        self.expected_close = False

    # -- in ---------------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos, size = 0, len(buf)
        unpack = _HEADER.unpack_from
        while size - pos >= 9:
            length, kind, call_id = unpack(buf, pos)
            end = pos + 4 + length
            if end > size:
                break
            try:
                if kind == CALL:
                    self._call(call_id, bytes(buf[pos + 9 : end]))
                elif kind == CANCEL:
                    running = self._tasks.get(call_id)
                    if running is not None:
                        running[1]._cancelled = True
                        running[0].cancel()
                else:
                    log.error("the Go front sent a frame of unknown type %d; ignored", kind)
            except Exception as exc:  # one bad call must not end the others
                log.exception("cannot start call %d", call_id)
                self.status(call_id, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            pos = end
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        for task, context in list(self._tasks.values()):
            context._cancelled = True
            task.cancel()
        if not self.expected_close:
            log.error("the Go front closed its connection (%s); the sidecar stops", exc or "it exited")
            os.kill(os.getpid(), signal.SIGTERM)  # a deaf sidecar must not look alive: stop, and be restarted

    def _call(self, call_id: int, body: bytes) -> None:
        try:
            (n,) = _U16.unpack_from(body, 0)
            pos = 2 + n
            method = body[2:pos].decode()
            (n,) = _U16.unpack_from(body, pos)
            peer = body[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (timeout_us,) = _I64.unpack_from(body, pos)
            (count,) = _U16.unpack_from(body, pos + 8)
            pos += 10
            metadata: list[tuple[str, str | bytes]] = []
            for _ in range(count):
                (n,) = _U16.unpack_from(body, pos)
                key = body[pos + 2 : pos + 2 + n].decode()
                pos += 2 + n
                (n,) = _U32.unpack_from(body, pos)
                raw = body[pos + 4 : pos + 4 + n]
                pos += 4 + n
                metadata.append((key, raw if key.endswith("-bin") else raw.decode("utf-8", "replace")))
            request = body[pos:]
        except (struct.error, UnicodeDecodeError) as exc:
            self.status(call_id, grpc.StatusCode.INTERNAL, f"the Go front sent a malformed call frame: {exc}")
            return
        deadline = self.loop.time() + timeout_us / 1e6 if timeout_us >= 0 else None
        context = FrontContext(self, call_id, tuple(metadata), peer, deadline)
        task = self.loop.create_task(self.server._serve(self, context, method, request))
        self._tasks[call_id] = (task, context)

    # -- out --------------------------------------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        if not self._pending:
            self.loop.call_soon(self._flush)
        self._pending.append(frame)

    def _flush(self) -> None:
        frames, self._pending = self._pending, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(frames)

    def message(self, call_id: int, data: bytes) -> None:
        self._send(_HEADER.pack(5 + len(data), MESSAGE, call_id) + data)

    def unary(self, call_id: int, data: bytes) -> None:
        self._send(_HEADER.pack(5 + len(data), UNARY, call_id) + data)

    def status(self, call_id: int, code: grpc.StatusCode, details: str) -> None:
        text = details.encode()
        self._send(_STATUS_HEAD.pack(9 + len(text), STATUS, call_id, code.value[0]) + text)

    def shutdown(self) -> None:
        self._send(_HEADER.pack(5, SHUTDOWN, 0))

    def serializer_of(self, context: FrontContext) -> Callable[[Any], bytes]:
        return self._serializers[context._id]

    def finished(self, context: FrontContext) -> None:
        context._done = True
        self._tasks.pop(context._id, None)
        self._serializers.pop(context._id, None)

    def in_flight(self) -> int:
        return len(self._tasks)


class FrontServer(grpc.aio.Server):
    """A ``grpc.aio.Server`` whose calls arrive through ``moorage-front``. Its secure ports use ``tls`` (the
    front terminates TLS with the same files), whatever credentials object ``add_secure_port`` is given."""

    def __init__(
        self,
        binary: str,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_receive_bytes: int,
        max_send_bytes: int,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        tls: ServerTls | None = None,
    ) -> None:
        self.binary = binary
        self.keepalive_seconds = keepalive_seconds
        self.tls = tls
        self.interceptors = tuple(interceptors)
        self.max_receive_bytes = max_receive_bytes
        self.max_send_bytes = max_send_bytes
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, Handler] = {}
        self._direct: dict[str, Handler] = {}  # method -> handler found, when there is no interceptor
        self._listeners: list[tuple[socket.socket, ServerTls | None]] = []
        self._unix_paths: list[str] = []
        self._bridge: _Bridge | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stopped = asyncio.Event()

    # -- grpc.aio.Server's registration interface ----------------------------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)
        self._direct.clear()

    def add_registered_method_handlers(self, service_name: str, handlers: Mapping[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service_name}/{name}"] = handler
        self._direct.clear()

    def add_insecure_port(self, address: str) -> int:
        return self._listen(address, None)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        if self.tls is None:
            raise ValueError("the Go front terminates TLS from ServerTls files: construct it with tls=")
        return self._listen(address, self.tls)

    def _listen(self, address: str, tls: ServerTls | None) -> int:
        """Bind here (so a busy port fails the start with the sidecar's own message, and port 0 is known at
        once); the front inherits the sockets. 0 when nothing could be bound, as grpc's servers answer."""
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.listen(1024)
            except OSError:
                sock.close()
                return 0
            self._listeners.append((sock, tls))
            self._unix_paths.append(path)
            return 1
        host, _, port_text = address.rpartition(":")
        host = host.strip("[]")
        port = int(port_text)
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror:
            return 0
        bound: list[socket.socket] = []
        seen: set[Any] = set()
        for family, kind, proto, _, sockaddr in infos:
            if (family, sockaddr[0]) in seen:
                continue
            seen.add((family, sockaddr[0]))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and sockaddr[0] == "::":
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind((sockaddr[0], port, *sockaddr[2:]) if family == socket.AF_INET6 else (sockaddr[0], port))
                sock.listen(1024)
            except OSError:
                sock.close()
                continue
            port = port or sock.getsockname()[1]  # every address on the port the first one got
            bound.append(sock)
        if not bound:
            return 0
        self._listeners.extend((s, tls) for s in bound)
        return port

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno(), *(s.fileno() for s, _ in self._listeners)]
        argv = [
            self.binary,
            "--bridge-fd",
            str(theirs.fileno()),
            "--max-recv-bytes",
            str(self.max_receive_bytes),
            "--max-send-bytes",
            str(self.max_send_bytes),
            "--keepalive-seconds",
            f"{self.keepalive_seconds:g}",
        ]
        tls = next((t for _, t in self._listeners if t is not None), None)
        if tls is not None:
            argv += ["--tls-cert", tls.cert_file, "--tls-key", tls.key_file]
            if tls.client_ca_file:
                argv += ["--tls-client-ca", tls.client_ca_file]
        for sock, t in self._listeners:
            argv += ["--listen", f"{sock.fileno()}{':tls' if t is not None else ''}"]
        try:
            self._process = await asyncio.create_subprocess_exec(*argv, pass_fds=fds, stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
            for sock, _ in self._listeners:
                sock.close()  # the front holds them now; the port is free again once it exits
        loop = asyncio.get_running_loop()
        _, bridge = await loop.create_unix_connection(lambda: _Bridge(self), sock=ours)
        self._bridge = bridge
        log.info("gRPC served by the Go front binary=%s pid=%s", self.binary, self._process.pid)

    async def stop(self, grace: float | None) -> None:
        bridge, process = self._bridge, self._process
        if bridge is None or process is None:
            return
        bridge.shutdown()
        deadline = asyncio.get_running_loop().time() + (grace or 0.0)
        while bridge.in_flight() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        bridge.expected_close = True
        for task, context in list(bridge._tasks.values()):
            context._cancelled = True
            task.cancel()
        await asyncio.sleep(0)
        bridge._flush()
        if bridge.transport is not None:
            bridge.transport.close()
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            log.warning("the Go front did not exit; killing it pid=%s", process.pid)
            process.kill()
            await process.wait()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._stopped.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- calls --------------------------------------------------------------------------------------------------

    def _lookup(self, details: _CallDetails) -> Handler | None:
        handler = self._registered.get(details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None

    async def _handler(self, details: _CallDetails) -> Handler | None:
        async def innermost(d: grpc.HandlerCallDetails) -> Handler | None:
            return self._lookup(details)

        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]] = innermost
        for interceptor in reversed(self.interceptors):
            continuation = _chain(interceptor, continuation)
        return await continuation(details)

    async def _serve(self, bridge: _Bridge, context: FrontContext, method: str, request_bytes: bytes) -> None:
        call_id = context._id
        try:
            if self.interceptors:
                handler = await self._handler(_CallDetails(method, context._metadata))
            else:  # no interceptor (auth off): a method's handler never changes, so look it up once
                handler = self._direct.get(method)
                if handler is None:
                    handler = self._lookup(_CallDetails(method, context._metadata))
                    if handler is not None:
                        self._direct[method] = handler
            if handler is None:
                bridge.status(call_id, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
                return
            if handler.request_streaming:
                bridge.status(
                    call_id, grpc.StatusCode.UNIMPLEMENTED, f"{method} streams requests; the Go front does not"
                )
                return
            deserialize = handler.request_deserializer
            serialize = handler.response_serializer or (lambda m: m)
            request = deserialize(request_bytes) if deserialize is not None else request_bytes
            if not handler.response_streaming:
                response = await handler.unary_unary(request, context)
                data = serialize(response)
                if len(data) > self.max_send_bytes:
                    bridge.status(call_id, grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(len(data), self))
                    return
                bridge.unary(call_id, data)
                return
            bridge._serializers[call_id] = serialize
            result = handler.unary_stream(request, context)
            if isinstance(result, AsyncIterator):
                async for item in result:
                    data = serialize(item)
                    if len(data) > self.max_send_bytes:
                        bridge.status(call_id, grpc.StatusCode.RESOURCE_EXHAUSTED, _too_large(len(data), self))
                        return
                    bridge.message(call_id, data)
            else:
                await result
            bridge.status(call_id, grpc.StatusCode.OK, "")
        except AbortError:
            code = context._code or grpc.StatusCode.UNKNOWN
            bridge.status(call_id, code, context._details or "")
        except asyncio.CancelledError:
            if not context._cancelled:
                bridge.status(call_id, grpc.StatusCode.CANCELLED, "the sidecar is stopping")
                raise
        except Exception as exc:  # as grpc.aio answers an exception a handler let through
            log.exception("Unexpected error in %s", method)
            bridge.status(call_id, grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")
        finally:
            bridge.finished(context)


def _too_large(size: int, server: FrontServer) -> str:
    return f"Sent message larger than max ({size} vs. {server.max_send_bytes})"


def _chain(
    interceptor: grpc.aio.ServerInterceptor,
    continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
) -> Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]:
    async def call(details: grpc.HandlerCallDetails) -> Handler | None:
        return await interceptor.intercept_service(continuation, details)

    return call


__all__ = ["BINARY_NAME", "FrontContext", "FrontServer", "find_binary"]
