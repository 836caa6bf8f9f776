"""The thin Moorage client for Python, sync and asyncio, over the gateway's gRPC ``moorage.v1.AgentService``.

    from moorage.client import Client
    client = Client("localhost:8080")
    session = client.agent("Joker").new_session()
    print(session.run("Tell me a joke about pirates").text)
    for text in client.agent("Joker").stream("And one about sailors"): print(text, end="")

It needs only the gateway (no Durable Task SDK at run time beyond this package's own dependencies). Python code
that runs next to the workers can use ``moorage.agents.AgentClient`` instead, which talks to the backend directly.
"""

from moorage.client._async import (
    AsyncAgent,
    AsyncAgentHandle,
    AsyncAgentSession,
    AsyncClient,
    AsyncRunStream,
    AsyncThread,
)
from moorage.client._sync import Agent, AgentHandle, AgentSession, Client, RunStream, Thread
from moorage.client._types import (
    AgentInfo,
    AlreadyExistsError,
    ChatMessage,
    Entity,
    InvalidArgumentError,
    MoorageError,
    NotFoundError,
    Orchestration,
    RunFailedError,
    RunHandle,
    RunResult,
    RunStatus,
    Session,
    SessionSummary,
    TimeoutExpiredError,
    UnavailableError,
)

# Old names, kept as aliases: Agent = AgentHandle, Thread = AgentSession, AsyncAgent = AsyncAgentHandle,
# AsyncThread = AsyncAgentSession (and ``thread_id`` = ``session_id`` on every value and keyword).
__all__ = [
    "Agent",
    "AgentHandle",
    "AgentInfo",
    "AgentSession",
    "AlreadyExistsError",
    "AsyncAgent",
    "AsyncAgentHandle",
    "AsyncAgentSession",
    "AsyncClient",
    "AsyncRunStream",
    "AsyncThread",
    "ChatMessage",
    "Client",
    "Entity",
    "InvalidArgumentError",
    "MoorageError",
    "NotFoundError",
    "Orchestration",
    "RunFailedError",
    "RunHandle",
    "RunResult",
    "RunStatus",
    "RunStream",
    "Session",
    "SessionSummary",
    "Thread",
    "TimeoutExpiredError",
    "UnavailableError",
]
