"""A real sidecar with its dashboard, a real worker, and a little of everything for the dashboard to show.

Used by the dashboard's API tests, its browser test and ``make screenshots``: ``Stack`` starts
``python -m moorage sidecar --port P --dashboard-port Q`` (free ports, own SQLite file) and kills its process group
at the end; ``Scenario`` starts one ``AgentWorker`` hosting plain orchestrations, activities, an entity and a
``Weather`` agent whose scripted model calls a tool, so sessions show tool calls, usage and errors without a
network.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import kit.http
from kit import SidecarProcess, free_port, wait_until

log = logging.getLogger("dashboard.tests")


class Http(kit.http.Http):
    """The dashboard API's view of the kit's JSON client: ``status, body = http.request(...)``; every request with a
    body says it is JSON (the dashboard refuses other content types)."""

    def request(  # type: ignore[override]
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15.0,
    ) -> tuple[int, Any]:
        hdrs = {"Content-Type": "application/json"} if (raw is not None or body is not None) else {}
        hdrs.update(headers or {})
        status, _, parsed = super().request(method, path, body, raw=raw, headers=hdrs, timeout=timeout)
        return status, parsed

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        code, data = self.request(method, path, body if (body is not None or method == "GET") else {})
        expected = status or (200 if method == "GET" else (200, 201, 202))
        if (code not in expected) if isinstance(expected, tuple) else code != expected:
            raise AssertionError(f"{method} {path} -> {code}: {data}")
        return data


class Stack:
    """One sidecar process with the dashboard on a free port."""

    def __init__(self, workdir: Path, *, actions: bool = True, hubs: str = "default,other") -> None:
        self.workdir = Path(workdir)
        self.dashboard_port = free_port()
        self.actions = actions
        self.hubs = hubs
        args = ["--host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port), "--log-level", "info"]
        self.sidecar = SidecarProcess(
            self.workdir, task_hubs=hubs.split(","), extra_args=args + (["--dashboard-actions"] if actions else [])
        )
        self.port = self.sidecar.port
        self.url = f"http://127.0.0.1:{self.dashboard_port}"
        self.http = Http(self.url)
        self.connection_string = self.sidecar.connection_string

    @property
    def proc(self) -> Any:
        return self.sidecar.proc

    def start(self) -> Stack:
        self.sidecar.start()
        try:
            wait_until(
                self._dashboard_up,
                timeout=30,
                transient=(OSError,),
                message=lambda: f"dashboard not up after 30s:\n{self.log_tail()}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _dashboard_up(self) -> bool:
        if not self.sidecar.is_running():
            raise RuntimeError(f"sidecar exited with {self.sidecar.process.returncode}:\n{self.log_tail()}")
        return self.http.get("/api/info")[0] == 200

    def log_tail(self, lines: int = 60) -> str:
        return self.sidecar.stderr_tail(lines)

    def stop(self) -> None:
        self.sidecar.stop(grace=8)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- what the worker hosts -----------------------------------------------------------------------------------------

FLAKY = {"fail": True}


def greet(ctx: Any, name: str) -> str:
    time.sleep(0.05)
    return f"Hello, {name}!"


def flaky(ctx: Any, what: str) -> str:
    if FLAKY["fail"]:
        raise RuntimeError(f"payment service unavailable for {what}")
    return f"charged {what}"


def shipping(ctx: Any, order: dict) -> dict:
    time.sleep(0.1)
    return {"order": order.get("id"), "carrier": "Parcelo", "eta_days": 2}


def ship_order(ctx: Any, order: dict) -> Any:
    label = yield ctx.call_activity(shipping, input=order)
    return label


def process_order(ctx: Any, order: dict) -> Any:
    """Two activities, a timer, a sub-orchestration, then it waits for the 'approve' event."""
    a = yield ctx.call_activity(greet, input=order.get("customer", "Ada"))
    b = yield ctx.call_activity(greet, input="warehouse")
    yield ctx.create_timer(timedelta(seconds=0.3))
    label = yield ctx.call_sub_orchestrator(ship_order, input=order)
    approval = yield ctx.wait_for_external_event("approve")
    return {"greetings": [a, b], "label": label, "approval": approval}


def charge_card(ctx: Any, what: str) -> Any:
    result = yield ctx.call_activity(flaky, input=what)
    return result


def wait_for_go(ctx: Any, _: Any) -> Any:
    value = yield ctx.wait_for_external_event("go")
    return value


def counter(ctx: Any, input: Any) -> Any:
    state = ctx.get_state(int, 0)
    if ctx.operation == "add":
        state += int(input or 0)
        ctx.set_state(state)
    elif ctx.operation == "reset":
        ctx.set_state(0)
    elif ctx.operation == "delete":
        ctx.set_state(None)
    return state


def get_weather(city: str) -> dict:
    """Current weather for a city.

    Args:
        city: The city name.
    """
    return {"city": city, "forecast": "sunny", "temperatureC": 21}


class ScriptedModel:
    """Calls ``get_weather`` once per question, then answers from the tool result; fails on 'fail'; answers a
    'hello' at once (a turn its first model call finishes)."""

    def complete(self, request: Any) -> Any:
        from moorage.agents import ModelResponse

        users = [m for m in request.messages if m.get("role") == "user"]
        last = str(users[-1].get("content") or "") if users else ""
        if "fail" in last.lower():
            raise RuntimeError("the model endpoint returned 503 Service Unavailable")
        if "hello" in last.lower():
            return ModelResponse(
                text="Hello! Ask me about the weather.",
                model="scripted",
                finish_reason="stop",
                usage={"inputTokenCount": 20, "outputTokenCount": 8, "totalTokenCount": 28},
            )
        idx = max(i for i, m in enumerate(request.messages) if m.get("role") == "user")
        tool_msgs = [m for m in request.messages[idx:] if m.get("role") == "tool"]
        if not tool_msgs:
            city = last.rsplit(" ", 1)[-1].strip("?.!") or "Paris"
            return ModelResponse(
                text=None,
                tool_calls=[
                    {
                        "id": f"call_{uuid.uuid4().hex[:8]}",
                        "name": "get_weather",
                        "arguments": json.dumps({"city": city}),
                    }
                ],
                usage={"inputTokenCount": 42, "outputTokenCount": 12, "totalTokenCount": 54},
                model="scripted",
                finish_reason="tool_calls",
            )
        data = json.loads(tool_msgs[-1]["content"])
        return ModelResponse(
            text=f"It is {data['forecast']} in {data['city']}, {data['temperatureC']} °C.",
            usage={"inputTokenCount": 80, "outputTokenCount": 14, "totalTokenCount": 94},
            model="scripted",
            finish_reason="stop",
        )


class Scenario:
    """One worker (an ``AgentWorker``) serving everything above on ``stack``'s default hub, plus clients."""

    def __init__(self, stack: Stack) -> None:
        from durabletask.azuremanaged.client import DurableTaskSchedulerClient

        from moorage.agents import Agent, AgentClient, AgentWorker

        self.stack = stack
        quiet = logging.getLogger("dashboard.sdk")
        quiet.setLevel(logging.WARNING)
        self.agent = Agent(
            name="Weather",
            instructions="You answer weather questions with the get_weather tool.",
            model=ScriptedModel(),
            tools=[get_weather],
            llm_retry=None,
        )
        self.worker = AgentWorker(agents=[self.agent], connection_string=stack.connection_string, logger=quiet)
        for fn in (process_order, ship_order, charge_card, wait_for_go):
            self.worker.add_orchestrator(fn)
        for fn in (greet, flaky, shipping):
            self.worker.add_activity(fn)
        self.worker.add_entity(counter)
        self.agents = AgentClient(stack.connection_string)

        def client(hub: str) -> Any:
            return DurableTaskSchedulerClient(
                host_address=f"http://localhost:{stack.port}",
                taskhub=hub,
                token_credential=None,
                secure_channel=False,
                logger=quiet,
            )

        self.client = client("default")
        self.other = client("other")

    def start(self) -> Scenario:
        self.worker.start()
        return self

    def stop(self) -> None:
        for closer in (self.worker.stop, self.agents.close, self.client.close, self.other.close):
            try:
                closer()
            except Exception:
                log.exception("closing failed")

    def wait_status(self, instance_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> Any:
            code, body = self.stack.http.get(f"/api/orchestrations/{instance_id}")
            return body if code == 200 and body["instance"]["status"] == status else None

        return wait_until(check, timeout, message=f"{instance_id} to be {status}")

    def populate(self) -> dict[str, Any]:
        """Everything the pages show: finished, failed, waiting and scheduled instances, an entity, sessions."""
        from durabletask.entities import EntityInstanceId

        ids: dict[str, Any] = {}
        c = self.client
        ids["order"] = c.schedule_new_orchestration(
            process_order,
            input={"id": "A-1001", "customer": "Ada"},
            instance_id=f"order-{uuid.uuid4().hex[:6]}",
            tags={"team": "shop", "region": "eu"},
        )
        ids["done"] = c.schedule_new_orchestration(
            process_order,
            input={"id": "A-1000", "customer": "Grace"},
            instance_id=f"order-{uuid.uuid4().hex[:6]}",
            tags={"team": "shop"},
        )
        ids["failed"] = c.schedule_new_orchestration(
            charge_card, input="A-1002", instance_id=f"charge-{uuid.uuid4().hex[:6]}"
        )
        ids["waiting"] = c.schedule_new_orchestration(wait_for_go, instance_id=f"wait-{uuid.uuid4().hex[:6]}")
        ids["other"] = self.other.schedule_new_orchestration(
            "process_order", input={"id": "B-1"}, instance_id=f"other-{uuid.uuid4().hex[:6]}"
        )
        c.wait_for_orchestration_start(ids["done"], timeout=20)
        self.wait_status(ids["done"], "RUNNING")
        wait_until(
            lambda: any(
                i["kind"] == "suborchestration" and i["status"] == "completed"
                for i in self.stack.http.get(f"/api/orchestrations/{ids['done']}")[1]["timeline"]["items"]
            ),
            20,
            message="the sub-orchestration",
        )
        c.raise_orchestration_event(ids["done"], "approve", data={"by": "grace@example.com"})
        c.wait_for_orchestration_completion(ids["done"], timeout=20)
        c.wait_for_orchestration_completion(ids["failed"], timeout=20)
        ids["counter"] = "@counter@cart-42"
        c.signal_entity(EntityInstanceId("counter", "cart-42"), "add", input=5)
        c.signal_entity(EntityInstanceId("counter", "cart-42"), "add", input=3)
        wait_until(
            lambda: self.stack.http.get("/api/entities/@counter@cart-42")[1].get("state") == 8,
            20,
            message="the counter entity",
        )
        weather = self.agents.get_agent("Weather")
        ids["session"] = "trip-to-paris"
        weather.run("What is the weather in Paris?", session=ids["session"])
        weather.run("And in Lisbon?", session=ids["session"])
        ids["session_err"] = "broken-session"
        try:
            weather.run("Please fail now", session=ids["session_err"])
        except Exception:
            pass
        wait_until(
            lambda: (
                self.stack.http.get(f"/api/agents/weather/sessions/{ids['session_err']}")[0] == 200
                and self.stack.http.get(f"/api/agents/weather/sessions/{ids['session_err']}")[1]["status"] != "running"
            ),
            20,
            message="the failed turn",
        )
        self.wait_status(ids["order"], "RUNNING")
        return ids
