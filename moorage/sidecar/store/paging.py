"""The paging cursor over instances: ``(time, instance id)`` as one opaque string.

Every store orders instances by ``(created_at, id)`` or ``(completed_at, id)`` and pages strictly after such a pair
(``StoreTx.query_instances``); QueryInstances, ListInstanceIds and the dashboard hand the pair to clients as this
token and read it back."""

from __future__ import annotations


def page_token(t: float, instance_id: str) -> str:
    """The cursor after ``(t, instance_id)``."""
    return f"{t!r}|{instance_id}"


def parse_page_token(token: str) -> tuple[float, str] | None:
    """The pair a token names; ``None`` for the first page (empty or ``"0"``); ValueError if malformed."""
    if not token or token == "0":
        return None
    t, sep, instance_id = token.partition("|")
    try:
        if not sep:
            raise ValueError
        return float(t), instance_id
    except ValueError:
        raise ValueError(f"malformed continuation token {token!r}") from None
