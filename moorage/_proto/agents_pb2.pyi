from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_PENDING: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_COMPLETED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]

class OrchestrationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORCHESTRATION_STATUS_UNSPECIFIED: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_PENDING: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_RUNNING: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_COMPLETED: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_FAILED: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_TERMINATED: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_SUSPENDED: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_CONTINUED_AS_NEW: _ClassVar[OrchestrationStatus]
    ORCHESTRATION_STATUS_CANCELED: _ClassVar[OrchestrationStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_PENDING: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_COMPLETED: RunStatus
RUN_STATUS_FAILED: RunStatus
ORCHESTRATION_STATUS_UNSPECIFIED: OrchestrationStatus
ORCHESTRATION_STATUS_PENDING: OrchestrationStatus
ORCHESTRATION_STATUS_RUNNING: OrchestrationStatus
ORCHESTRATION_STATUS_COMPLETED: OrchestrationStatus
ORCHESTRATION_STATUS_FAILED: OrchestrationStatus
ORCHESTRATION_STATUS_TERMINATED: OrchestrationStatus
ORCHESTRATION_STATUS_SUSPENDED: OrchestrationStatus
ORCHESTRATION_STATUS_CONTINUED_AS_NEW: OrchestrationStatus
ORCHESTRATION_STATUS_CANCELED: OrchestrationStatus

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("name", "description", "registered_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    registered_at: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., registered_at: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("agent", "session_id", "message", "correlation_id", "response_schema_json", "options_json", "enable_tool_calls", "timeout_seconds")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    ENABLE_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    message: str
    correlation_id: str
    response_schema_json: str
    options_json: str
    enable_tool_calls: bool
    timeout_seconds: float
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., message: _Optional[str] = ..., correlation_id: _Optional[str] = ..., response_schema_json: _Optional[str] = ..., options_json: _Optional[str] = ..., enable_tool_calls: bool = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "total_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id", "response", "value_json", "usage", "created_at", "messages_json")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_JSON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    response: str
    value_json: str
    usage: Usage
    created_at: str
    messages_json: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., response: _Optional[str] = ..., value_json: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., created_at: _Optional[str] = ..., messages_json: _Optional[str] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class RunChunk(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id", "text", "sequence")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    text: str
    sequence: int
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., text: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...

class ResumeRunStreamRequest(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id", "after_sequence", "timeout_seconds")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    after_sequence: int
    timeout_seconds: float
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class RunStreamEvent(_message.Message):
    __slots__ = ("started", "chunk", "completed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    started: RunStarted
    chunk: RunChunk
    completed: RunResponse
    def __init__(self, started: _Optional[_Union[RunStarted, _Mapping]] = ..., chunk: _Optional[_Union[RunChunk, _Mapping]] = ..., completed: _Optional[_Union[RunResponse, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id", "status")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    status: RunStatus
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ...) -> None: ...

class GetRunResultRequest(_message.Message):
    __slots__ = ("agent", "session_id", "correlation_id", "wait_seconds")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    correlation_id: str
    wait_seconds: float
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class RunError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetRunResultResponse(_message.Message):
    __slots__ = ("status", "result", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    result: RunResponse
    error: RunError
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., result: _Optional[_Union[RunResponse, _Mapping]] = ..., error: _Optional[_Union[RunError, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("agent", "session_id")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "text", "correlation_id", "created_at", "author_name", "contents_json")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    role: str
    text: str
    correlation_id: str
    created_at: str
    author_name: str
    contents_json: str
    def __init__(self, role: _Optional[str] = ..., text: _Optional[str] = ..., correlation_id: _Optional[str] = ..., created_at: _Optional[str] = ..., author_name: _Optional[str] = ..., contents_json: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("agent", "session_id", "messages", "running_correlation_id", "last_modified_at", "state_json")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    running_correlation_id: str
    last_modified_at: str
    state_json: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., running_correlation_id: _Optional[str] = ..., last_modified_at: _Optional[str] = ..., state_json: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("agent", "page_size", "continuation_token")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent: str
    page_size: int
    continuation_token: str
    def __init__(self, agent: _Optional[str] = ..., page_size: _Optional[int] = ..., continuation_token: _Optional[str] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("agent", "session_id", "last_modified_at")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    last_modified_at: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ..., last_modified_at: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "continuation_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTINUATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionSummary]
    continuation_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionSummary, _Mapping]]] = ..., continuation_token: _Optional[str] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("agent", "session_id")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    agent: str
    session_id: str
    def __init__(self, agent: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartOrchestrationRequest(_message.Message):
    __slots__ = ("name", "input_json", "instance_id", "start_at", "tags", "version")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    START_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    input_json: str
    instance_id: str
    start_at: str
    tags: _containers.ScalarMap[str, str]
    version: str
    def __init__(self, name: _Optional[str] = ..., input_json: _Optional[str] = ..., instance_id: _Optional[str] = ..., start_at: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., version: _Optional[str] = ...) -> None: ...

class StartOrchestrationResponse(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class GetOrchestrationRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class FailureDetails(_message.Message):
    __slots__ = ("error_type", "message", "stack_trace")
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STACK_TRACE_FIELD_NUMBER: _ClassVar[int]
    error_type: str
    message: str
    stack_trace: str
    def __init__(self, error_type: _Optional[str] = ..., message: _Optional[str] = ..., stack_trace: _Optional[str] = ...) -> None: ...

class Orchestration(_message.Message):
    __slots__ = ("instance_id", "name", "status", "input_json", "output_json", "custom_status_json", "created_at", "last_updated_at", "failure")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    name: str
    status: OrchestrationStatus
    input_json: str
    output_json: str
    custom_status_json: str
    created_at: str
    last_updated_at: str
    failure: FailureDetails
    def __init__(self, instance_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[OrchestrationStatus, str]] = ..., input_json: _Optional[str] = ..., output_json: _Optional[str] = ..., custom_status_json: _Optional[str] = ..., created_at: _Optional[str] = ..., last_updated_at: _Optional[str] = ..., failure: _Optional[_Union[FailureDetails, _Mapping]] = ...) -> None: ...

class WaitForOrchestrationRequest(_message.Message):
    __slots__ = ("instance_id", "timeout_seconds")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    timeout_seconds: float
    def __init__(self, instance_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class RaiseEventRequest(_message.Message):
    __slots__ = ("instance_id", "event_name", "data_json")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    event_name: str
    data_json: str
    def __init__(self, instance_id: _Optional[str] = ..., event_name: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class RaiseEventResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TerminateRequest(_message.Message):
    __slots__ = ("instance_id", "output_json", "recursive")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    output_json: str
    recursive: bool
    def __init__(self, instance_id: _Optional[str] = ..., output_json: _Optional[str] = ..., recursive: bool = ...) -> None: ...

class TerminateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SuspendRequest(_message.Message):
    __slots__ = ("instance_id", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    reason: str
    def __init__(self, instance_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SuspendResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("instance_id", "reason")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    reason: str
    def __init__(self, instance_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SignalEntityRequest(_message.Message):
    __slots__ = ("name", "key", "operation", "input_json", "signal_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    operation: str
    input_json: str
    signal_at: str
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., operation: _Optional[str] = ..., input_json: _Optional[str] = ..., signal_at: _Optional[str] = ...) -> None: ...

class SignalEntityResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEntityRequest(_message.Message):
    __slots__ = ("name", "key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("name", "key", "state_json", "last_modified_at", "backlog")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    state_json: str
    last_modified_at: str
    backlog: int
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., state_json: _Optional[str] = ..., last_modified_at: _Optional[str] = ..., backlog: _Optional[int] = ...) -> None: ...

class PublishChunksRequest(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[RunChunk]
    def __init__(self, chunks: _Optional[_Iterable[_Union[RunChunk, _Mapping]]] = ...) -> None: ...

class PublishChunksResponse(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: int
    def __init__(self, delivered: _Optional[int] = ...) -> None: ...
