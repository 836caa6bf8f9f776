"""The gRPC face of the security policy: a ``grpc.aio`` server interceptor that every service on a server goes
through (the Durable Task ``TaskHubSidecarService`` and the gateway's ``moorage.v1`` services alike).

It does two things the servicers should not each repeat:

* authentication — ``UNAUTHENTICATED`` with the reason, ``PERMISSION_DENIED`` for a task hub the credential may
  not use (the hub is the ``taskhub`` metadata, as DTS clients send it);
* undecodable requests — grpc answers a request whose bytes are not the message with
  ``UNKNOWN: Unexpected DecodeError``; here the deserializer is wrapped so the caller gets ``INVALID_ARGUMENT``
  naming the message type instead. (Oversized messages are refused by grpc itself, ``RESOURCE_EXHAUSTED``
  naming the limit, from ``grpc.max_receive_message_length``.)

The gRPC health service (``/grpc.health.v1.Health/``) stays open.

An interceptor costs every call, authenticated or not: grpc.aio runs its interceptor pipeline (several coroutines)
for each RPC, which measured 9-16% of the sidecar's CPU per activity. So the interceptor is installed only with
authentication on (``CallGuard.interceptors``); the decoding check is put on the handlers once, when they are
registered (``CallGuard.register_on``), and costs one ``isinstance`` per call.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import DecodeError

from moorage.security.policy import (
    Authenticator,
    AuthError,
    PermissionDenied,
    Principal,
)

log = logging.getLogger("moorage.security")

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

HubOf = Callable[[str, "str | None"], "str | None"]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the stubs only


class _Undecodable:
    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


class _SafeDeserializer:
    """A request deserializer that hands the behaviour an ``_Undecodable`` instead of raising ``DecodeError`` (which
    grpc would answer ``UNKNOWN``); handlers that already have one are not wrapped again."""

    __slots__ = ("inner", "type_name")

    def __init__(self, inner: Callable[[bytes], Any]) -> None:
        self.inner = inner
        descriptor = getattr(getattr(inner, "__self__", None), "DESCRIPTOR", None)
        self.type_name = descriptor.full_name if descriptor is not None else "the request message"

    def __call__(self, data: bytes) -> Any:
        try:
            return self.inner(data)
        except DecodeError:
            return _Undecodable(self.type_name)


class _CheckedRegistrations:
    """The part of a ``grpc.aio.Server`` that generated ``add_*Servicer_to_server`` functions use, passing every
    registered method handler through the decoding check on its way to the real server."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        # Fallbacks only: grpc takes a method's registered handler (below) over a generic one.
        self._server.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Handler]) -> None:
        self._server.add_registered_method_handlers(
            service_name, {name: _wrap(handler, None) for name, handler in method_handlers.items()}
        )


def _default_hub_of(method: str, metadata_hub: str | None) -> str | None:
    return metadata_hub or "default"


def _metadata(context: grpc.aio.ServicerContext) -> tuple[str | None, str | None]:
    authorization = hub = None
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, bytes):
            continue
        if key == "authorization":
            authorization = value
        elif key == "taskhub" and value:
            hub = value
    return authorization, hub


