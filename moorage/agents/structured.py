"""Structured output: response schemas as Pydantic models or JSON Schema dicts, normalised, validated, typed.

On the wire (run requests, orchestration inputs, activity inputs) a response format is a plain JSON object:

    {"type": "json_schema", "name": "SpamResult", "schema": {...}, "strict": false, "model": "pkg.mod:SpamResult"}
    {"type": "json_object"}

``model`` (optional) names the Pydantic class so that a process that can import it returns instances of it.
Accepted inputs (:func:`normalize_response_format`): a Pydantic model class, a JSON Schema dict, OpenAI's
``{"type": "json_schema", "json_schema": {...}}`` / ``{"type": "json_object"}``, and Agent Framework's
serialised marker ``{"__response_schema_type__": "pydantic_model", "module": ..., "qualname": ...}``.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any

from pydantic import BaseModel

ResponseFormat = dict[str, Any]


class StructuredOutputError(ValueError):
    """The model's reply is not JSON that matches the requested schema."""


def _is_model_class(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseModel)


def _safe_name(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", name or "")[:64]
    return name or "response"


def model_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def import_model(path: str | None) -> type[BaseModel] | None:
    """``module:qualname`` -> the Pydantic class, or None when it is not available here.

    Only modules this process has already imported are looked at: the name comes from a request, and a request
    must not make a worker import arbitrary code. (A worker that hosts the orchestration or code that uses the
    model has imported it; otherwise the reply is still required to be JSON matching the schema sent along.)"""
    if not path or ":" not in path:
        return None
    module_name, qualname = path.split(":", 1)
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        return None
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    return obj if _is_model_class(obj) else None


def normalize_response_format(value: Any) -> ResponseFormat | None:
    """Any accepted response format -> the wire form (or None for plain text)."""
    if value is None:
        return None
    if _is_model_class(value):
        return {
            "type": "json_schema",
            "name": _safe_name(value.__name__),
            "schema": value.model_json_schema(),
            "strict": False,
            "model": model_path(value),
        }
    if isinstance(value, str):
        if value in ("text", ""):
            return None
        if value in ("json", "json_object"):
            return {"type": "json_object"}
        raise ValueError(f"unknown response format {value!r}; use 'text', 'json', a Pydantic model or a JSON Schema")
    if not isinstance(value, dict):
        raise TypeError(
            f"response_schema must be a Pydantic model class or a JSON Schema dict, not {type(value).__name__}"
        )
    if value.get("__response_schema_type__") == "pydantic_model":  # Agent Framework's marker
        path = f"{value.get('module')}:{value.get('qualname')}"
        cls = import_model(path)
        if cls is None:
            # The class is not importable in this process: still ask for JSON, validate what we can.
            return {"type": "json_object", "model": path}
        return normalize_response_format(cls)
    kind = value.get("type")
    if kind == "json_schema" and "schema" in value and "json_schema" not in value:
        # already normalised
        out = dict(value)
        out["name"] = _safe_name(str(out.get("name") or "response"))
        out.setdefault("strict", False)
        return out
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        js = value["json_schema"]
        if not isinstance(js.get("schema"), dict):
            raise ValueError("response_format.json_schema.schema must be a JSON Schema object")
        return {
            "type": "json_schema",
            "name": _safe_name(str(js.get("name") or "response")),
            "schema": js["schema"],
            "strict": bool(js.get("strict", False)),
        }
    if kind == "json_object" and len(value) == 1:
        return {"type": "json_object"}
    if kind == "text" and len(value) == 1:
        return None
    # A bare JSON Schema.
    _check_schema(value)
    return {
        "type": "json_schema",
        "name": _safe_name(str(value.get("title") or "response")),
        "schema": value,
        "strict": False,
    }


def _check_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"response schema is not a valid JSON Schema: {exc.message}") from exc


def openai_response_format(rf: ResponseFormat | None) -> dict[str, Any] | None:
    """The ``response_format`` argument for the Chat Completions API."""
    if rf is None:
        return None
    if rf.get("type") == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": rf["name"], "schema": rf["schema"], "strict": bool(rf.get("strict"))},
        }
    return {"type": "json_object"}


_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?```\s*$", re.S)


def parse_json_reply(text: str) -> Any:
    """The JSON value in a model reply (tolerates a Markdown code fence around it)."""
    m = _FENCE.match(text or "")
    body = m.group(1) if m else (text or "")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        # Some models wrap the object in prose; take the outermost {...} if there is one.
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start : end + 1])
            except json.JSONDecodeError:
                pass
        raise StructuredOutputError(f"the reply is not valid JSON ({exc.msg} at position {exc.pos})") from None


def validate_reply(text: str, rf: ResponseFormat) -> Any:
    """Parse and validate a reply against the response format; return the JSON value (StructuredOutputError)."""
    value = parse_json_reply(text)
    schema = rf.get("schema") if rf.get("type") == "json_schema" else None
    if schema is not None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            err = errors[0]
            where = "/".join(str(p) for p in err.path) or "(root)"
            raise StructuredOutputError(f"the reply does not match the schema at {where}: {err.message}")
    cls_model = import_model(rf.get("model"))
    if cls_model is not None:
        try:
            cls_model.model_validate(value)
        except Exception as exc:
            raise StructuredOutputError(f"the reply does not validate as {cls_model.__name__}: {exc}") from None
    return value


def to_typed(value: Any, schema: Any) -> Any:
    """The JSON value as the caller's type: an instance of a Pydantic class, else the JSON value itself."""
    if value is None:
        return None
    if _is_model_class(schema):
        return schema.model_validate(value)
    if isinstance(schema, dict) and schema.get("model"):
        cls = import_model(schema["model"])
        if cls is not None:
            return cls.model_validate(value)
    return value


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A small deterministic instance of a JSON Schema (used by the offline model)."""
    root = root if root is not None else schema
    if depth > 8:
        return None
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/"):
            node: Any = root
            for part in ref[2:].split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            return example_for_schema(node, root, depth + 1)
        return None
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example_for_schema(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties", {})
        return {name: example_for_schema(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        n = max(int(schema.get("minItems", 0)), 0)
        item = example_for_schema(schema.get("items", {}), root, depth + 1)
        return [item for _ in range(n)]
    if kind == "string":
        return "offline" if int(schema.get("minLength", 0)) <= 7 else "o" * int(schema["minLength"])
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return None
