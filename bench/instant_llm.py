"""An OpenAI-compatible server that answers every chat completion at once with "ok", as a process (the tests'
``ScriptedLLM``, tests/agents/agent_testkit.py, with a fixed responder), so that its CPU is counted apart.

    python -m bench.instant_llm      # prints "instant OpenAI-compatible server on http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

BANNER = "instant OpenAI-compatible server on "


class _Discard(list[object]):
    """A request log that keeps nothing (a long run must not hold every request body)."""

    def append(self, item: object) -> None:
        pass


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "agents"))
    from agent_testkit import ScriptedLLM  # type: ignore[import-not-found]

    llm = ScriptedLLM()  # a free port of its own
    llm.responder = lambda body: {"text": "ok"}
    llm.requests = _Discard()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"{BANNER}{llm.base_url}", flush=True)
    stop.wait()
    llm.close()


if __name__ == "__main__":
    main()
