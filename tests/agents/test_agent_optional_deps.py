"""A sidecar-only install needs no LLM client: ``openai`` is the ``moorage[openai]`` extra, ``mcp`` the
``moorage[mcp]`` one. Without them, moorage, the sidecar, the gateway's HTTP app (without ``/mcp``) and the agents
(with the offline model) import and work; OpenAIChatModel says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter in which ``import openai`` and ``import mcp`` fail as if they were not installed.
PROGRAM = textwrap.dedent("""
    import importlib.abc, sys

    class NoOpenAI(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("openai", "mcp"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoOpenAI())
    import moorage, moorage.sidecar, moorage.agents, moorage.client, moorage.gateway
    from moorage import Agent, AgentWorker, OfflineChatModel, OpenAIChatModel
    from moorage.agents.models import ModelRequest

    agent = Agent(name="Joker", instructions="Jokes.", model=OfflineChatModel())
    reply = agent.model.complete(ModelRequest(messages=[{"role": "user", "content": "hi"}]))
    assert reply.text, reply
    assert "openai" not in sys.modules

    from moorage.gateway import Gateway
    from moorage.gateway.http import create_app

    app = create_app(Gateway("Endpoint=http://127.0.0.1:9;Authentication=None;TaskHub=default"))
    paths = {getattr(r, "path", "") for r in app.routes}
    assert "/api/agents" in paths and "/mcp" not in paths, paths
    assert "mcp" not in sys.modules
    try:
        OpenAIChatModel(model="gpt-4o-mini", api_key="k")
    except ImportError as exc:
        print("ERROR:", exc)
    else:
        raise SystemExit("OpenAIChatModel was built without openai")
""")


def test_moorage_imports_and_runs_the_offline_model_without_openai() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'moorage[openai]'" in done.stdout, done.stdout
