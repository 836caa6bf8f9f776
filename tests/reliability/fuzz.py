"""``make fuzz``: the fuzzing properties of :mod:`fuzzing` against one real stack, as a program and as the short
form ``tests/reliability/test_fuzz.py`` runs.

    FUZZ_EXAMPLES=500 FUZZ_SEED=1 FUZZ_STORE=postgresql python -m tests.reliability.fuzz

Prints, per property, the inputs tried and the status codes answered (the figures docs/reliability.md quotes).
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, "", "tests.reliability"):  # run as a module: the kit lives in tests/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

try:
    from . import fuzzing as fz  # type: ignore[no-redef]
except ImportError:  # imported by pytest as a top-level module
    import fuzzing as fz  # type: ignore[no-redef]

import durabletask.internal.orchestrator_service_pb2 as pb
from kit import SidecarProcess, free_port, wait_until

# The work-item property's own hub: no real worker competes for its work items.
FUZZ_HUB = "fuzz"


class FuzzStack:
    """A sidecar with its gateway HTTP API and its dashboard (actions on), plus the gateway test app's worker."""

    def __init__(self, workdir: Path, store: str = "sqlite") -> None:
        self.http_port = free_port()
        self.dashboard_port = free_port()
        store_url, store_env = None, None
        if store == "postgresql":  # a database of its own on the kit's PostgreSQL server (a real one, on a free port)
            from kit.postgres import shared_server

            server = shared_server()
            store_url, store_env = server.create_database(), server.env
        elif store != "sqlite":
            raise ValueError(f"store must be 'sqlite' or 'postgresql', not {store!r}")
        self.sidecar = SidecarProcess(
            workdir,
            lease_seconds=2,
            task_hubs=["default", FUZZ_HUB],
            store=store_url,
            env=store_env,
            extra_args=[
                "--http-port",
                str(self.http_port),
                "--dashboard-port",
                str(self.dashboard_port),
                "--dashboard-actions",
                "--log-level",
                "warning",
            ],
        )
        self.worker: Any = None
        self.channel: grpc.Channel | None = None

    def start(self) -> FuzzStack:
        self.sidecar.start()
        wait_until(
            lambda: fz.http_send(self.http_port, "GET", "/healthz", None, None, 2).status == 200,
            timeout=30,
            transient=(OSError,),
        )
        from kit.gateway_app import AppWorker

        self.worker = AppWorker(self.sidecar.port).start()
        self.channel = grpc.insecure_channel(
            self.sidecar.address,
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
        )
        self.watch = fz.LogWatch(self.sidecar.stderr_path)
        return self

    def assert_healthy(self, what: str) -> None:
        assert self.sidecar.is_running(), f"sidecar died after {what}:\n{self.sidecar.stderr_tail()}"
        tb = self.watch.new_tracebacks()
        assert not tb, f"traceback in the sidecar's log after {what}:\n{tb[-3000:]}"

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.worker is not None:
            self.worker.stop()
        self.sidecar.stop()


Tally = collections.Counter[str]


def _run(prop: Callable[..., None], examples: int, seed: int) -> None:
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )(hseed(seed)(prop))()


def fuzz_grpc_messages(stack: FuzzStack, examples: int, seed: int, tally: Tally) -> None:
    """Every RPC with a hostile but well-formed request message, on a hostile hub name."""
    assert stack.channel is not None

    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(fz.METHODS))
        msg = data.draw(fz.messages(method.input_type))
        hub = data.draw(st.sampled_from(fz.HUBS))
        out = fz.call_raw(stack.channel, method, msg.SerializeToString(), hub)
        tally[f"{method.name}:{out.code.name}"] += 1
        fz.check_outcome(method.name, out, raw=False)
        stack.assert_healthy(f"{method.name}({msg!s:.500})")

    _run(prop, examples, seed)


def fuzz_grpc_bytes(stack: FuzzStack, examples: int, seed: int, tally: Tally) -> None:
    """Every RPC with raw bytes as its request (most do not parse; some parse into odd messages)."""
    assert stack.channel is not None

    @given(method=st.sampled_from(fz.METHODS), payload=st.binary(max_size=300))
    def prop(method: Any, payload: bytes) -> None:
        out = fz.call_raw(stack.channel, method, payload, "default")
        tally[f"{method.name}:{out.code.name}"] += 1
        fz.check_outcome(method.name, out, raw=True)
        stack.assert_healthy(f"{method.name}(raw {payload!r:.300})")

    _run(prop, examples, seed)


