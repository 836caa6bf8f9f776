"""The SDK's JSON converter, plus Pydantic models (dumped as JSON; rebuilt when a type is asked for)."""

from __future__ import annotations

import inspect
import json
from typing import Any

from durabletask.serialization import JsonDataConverter
from pydantic import BaseModel

from .._sdk import encode_custom_object


def _default(o: Any) -> Any:
    if isinstance(o, BaseModel):
        return o.model_dump(mode="json")
    return encode_custom_object(o)


class MoorageDataConverter(JsonDataConverter):
    def serialize(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return json.dumps(value, default=_default)
        except TypeError as exc:
            raise TypeError(f"Failed to serialize object of type '{type(value).__name__}' to JSON: {exc}") from exc

    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        if target_type is not None and inspect.isclass(target_type) and issubclass(target_type, BaseModel):
            raw = super().deserialize(data, None)
            return None if raw is None else target_type.model_validate(raw)
        return super().deserialize(data, target_type)

    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        if value is not None and inspect.isclass(target_type) and issubclass(target_type, BaseModel):
            return target_type.model_validate(value)
        return super().coerce(value, target_type)

    def can_reconstruct(self, target_type: Any) -> bool:
        if inspect.isclass(target_type) and issubclass(target_type, BaseModel):
            return True
        return super().can_reconstruct(target_type)
