"""One error type for the gateway, with its gRPC status and its HTTP status."""

from __future__ import annotations

import grpc

# gRPC status -> HTTP status (the usual mapping, as in google.rpc / grpc-gateway).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
}


class GatewayError(Exception):
    """A request the gateway cannot serve: ``code`` is the gRPC status, ``message`` says what was wrong."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, http_status: int | None = None, reason: str | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)
        self.reason = reason  # a finer-grained code for JSON bodies, e.g. "AgentNotFound"

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code.name, "message": self.message, "status": self.http_status}
        if self.reason:
            body["reason"] = self.reason
        return {"error": body}

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.message!r})"


def invalid(message: str, reason: str | None = None) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason)


def not_found(message: str, reason: str | None = None) -> GatewayError:
    return GatewayError(grpc.StatusCode.NOT_FOUND, message, reason=reason)


def from_backend(exc: grpc.aio.AioRpcError | grpc.RpcError, what: str) -> GatewayError:
    """Translate an error from the Durable Task backend."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return GatewayError(code, f"{what}: the Durable Task backend is unavailable ({details})")
    if code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        return GatewayError(code, f"{what}: {details}")
    return GatewayError(grpc.StatusCode.INTERNAL, f"{what}: backend error {code.name}: {details}")


__all__ = ["HTTP_STATUS", "GatewayError", "from_backend", "invalid", "not_found"]
