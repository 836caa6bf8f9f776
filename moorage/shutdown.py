"""Waiting for SIGTERM/SIGINT inside an asyncio server, shared by ``moorage sidecar`` and ``moorage gateway``."""

from __future__ import annotations

import asyncio
import signal


async def wait_for_stop_signal() -> None:
    """Return on the first SIGTERM or SIGINT, so the caller can end its streams with OK and stop cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    await stop.wait()
