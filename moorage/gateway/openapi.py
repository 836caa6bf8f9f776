"""The OpenAPI 3.1 description of the gateway's HTTP API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("moorage")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "0.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request: malformed JSON, a missing or invalid field",
        404: "Unknown agent, session, run, instance or entity",
        409: "Conflict (an instance id in use, a state that forbids the operation)",
        413: "The request body is over the size limit",
        500: "The agent's turn failed (see error.message)",
        503: "The Durable Task backend cannot be reached",
        504: "A wait ran out",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


P_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The agent's name (e.g. Joker).",
}
P_SESSION = {"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}}
P_THREAD = {
    "name": "threadId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": 'The session id ("thread" is the durable-agents name of a session).',
}
P_CORR = {"name": "correlationId", "in": "path", "required": True, "schema": {"type": "string"}}
P_INSTANCE = {"name": "instanceId", "in": "path", "required": True, "schema": {"type": "string"}}
Q_WAIT = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "boolean", "default": True},
    "description": "false: answer 202 at once with the run's status URL (Location).",
}
Q_STREAM = {
    "name": "stream",
    "in": "query",
    "schema": {"type": "boolean", "default": False},
    "description": "true (or Accept: text/event-stream): stream the answer as server-sent events.",
}
Q_TIMEOUT = {
    "name": "timeout",
    "in": "query",
    "schema": {"type": "number", "default": 300},
    "description": "Seconds to wait for the answer; when they run out the answer is 202 + status URL.",
}
ANY = {"description": "Any JSON value."}


def _session_paths(noun: str, p_id: dict[str, Any], run_post: dict[str, Any]) -> dict[str, Any]:
    """The session routes under ``/api/agents/{name}/<noun>``: ``sessions``, and ``threads``, the durable-agents
    announcement's name for the same routes (documented aliases, same handlers and answers)."""
    base = f"/api/agents/{{name}}/{noun}"
    item = f"{base}/{{{p_id['name']}}}"
    alias = noun != "sessions"
    suffix = "Thread" if alias else "Session"
    note = " (alias of the /sessions route)" if alias else ""

    def op(summary: str, name: str, **rest: Any) -> dict[str, Any]:
        return {
            "summary": summary + note,
            "operationId": name + suffix,
            **({"deprecated": True} if alias else {}),
            **rest,
        }

    return {
        base: {
            "parameters": [P_NAME],
            "post": op("Start a new session with a message", "runNew", **run_post),
            "get": op(
                "List the agent's sessions",
                "list",
                parameters=[
                    {"name": "pageSize", "in": "query", "schema": {"type": "integer"}},
                    {"name": "continuationToken", "in": "query", "schema": {"type": "string"}},
                ],
                responses={"200": _json(_ref("SessionPage"), "A page of sessions."), **_errors(400, 404)},
            ),
        },
        item: {
            "parameters": [P_NAME, p_id],
            "post": op("Send the next message of a session", "run", **run_post),
            "get": op(
                "A session with its history",
                "get",
                responses={"200": _json(_ref("Session"), "The session."), **_errors(400, 404)},
            ),
            "delete": op(
                "Delete a session", "delete", responses={"204": {"description": "Deleted."}, **_errors(400, 404)}
            ),
        },
        f"{item}/runs/{{correlationId}}": {
            "parameters": [P_NAME, p_id, P_CORR],
            "get": op(
                "The status of a turn, and its answer once done",
                "getRunOf",
                parameters=[
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number"},
                        "description": "Seconds to wait for the turn to finish.",
                    }
                ],
                responses={
                    "200": _json(_ref("RunResponse"), "Done."),
                    "202": _json(_ref("RunAccepted"), "Still pending or running."),
                    **_errors(400, 404, 500),
                },
            ),
        },
        f"{item}/archive": {
            "parameters": [P_NAME, p_id],
            "get": op(
                "A page of the session's archive (entries moved out of its state; page 0 is the oldest)",
                "getArchive",
                parameters=[{"name": "page", "in": "query", "schema": {"type": "integer"}}],
                responses={
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "page": {"type": "integer"},
                                "pages": {"type": "integer"},
                                "archived": {"type": "integer"},
                                "first": {"type": "integer"},
                                "entries": {"type": "array", "items": ANY},
                                "nextPage": {"type": "integer"},
                            },
                        },
                        "The page.",
                    ),
                    **_errors(400, 404),
                },
            ),
        },
        f"{item}/runs/{{correlationId}}/stream": {
            "parameters": [P_NAME, p_id, P_CORR],
            "get": op(
                "Resume a streamed turn after the chunk named by Last-Event-ID (any gateway instance)",
                "resumeStream",
                parameters=[
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    {"name": "lastEventId", "in": "query", "schema": {"type": "integer"}},
                ],
                responses={
                    "200": {
                        "description": "Server-sent events: `chunk` (id = its number in the "
                        "turn) ..., then `completed` or `error`.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 404),
                },
            ),
        },
    }


