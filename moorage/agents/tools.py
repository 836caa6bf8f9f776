"""Tools: plain Python functions (sync or async) with type hints become tools the model can call.

The JSON schema of a tool's arguments comes from its signature (through Pydantic, so ``int``, ``Literal``,
``Enum``, ``list[str]``, ``Optional``, nested Pydantic models, ``Annotated[str, Field(description=...)]`` all
work) and its docstring (the first paragraph describes the tool; ``Args:`` / ``:param x:`` / numpydoc
``Parameters`` sections describe the arguments).

Each tool call runs as its own durable activity. A tool may take a parameter annotated :class:`ToolContext`
(any name; it is not shown to the model) to get the call's stable idempotency key — the same on every retry
or re-execution of that call after a crash, different for every other call::

    def charge_card(order_id: str, amount_cents: int, ctx: ToolContext) -> str:
        \"\"\"Charge the customer's card.\"\"\"
        return payments.charge(order_id, amount_cents, idempotency_key=ctx.idempotency_key)

:func:`current_tool_context` returns the same object from anywhere inside the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, create_model


@dataclass(frozen=True)
class ToolContext:
    """What a tool call knows about itself."""

    idempotency_key: str
    """``<turn instance id>:<task id>``: stable across retries and crash re-execution of this one call."""
    call_id: str
    tool_name: str
    agent_name: str
    session_id: str
    instance_id: str
    task_id: int


_current: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar("moorage_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The :class:`ToolContext` of the tool call running in this thread/task, if any."""
    return _current.get()


# ---------------------------------------------------------------------------------------------------------------------
# Docstrings
# ---------------------------------------------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?|See Also)\s*:?\s*$"
)
_GOOGLE_ARG = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_REST_PARAM = re.compile(r"^\s*:param\s+(?:[^:]+\s+)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google, reST or numpydoc docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    desc_lines: list[str] = []
    section: str | None = None
    current: str | None = None
    param_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        rest = _REST_PARAM.match(line)
        if rest:
            current = rest.group(1)
            params[current] = rest.group(2).strip()
            section = "rest"
            i += 1
            continue
        if line.strip().startswith(":") and section in (None, "rest"):
            section, current = "rest", None
            i += 1
            continue
        m = _SECTION.match(line)
        # numpydoc: "Parameters" followed by a dashes line
        if m or (i + 1 < len(lines) and re.match(r"^\s*-{3,}\s*$", lines[i + 1]) and line.strip()):
            name = (m.group(1) if m else line.strip()).lower()
            section = "args" if name in ("args", "arguments", "parameters", "params") else "other"
            current = None
            param_indent = None
            i += 2 if (i + 1 < len(lines) and re.match(r"^\s*-{3,}\s*$", lines[i + 1])) else 1
            continue
        if section is None:
            desc_lines.append(line)
        elif section == "args":
            indent = len(line) - len(line.lstrip())
            numpy = re.match(r"^\s*(\w+)\s+:\s*(.*)$", line)  # numpydoc "name : type"
            g = _GOOGLE_ARG.match(line)
            if line.strip() and (param_indent is None or indent <= param_indent) and (numpy or g):
                param_indent = indent
                if numpy:
                    current = numpy.group(1)
                    params[current] = ""
                else:
                    assert g is not None
                    current = g.group(1)
                    params[current] = g.group(3).strip()
            elif current and line.strip():
                params[current] = (params[current] + " " + line.strip()).strip()
        elif section == "rest" and current and line.strip():
            params[current] = (params[current] + " " + line.strip()).strip()
        i += 1
    paragraphs = "\n".join(desc_lines).strip().split("\n\n")
    description = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    return description, params


# ---------------------------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------------------------


def _is_tool_context(annotation: Any) -> bool:
    if annotation is ToolContext:
        return True
    if isinstance(annotation, str):
        return annotation.split(".")[-1] == "ToolContext"
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_tool_context(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


class Tool:
    """A function the model can call."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None):
        if not callable(fn):
            raise TypeError(f"a tool must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or ""
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        doc_desc, param_docs = parse_docstring(inspect.getdoc(fn))
        self.description = description if description is not None else doc_desc
        call = getattr(fn, "__call__", None)  # noqa: B004 -- an async __call__ method, not callability
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)

        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:
            hints = {}
        sig = inspect.signature(fn)
        fields: dict[str, Any] = {}
        self.context_param: str | None = None
        self._var_kwargs = False
        for pname, param in sig.parameters.items():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL,):
                continue
            if param.kind == inspect.Parameter.VAR_KEYWORD:
                self._var_kwargs = True
                continue
            annotation = hints.get(pname, param.annotation)
            if _is_tool_context(annotation):
                self.context_param = pname
                continue
            if annotation is inspect.Parameter.empty:
                annotation = Any
            default = ... if param.default is inspect.Parameter.empty else param.default
            doc = param_docs.get(pname)
            fields[pname] = (annotation, Field(default, description=doc) if doc else default)
        self._args_model: type[BaseModel] = create_model(f"{self.name}_arguments", __config__=None, **fields)
        schema = _strip_titles(self._args_model.model_json_schema())
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.parameters: dict[str, Any] = schema

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def openai_schema(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}

    def bind(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate and coerce the model's arguments (raises pydantic.ValidationError)."""
        model = self._args_model.model_validate(arguments or {})
        return {name: getattr(model, name) for name in type(model).model_fields}

    def invoke(self, arguments: dict[str, Any], context: ToolContext | None = None) -> Any:
        """Validate the arguments and run the tool (an async tool runs on its own event loop) with the context set."""
        return self.call_bound(self.bind(arguments), context)

    def call_bound(self, kwargs: dict[str, Any], context: ToolContext | None = None) -> Any:
        """Run the tool with arguments already validated by :meth:`bind`."""
        kwargs = dict(kwargs)
        if self.context_param and context is not None:
            kwargs[self.context_param] = context
        token = _current.set(context)
        try:
            if self.is_async:
                return asyncio.run(_call_async(self.fn, kwargs, context))
            result = self.fn(**kwargs)
            if inspect.isawaitable(result):
                return asyncio.run(_await(result))
            return result
        finally:
            _current.reset(token)


async def _call_async(fn: Callable[..., Any], kwargs: dict[str, Any], context: ToolContext | None) -> Any:
    _current.set(context)
    return await fn(**kwargs)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None) -> Any:
    """Make a :class:`Tool` explicitly (plain functions passed to ``Agent(tools=[...])`` work as they are)::

    @tool(name="get_weather", description="Current weather for a city")
    def weather(city: str) -> str: ...
    """
    if fn is None:
        return lambda f: Tool(f, name=name, description=description)
    return Tool(fn, name=name, description=description)


def as_tool(obj: Any) -> Tool:
    return obj if isinstance(obj, Tool) else Tool(obj)


def to_jsonable(value: Any) -> Any:
    """A tool's return value as JSON (Pydantic models, dataclasses, enums, sets handled; else str())."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


__all__ = ["Tool", "ToolContext", "as_tool", "current_tool_context", "parse_docstring", "to_jsonable", "tool"]
