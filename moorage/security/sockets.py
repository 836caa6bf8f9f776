"""A Unix socket only this process (its user) can reach: the embedded gateway's way into its own sidecar when
the public port needs TLS and a token."""

from __future__ import annotations

import os
import shutil
import tempfile


class PrivateSocket:
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="moorage-")  # mode 0700
        self.path = os.path.join(self.directory, "grpc.sock")

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


__all__ = ["PrivateSocket"]