def fuzz_work_items(stack: FuzzStack, examples: int, seed: int, tally: Tally) -> None:
    """Real work items (an orchestration of a name no worker hosts, so only this stream gets it; its activities;
    entity batches), each completed with a random response carrying the real token and ids."""
    assert stack.channel is not None
    stream = fz.WorkItemStream(stack.channel, FUZZ_HUB)
    start = stack.channel.unary_unary(
        "/TaskHubSidecarService/StartInstance",
        request_serializer=pb.CreateInstanceRequest.SerializeToString,
        response_deserializer=pb.CreateInstanceResponse.FromString,
    )
    methods = {m.name: m for m in fz.METHODS}
    n = [0]
    try:
        # Everything random is drawn up front (the items that arrive depend on the sidecar, which hypothesis must
        # not see as the strategy behaving differently); the real ids and tokens are set on copies afterwards.
        kinds = [
            (d, fz.plausible_actions() if d is pb.OrchestratorResponse.DESCRIPTOR else None)
            for d in (
                pb.OrchestratorResponse.DESCRIPTOR,
                pb.ActivityResponse.DESCRIPTOR,
                pb.EntityBatchResult.DESCRIPTOR,
            )
        ]
        templates = st.tuples(
            *[
                st.lists(st.tuples(fz.messages(d), a if a is not None else st.none()), min_size=6, max_size=6)
                for d, a in kinds
            ]
        )

        @given(drawn=templates)
        def prop(drawn: tuple[list[tuple[Any, Any]], ...]) -> None:
            n[0] += 1
            pools = {d.full_name: list(pool) for (d, _a), pool in zip(kinds, drawn, strict=True)}
            start(
                pb.CreateInstanceRequest(instanceId=f"fuzz-wi-{seed}-{n[0]}", name="fuzz_orchestrator"),
                metadata=[("taskhub", FUZZ_HUB)],
                timeout=10,
            )
            for _round in range(4):
                for item in stream.drain(0.4 if _round == 0 else 0.15):
                    spec = fz.completion_for(item)
                    if spec is None:
                        continue
                    name, desc, fixed = spec
                    pool = pools[desc.full_name]
                    template, actions = pool.pop() if pool else (message_for(desc), None)
                    msg = type(template)()
                    msg.CopyFrom(template)
                    for k, v in fixed.items():
                        if k == "actions":
                            if actions is not None:
                                del msg.actions[:]
                                msg.actions.extend(actions)
                        else:
                            setattr(msg, k, v)
                    out = fz.call_raw(stack.channel, methods[name], msg.SerializeToString(), FUZZ_HUB)
                    tally[f"{name}:{out.code.name}"] += 1
                    fz.check_outcome(name, out, raw=False)
                    stack.assert_healthy(f"{name}({msg!s:.800})")
            assert stream.error is None, f"work-item stream broke: {stream.error!r}"

        _run(prop, examples, seed)
    finally:
        stream.close()


def fuzz_http(stack: FuzzStack, examples: int, seed: int, tally: Tally) -> None:
    """Every gateway and dashboard route: bad JSON, deep nesting, huge bodies, odd unicode, path tricks."""
    targets = [
        ("gateway", stack.http_port, fz.GATEWAY_ROUTES),
        ("dashboard", stack.dashboard_port, fz.DASHBOARD_ROUTES),
    ]

    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        label, port, routes = data.draw(st.sampled_from(targets))
        method, path, body, ctype = data.draw(fz.http_requests(routes))
        ans = fz.http_send(port, method, path, body, ctype)
        tally[f"{label}:{ans.status}"] += 1
        fz.check_http(method, path, ans)
        stack.assert_healthy(f"{label} {method} {path[:200]}")

    _run(prop, examples, seed)


def message_for(desc: Any) -> Any:
    return fz.message_class(desc)()


PROPERTIES = [fuzz_grpc_messages, fuzz_grpc_bytes, fuzz_work_items, fuzz_http]


def main() -> int:
    examples = int(os.environ.get("FUZZ_EXAMPLES", "300"))
    seed = int(os.environ.get("FUZZ_SEED", "20261201"))
    store = os.environ.get("FUZZ_STORE", "sqlite")
    print(f"fuzz: FUZZ_EXAMPLES={examples} FUZZ_SEED={seed} FUZZ_STORE={store}", flush=True)
    with tempfile.TemporaryDirectory(prefix="moorage-fuzz-") as tmp:
        stack = FuzzStack(Path(tmp), store=store).start()
        try:
            for prop in PROPERTIES:
                tally: Tally = collections.Counter()
                t0 = time.monotonic()
                prop(stack, examples, seed, tally)
                print(f"{prop.__name__}: {sum(tally.values())} inputs in {time.monotonic() - t0:.1f}s", flush=True)
                for key, count in sorted(tally.items()):
                    print(f"    {key}: {count}")
        finally:
            stack.stop()
    print("fuzz: no defect found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