class CallGuard(grpc.aio.ServerInterceptor):
    """Authenticate every call (when ``authenticator.enabled``) and turn undecodable requests into
    INVALID_ARGUMENT. ``hub_of(method, taskhub_metadata)`` names the hub a call is for (default: the metadata,
    else ``default``, as the sidecar's servicer reads it)."""

    def __init__(self, authenticator: Authenticator | None = None, *, hub_of: HubOf | None = None) -> None:
        self.authenticator = authenticator if authenticator is not None and authenticator.enabled else None
        self.hub_of = hub_of or _default_hub_of
        # method -> (the service's handler, our wrapper): registered handlers do not change, so wrap each once
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """What to build the server with: this guard when it authenticates, nothing otherwise (then services must be
        registered through ``register_on`` to keep the decoding check)."""
        return [self] if self.authenticator is not None else []

    def register_on(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """A stand-in for ``server`` to hand to ``add_*Servicer_to_server``: the handlers registered through it answer
        undecodable requests INVALID_ARGUMENT without an interceptor (the interceptor, when installed, does not wrap
        them a second time)."""
        # Only the two registration methods are offered; the cast lets typed registration helpers take it.
        return cast(grpc.aio.Server, _CheckedRegistrations(server))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        check = (
            None if (self.authenticator is None or method.startswith(OPEN_METHOD_PREFIXES)) else self._checker(method)
        )
        wrapped = _wrap(handler, check)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _checker(self, method: str) -> Callable[[grpc.aio.ServicerContext], Awaitable[Principal]]:
        authenticator = self.authenticator
        assert authenticator is not None

        async def check(context: grpc.aio.ServicerContext) -> Principal:
            authorization, metadata_hub = _metadata(context)
            hub = self.hub_of(method, metadata_hub)
            try:
                return await authenticator.authenticate(authorization, hub)
            except AuthError as exc:
                code = (
                    grpc.StatusCode.PERMISSION_DENIED
                    if isinstance(exc, PermissionDenied)
                    else grpc.StatusCode.UNAUTHENTICATED
                )
                log.info("grpc call refused method=%s hub=%s status=%s reason=%s", method, hub, code.name, exc)
                await context.abort(code, str(exc))
                raise AssertionError("unreachable") from None

        return check


def _safe_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None or isinstance(deserializer, _SafeDeserializer):
        return deserializer
    return _SafeDeserializer(deserializer)


async def _refuse_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request bytes are not a valid {request.type_name} protobuf message"
        )


async def _checked_iterator(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        await _refuse_undecodable(request, context)
        yield request


def _wrap(handler: Handler, check: Callable[[grpc.aio.ServicerContext], Awaitable[Principal]] | None) -> Handler:
    """The same kind of handler around the service's behaviour; the behaviours are grpc.aio coroutines or async
    generators, which the (sync-minded) grpc stubs cannot express, hence ``Any``."""
    if check is None and (
        handler.request_deserializer is None or isinstance(handler.request_deserializer, _SafeDeserializer)
    ):
        return handler  # wrapped at registration already: nothing to add
    deserializer = _safe_deserializer(handler.request_deserializer)
    serializer = handler.response_serializer

    if handler.unary_unary is not None:
        inner_uu: Any = handler.unary_unary
        if check is None and inspect.iscoroutinefunction(inner_uu):

            async def unary_unary_checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if request.__class__ is _Undecodable:
                    await _refuse_undecodable(request, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary_checked, deserializer, serializer)

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if check is not None:
                await check(context)
            await _refuse_undecodable(request, context)
            result = inner_uu(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, serializer)

    if handler.unary_stream is not None:
        inner_us: Any = handler.unary_stream
        if inspect.isasyncgenfunction(inner_us):

            async def unary_stream_gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if check is not None:
                    await check(context)
                await _refuse_undecodable(request, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream_gen, deserializer, serializer)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if check is not None:
                await check(context)
            await _refuse_undecodable(request, context)
            result = inner_us(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_stream_rpc_method_handler(unary_stream, deserializer, serializer)

    if handler.stream_unary is not None:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            if check is not None:
                await check(context)
            result = inner_su(_checked_iterator(requests, context), context)
            return await result if inspect.isawaitable(result) else result

        return grpc.stream_unary_rpc_method_handler(stream_unary, deserializer, serializer)

    inner_ss: Any = handler.stream_stream
    assert inner_ss is not None
    if inspect.isasyncgenfunction(inner_ss):

        async def stream_stream_gen(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if check is not None:
                await check(context)
            async for item in inner_ss(_checked_iterator(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream_gen, deserializer, serializer)

    async def stream_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        if check is not None:
            await check(context)
        result = inner_ss(_checked_iterator(requests, context), context)
        return await result if inspect.isawaitable(result) else result

    return grpc.stream_stream_rpc_method_handler(stream_stream, deserializer, serializer)


__all__ = ["OPEN_METHOD_PREFIXES", "CallGuard"]
