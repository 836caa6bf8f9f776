"""Storage behind the sidecar: one interface (`base`), one module per backend."""

from moorage.sidecar.store.base import (
    ActivityRow,
    Change,
    EntityRow,
    InstanceQuery,
    InstanceRow,
    LockRequest,
    Store,
    StoreTx,
    open_store,
)
from moorage.sidecar.store.paging import page_token, parse_page_token

__all__ = [
    "ActivityRow",
    "Change",
    "EntityRow",
    "InstanceQuery",
    "InstanceRow",
    "LockRequest",
    "Store",
    "StoreTx",
    "open_store",
    "page_token",
    "parse_page_token",
]