def _function_app_paths() -> dict[str, Any]:
    """Agent Framework's AgentFunctionApp routes (rules: moorage.gateway.functionapp)."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    q = [
        {"name": n, "in": "query", "schema": {"type": "string"}}
        for n in ("session_id", "thread_id", "sessionId", "wait_for_response", "waitForResponse", "timeout")
    ]
    result = {
        "type": "object",
        "properties": {
            k: {"type": "string"}
            for k in ("response", "message", "session_id", "status", "correlation_id", "statusQueryGetUri", "error")
        }
        | {"message_count": {"type": "integer"}},
    }
    answers = {
        "200": {
            "description": "status success",
            "content": {"application/json": {"schema": result}, "text/plain": {"schema": {"type": "string"}}},
        },
        "202": {"description": "status accepted (not waiting); statusQueryGetUri answers later"},
        "400": {"description": '{"error": "..."}: no message, bad JSON, conflicting session ids'},
        "500": {"description": "status failed or timeout"},
    }
    return {
        "/api/agents/{name}/run": {
            "post": {
                "summary": "A turn, as Agent Framework's Function App takes it",
                "operationId": "functionAppRun",
                "parameters": [
                    name,
                    {"name": "x-ms-wait-for-response", "in": "header", "schema": {"type": "string"}},
                    *q,
                ],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "message": {"type": "string"},
                                    "session_id": {"type": "string"},
                                    "thread_id": {"type": "string"},
                                    "role": {"type": "string"},
                                    "response_format": ANY,
                                    "enable_tool_calls": {"type": "boolean"},
                                    "wait_for_response": {"type": "boolean"},
                                },
                            }
                        },
                        "text/plain": {"schema": {"type": "string"}},
                    }
                },
                "responses": answers,
            }
        },
        "/api/agents/{name}/run/{sessionId}/{correlationId}": {
            "get": {
                "summary": "The answer of a Function App turn (202 while it runs)",
                "operationId": "functionAppRunStatus",
                "parameters": [
                    name,
                    {"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "correlationId", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {**answers, "404": {"description": "no such turn"}},
            }
        },
        "/mcp": {
            "post": {
                "summary": "MCP (streamable HTTP): every agent as a tool (arguments query, sessionId)",
                "operationId": "mcp",
                "responses": {"200": {"description": "A JSON-RPC answer."}},
            }
        },
        "/api/health": {
            "get": {
                "summary": "Agent Framework's health check",
                "operationId": "functionAppHealth",
                "responses": {
                    "200": {
                        "description": '{"status": "healthy", "agents": '
                        "[{name, type, http_endpoint_enabled, "
                        'mcp_tool_enabled}], "agent_count"}'
                    }
                },
            }
        },
    }


def openapi_spec(server_url: str = "") -> dict[str, Any]:
    run_post: dict[str, Any] = {
        "parameters": [Q_WAIT, Q_STREAM, Q_TIMEOUT],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _ref("RunRequest"),
                    "example": {"message": "Tell me a joke about pirates"},
                },
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        "responses": {
            "200": _json(_ref("RunResponse"), "The answer."),
            "202": _json(_ref("RunAccepted"), "Accepted (wait=false, or the timeout ran out); poll Location."),
            **_errors(400, 404, 413, 500, 503),
        },
    }
    run_post["responses"]["200"]["content"]["text/event-stream"] = {
        "schema": {"type": "string"},
        "description": "With stream=true: events `started` {sessionId, threadId, correlationId}, "
        "`chunk` {text, sequence} "
        "(in order, before the turn completes), then `completed` (a RunResponse) or `error`.",
    }
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Moorage gateway",
            "version": _version(),
            "description": "Run durable agents and drive orchestrations and entities over HTTP. The same "
            "operations exist over gRPC (moorage.v1.AgentService, proto/moorage/v1/agents.proto).",
        },
        "paths": {
            "/api/agents": {
                "get": {
                    "summary": "Known agents",
                    "operationId": "listAgents",
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"agents": {"type": "array", "items": _ref("AgentInfo")}}},
                            "Agents.",
                        )
                    },
                }
            },
            **_session_paths("sessions", P_SESSION, run_post),
            **_session_paths("threads", P_THREAD, run_post),
            "/api/orchestrations/{name}": {
                "post": {
                    "summary": "Start an orchestration; the body is its input",
                    "operationId": "startOrchestration",
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "instanceId", "in": "query", "schema": {"type": "string"}},
                        {"name": "startAt", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "version", "in": "query", "schema": {"type": "string"}},
                    ],
                    "requestBody": {"content": {"application/json": {"schema": ANY}}},
                    "responses": {"202": _json(_ref("InstanceUrls"), "Started."), **_errors(400, 409, 413)},
                }
            },
            "/api/instances/{instanceId}": {
                "get": {
                    "summary": "An orchestration instance's status",
                    "operationId": "getInstance",
                    "parameters": [
                        P_INSTANCE,
                        {
                            "name": "wait",
                            "in": "query",
                            "schema": {"type": "number"},
                            "description": "Seconds to wait for it to finish.",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Instance"), "Finished (completed, failed, terminated)."),
                        "202": _json(_ref("Instance"), "Pending, running or suspended."),
                        **_errors(400, 404),
                    },
                }
            },
            "/api/instances/{instanceId}/events/{eventName}": {
                "post": {
                    "summary": "Raise an event; the body is its data",
                    "operationId": "raiseEvent",
                    "parameters": [
                        P_INSTANCE,
                        {"name": "eventName", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "requestBody": {"content": {"application/json": {"schema": ANY}}},
                    "responses": {"202": {"description": "Delivered."}, **_errors(400, 404, 413)},
                }
            },
            "/api/instances/{instanceId}/terminate": {
                "post": {
                    "summary": "Terminate an instance",
                    "operationId": "terminate",
                    "parameters": [P_INSTANCE, {"name": "reason", "in": "query", "schema": {"type": "string"}}],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object", "properties": {"output": ANY}}}}
                    },
                    "responses": {"202": {"description": "Terminating."}, **_errors(400, 404, 409)},
                }
            },
            "/api/instances/{instanceId}/suspend": {
                "post": {
                    "summary": "Suspend an instance",
                    "operationId": "suspend",
                    "parameters": [P_INSTANCE, {"name": "reason", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"202": {"description": "Suspending."}, **_errors(400, 404, 409)},
                }
            },
            "/api/instances/{instanceId}/resume": {
                "post": {
                    "summary": "Resume a suspended instance",
                    "operationId": "resume",
                    "parameters": [P_INSTANCE, {"name": "reason", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"202": {"description": "Resuming."}, **_errors(400, 404, 409)},
                }
            },
            "/api/entities/{name}/{key}": {
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "post": {
                    "summary": "Signal an entity operation; the body is its input",
                    "operationId": "signalEntity",
                    "parameters": [
                        {"name": "op", "in": "query", "required": True, "schema": {"type": "string"}},
                        {"name": "signalAt", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                    ],
                    "requestBody": {"content": {"application/json": {"schema": ANY}}},
                    "responses": {"202": {"description": "Signalled."}, **_errors(400, 413)},
                },
                "get": {
                    "summary": "An entity's state",
                    "operationId": "getEntity",
                    "responses": {"200": _json(_ref("Entity"), "The entity."), **_errors(400, 404)},
                },
            },
            **_function_app_paths(),
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "health",
                    "responses": {"200": {"description": "Serving."}},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "status"],
                            "properties": {
                                "code": {"type": "string", "description": "The gRPC status name (NOT_FOUND, ...)."},
                                "message": {"type": "string"},
                                "status": {"type": "integer"},
                                "reason": {
                                    "type": "string",
                                    "description": "e.g. AgentNotFound, ThreadNotFound, BadJson.",
                                },
                            },
                        }
                    },
                },
                "AgentInfo": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "registeredAt": {"type": "string"},
                    },
                },
                "RunRequest": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": {"type": "string"},
                        "correlationId": {"type": "string", "description": "Idempotency key of the turn."},
                        "responseSchema": {"description": 'A JSON Schema for a structured answer (or "json").'},
                        "options": {"type": "object", "description": "Chat options (temperature, max_tokens, ...)."},
                        "enableToolCalls": {"type": "boolean"},
                    },
                },
                "Usage": {
                    "type": "object",
                    "properties": {
                        "inputTokenCount": {"type": "integer"},
                        "outputTokenCount": {"type": "integer"},
                        "totalTokenCount": {"type": "integer"},
                    },
                },
                "RunResponse": {
                    "type": "object",
                    "required": ["sessionId", "threadId", "response", "correlationId"],
                    "properties": {
                        "sessionId": {"type": "string"},
                        "threadId": {"type": "string", "description": "= sessionId"},
                        "response": {"type": "string"},
                        "correlationId": {"type": "string"},
                        "agent": {"type": "string"},
                        "status": {"type": "string", "enum": ["completed"]},
                        "value": ANY,
                        "usage": _ref("Usage"),
                        "createdAt": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "RunAccepted": {
                    "type": "object",
                    "properties": {
                        "sessionId": {"type": "string"},
                        "threadId": {"type": "string", "description": "= sessionId"},
                        "correlationId": {"type": "string"},
                        "agent": {"type": "string"},
                        "status": {"type": "string", "enum": ["pending", "running"]},
                        "statusQueryGetUri": {"type": "string"},
                    },
                },
                "Message": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string"},
                        "text": {"type": "string"},
                        "correlationId": {"type": "string"},
                        "createdAt": {"type": "string"},
                        "authorName": {"type": "string"},
                        "contents": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "Session": {
                    "type": "object",
                    "properties": {
                        "agent": {"type": "string"},
                        "sessionId": {"type": "string"},
                        "threadId": {"type": "string", "description": "= sessionId"},
                        "messages": {"type": "array", "items": _ref("Message")},
                        "runningCorrelationId": {"type": "string"},
                        "lastModifiedAt": {"type": "string"},
                        "state": {"type": "object", "description": "Durable-agent state, schema 1.1.0."},
                    },
                },
                "SessionPage": {
                    "type": "object",
                    "properties": {
                        "sessions": {"type": "array", "items": _ref("SessionSummary")},
                        "threads": {"type": "array", "items": _ref("SessionSummary"), "description": "= sessions"},
                        "continuationToken": {"type": "string"},
                    },
                },
                "SessionSummary": {
                    "type": "object",
                    "properties": {
                        "agent": {"type": "string"},
                        "sessionId": {"type": "string"},
                        "threadId": {"type": "string", "description": "= sessionId"},
                        "lastModifiedAt": {"type": "string"},
                    },
                },
                "InstanceUrls": {
                    "type": "object",
                    "properties": {
                        k: {"type": "string"}
                        for k in (
                            "id",
                            "instanceId",
                            "statusQueryGetUri",
                            "sendEventPostUri",
                            "terminatePostUri",
                            "suspendPostUri",
                            "resumePostUri",
                        )
                    },
                },
                "Instance": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "instanceId": {"type": "string"},
                        "runtimeStatus": {
                            "type": "string",
                            "enum": [
                                "Pending",
                                "Running",
                                "Completed",
                                "Failed",
                                "Terminated",
                                "Suspended",
                                "ContinuedAsNew",
                                "Canceled",
                            ],
                        },
                        "input": ANY,
                        "output": ANY,
                        "customStatus": ANY,
                        "createdTime": {"type": "string"},
                        "lastUpdatedTime": {"type": "string"},
                        "failureDetails": {"type": ["object", "null"]},
                    },
                },
                "Entity": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "key": {"type": "string"},
                        "state": ANY,
                        "lastModifiedAt": {"type": "string"},
                        "backlog": {"type": "integer"},
                    },
                },
            }
        },
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec


__all__ = ["openapi_spec"]
