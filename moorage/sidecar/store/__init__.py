"""Storage behind the sidecar: one interface (`base`), one module per backend."""

from moorage.sidecar.store.base import (
    ActivityRow,
    EntityRow,
    InstanceQuery,
    InstanceRow,
    LockRequest,
    Store,
    StoreTx,
    open_store,
)

__all__ = [
    "ActivityRow", "EntityRow", "InstanceQuery", "InstanceRow", "LockRequest", "Store", "StoreTx", "open_store",
]
