"""CallGuard on a real in-process grpc.aio server with one method of each kind (unary/stream × unary/stream,
coroutine and async-generator handlers): authentication first, then undecodable requests → INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from moorage.security import Authenticator, TokenFile
from moorage.security.grpc import CallGuard

SV = wrappers_pb2.StringValue
GOOD = [("authorization", "Bearer good"), ("taskhub", "default")]


async def _uu(req: Any, ctx: Any) -> Any:
    return SV(value="uu:" + req.value)


async def _us(req: Any, ctx: Any) -> AsyncIterator[Any]:
    for i in range(2):
        yield SV(value=f"us{i}:{req.value}")


async def _su(reqs: AsyncIterator[Any], ctx: Any) -> Any:
    return SV(value="su:" + ",".join([r.value async for r in reqs]))


async def _ss(reqs: AsyncIterator[Any], ctx: Any) -> AsyncIterator[Any]:
    async for r in reqs:
        yield SV(value="ss:" + r.value)


def _handlers() -> grpc.GenericRpcHandler:
    d, s = SV.FromString, SV.SerializeToString
    return grpc.method_handlers_generic_handler(
        "t.T",
        {
            "UU": grpc.unary_unary_rpc_method_handler(_uu, d, s),
            "US": grpc.unary_stream_rpc_method_handler(_us, d, s),
            "SU": grpc.stream_unary_rpc_method_handler(_su, d, s),
            "SS": grpc.stream_stream_rpc_method_handler(_ss, d, s),
        },
    )


async def _scenario(tmp_path: Path) -> dict[str, Any]:
    f = tmp_path / "tokens"
    f.write_text("good\nother-hub only-there\n")
    server = grpc.aio.server(interceptors=[CallGuard(Authenticator(TokenFile(f)))])
    server.add_generic_rpc_handlers([_handlers()])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out: dict[str, Any] = {}
    raw = {"request_serializer": None, "response_deserializer": SV.FromString}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            uu = ch.unary_unary("/t.T/UU", SV.SerializeToString, SV.FromString)
            us = ch.unary_stream("/t.T/US", SV.SerializeToString, SV.FromString)
            su = ch.stream_unary("/t.T/SU", SV.SerializeToString, SV.FromString)
            ss = ch.stream_stream("/t.T/SS", SV.SerializeToString, SV.FromString)
            out["uu"] = (await uu(SV(value="a"), metadata=GOOD)).value
            out["us"] = [m.value async for m in us(SV(value="b"), metadata=GOOD)]
            out["su"] = (await su(iter([SV(value="c"), SV(value="d")]), metadata=GOOD)).value
            out["ss"] = [m.value async for m in ss(iter([SV(value="e")]), metadata=GOOD)]
            codes = {}
            for name, call in [
                ("uu-none", lambda: uu(SV(value="a"))),
                ("uu-hub", lambda: uu(SV(value="a"), metadata=[("authorization", "Bearer other-hub")])),
                ("su-none", lambda: su(iter([SV(value="c")]))),
                ("uu-garbage", lambda: ch.unary_unary("/t.T/UU", **raw)(b"\xff\xff\xff", metadata=GOOD)),
                ("su-garbage", lambda: ch.stream_unary("/t.T/SU", **raw)(iter([b"\xff\xff\xff"]), metadata=GOOD)),
            ]:
                try:
                    await call()
                    codes[name] = "OK"
                except grpc.aio.AioRpcError as exc:
                    codes[name] = (exc.code(), exc.details())
            try:
                async for _ in ch.unary_stream("/t.T/US", **raw)(b"\xff\xff\xff", metadata=GOOD):
                    pass
            except grpc.aio.AioRpcError as exc:
                codes["us-garbage"] = (exc.code(), exc.details())
            try:
                async for _ in us(SV(value="x")):
                    pass
            except grpc.aio.AioRpcError as exc:
                codes["us-none"] = (exc.code(), exc.details())
            out["codes"] = codes
    finally:
        await server.stop(None)
    return out


def test_every_handler_kind(tmp_path: Path):
    out = asyncio.run(_scenario(tmp_path))
    assert out["uu"] == "uu:a" and out["us"] == ["us0:b", "us1:b"]
    assert out["su"] == "su:c,d" and out["ss"] == ["ss:e"]
    codes = out["codes"]
    for name in ("uu-none", "su-none", "us-none"):
        assert codes[name][0] == grpc.StatusCode.UNAUTHENTICATED, (name, codes[name])
    assert codes["uu-hub"][0] == grpc.StatusCode.PERMISSION_DENIED
    for name in ("uu-garbage", "su-garbage", "us-garbage"):
        code, details = codes[name]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, codes[name])
        assert "google.protobuf.StringValue" in details


def _methods() -> dict[str, Any]:
    d, s = SV.FromString, SV.SerializeToString
    return {
        "UU": grpc.unary_unary_rpc_method_handler(_uu, d, s),
        "US": grpc.unary_stream_rpc_method_handler(_us, d, s),
        "SU": grpc.stream_unary_rpc_method_handler(_su, d, s),
        "SS": grpc.stream_stream_rpc_method_handler(_ss, d, s),
    }


async def _registered_scenario(guard: CallGuard) -> dict[str, Any]:
    """Services registered through ``register_on`` (as the sidecar registers its own), on a server built with
    ``guard.interceptors()``."""
    server = grpc.aio.server(interceptors=guard.interceptors())
    guard.register_on(server).add_registered_method_handlers("t.T", _methods())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    out: dict[str, Any] = {}
    raw = {"request_serializer": None, "response_deserializer": SV.FromString}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            for name, call in [
                ("uu", lambda: ch.unary_unary("/t.T/UU", SV.SerializeToString, SV.FromString)(SV(value="a"))),
                ("uu-garbage", lambda: ch.unary_unary("/t.T/UU", **raw)(b"\xff\xff\xff")),
                ("su-garbage", lambda: ch.stream_unary("/t.T/SU", **raw)(iter([b"\xff\xff\xff"]))),
            ]:
                try:
                    out[name] = (grpc.StatusCode.OK, (await call()).value)
                except grpc.aio.AioRpcError as exc:
                    out[name] = (exc.code(), exc.details())
            for name, path, request in [("us", "/t.T/US", b"\xff\xff\xff"), ("ss", "/t.T/SS", iter([b"\xff\xff\xff"]))]:
                stream = ch.unary_stream(path, **raw) if name == "us" else ch.stream_stream(path, **raw)
                try:
                    out[f"{name}-garbage"] = (grpc.StatusCode.OK, [m.value async for m in stream(request)])
                except grpc.aio.AioRpcError as exc:
                    out[f"{name}-garbage"] = (exc.code(), exc.details())
    finally:
        await server.stop(None)
    return out


def test_without_auth_no_interceptor_and_the_handlers_still_refuse_garbage():
    guard = CallGuard(None)
    assert guard.interceptors() == []  # grpc runs an interceptor's pipeline on every call: none when not needed
    out = asyncio.run(_registered_scenario(guard))
    assert out["uu"] == (grpc.StatusCode.OK, "uu:a")
    for name in ("uu-garbage", "su-garbage", "us-garbage", "ss-garbage"):
        code, details = out[name]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, out[name])
        assert "google.protobuf.StringValue" in details


def test_with_auth_registered_handlers_are_authenticated_first(tmp_path: Path):
    f = tmp_path / "tokens"
    f.write_text("good\n")
    guard = CallGuard(Authenticator(TokenFile(f)))
    assert guard.interceptors() == [guard]
    out = asyncio.run(_registered_scenario(guard))  # no token sent: refused before the bytes are looked at
    for name in ("uu", "uu-garbage", "su-garbage", "us-garbage", "ss-garbage"):
        assert out[name][0] == grpc.StatusCode.UNAUTHENTICATED, (name, out[name])
