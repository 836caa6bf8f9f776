"""A worker-and-client process written exactly as for Azure DTS: the official ``durabletask.azuremanaged``
``DurableTaskSchedulerWorker`` / ``DurableTaskSchedulerClient`` with ``token_credential=`` (a TokenCredential that
mints JWTs like Entra ID) and ``secure_channel=True``; then a Moorage agent turn over the same sidecar. Prints one
JSON line of results. The CA comes from ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``, as with any private CA.

    python sdk_e2e.py PORT KEY_FILE [--audience AUD] [--only-client]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seckit import JwtCredential, load_key, mint


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("key_file")
    parser.add_argument("--audience", default=None)
    parser.add_argument("--only-client", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )

    import grpc
    from durabletask import task
    from durabletask.azuremanaged.client import DurableTaskSchedulerClient
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    key, issuer = load_key(Path(args.key_file))
    token_kwargs = {"audience": args.audience} if args.audience else {}
    credential = JwtCredential(key, issuer, **token_kwargs)
    address = f"localhost:{args.port}"
    out: dict[str, object] = {}

    if args.only_client:
        client = DurableTaskSchedulerClient(
            host_address=address, taskhub="default", token_credential=credential, secure_channel=True
        )
        try:
            client.get_orchestration_state("whatever")
            out["client"] = "ok"
        except grpc.RpcError as exc:
            out["client"] = {"code": exc.code().name, "details": exc.details()}
        print(json.dumps(out), flush=True)
        return 0

    def greet(ctx: task.ActivityContext, name: str) -> str:
        return f"Hello, {name}!"

    def chain(ctx: task.OrchestrationContext, names: list[str]):
        results = []
        for name in names:
            results.append((yield ctx.call_activity(greet, input=name)))
        return results

    worker = DurableTaskSchedulerWorker(
        host_address=address, taskhub="default", token_credential=credential, secure_channel=True
    )
    worker.add_orchestrator(chain)
    worker.add_activity(greet)
    worker.start()
    client = DurableTaskSchedulerClient(
        host_address=address, taskhub="default", token_credential=credential, secure_channel=True
    )
    try:
        iid = client.schedule_new_orchestration(chain, input=["Tokyo", "Seattle", "London"])
        state = client.wait_for_orchestration_completion(iid, timeout=60)
        out["orchestration"] = {
            "status": state.runtime_status.name if state else None,
            "output": json.loads(state.serialized_output) if state else None,
        }
    finally:
        worker.stop()

    # An agent turn: the Moorage worker with the connection string (Token=<the JWT>, https endpoint) and the
    # official client with the credential under Moorage's AgentClient.
    from moorage.agents import Agent, AgentClient, AgentWorker, OfflineChatModel
    from moorage.agents.serialization import MoorageDataConverter

    jwt_token = mint(key, issuer)
    agent_worker = AgentWorker(
        agents=[Agent(name="Joker", instructions="You are good at telling jokes.", model=OfflineChatModel())],
        connection_string=f"Endpoint=https://localhost:{args.port};Authentication=None;TaskHub=default;"
        f"Token={jwt_token}",
    )
    agent_worker.start()
    try:
        sdk_client = DurableTaskSchedulerClient(
            host_address=address,
            taskhub="default",
            token_credential=credential,
            secure_channel=True,
            data_converter=MoorageDataConverter(),
        )
        with AgentClient(client=sdk_client) as agents:
            joker = agents.get_agent("Joker")
            session = joker.new_session()
            response = joker.run("Tell me a joke about pirates", session=session, timeout=90)
            out["agent"] = {"text": response.text, "session": session.session_id}
    finally:
        agent_worker.stop()
    out["scopes"] = sorted(set(credential.scopes))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
