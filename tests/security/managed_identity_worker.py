"""A Moorage agent worker and client configured only by the connection string, as in Azure Container Apps:
``Authentication=ManagedIdentity;ClientID=...``. Prints one JSON line with the turn's answer."""

from __future__ import annotations

import json
import logging
import sys

from moorage.agents import Agent, AgentClient, AgentWorker, OfflineChatModel


def main() -> int:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    connection_string = sys.argv[1]
    worker = AgentWorker(
        agents=[Agent(name="Helper", instructions="Be brief.", model=OfflineChatModel())],
        connection_string=connection_string,
    )
    worker.start()
    try:
        with AgentClient(connection_string) as client:
            agent = client.get_agent("Helper")
            response = agent.run("Hello from a managed identity", session=agent.new_session(), timeout=90)
            print(json.dumps({"text": response.text}), flush=True)
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
