"""A worker module for the drain test: an orchestration whose one activity takes a few seconds and leaves marks.

``moorage worker drain_app:worker`` loads it; MARKS names the file the activity appends "start"/"done" to."""

from __future__ import annotations

import os
import time
from typing import Any

from moorage import AgentWorker

worker = AgentWorker(gateway=False)


@worker.activity
def slow_step(ctx: Any, seconds: float) -> str:
    marks = os.environ["MARKS"]
    with open(marks, "a") as f:
        f.write(f"start {ctx.task_id}\n")
    time.sleep(seconds)
    with open(marks, "a") as f:
        f.write(f"done {ctx.task_id}\n")
    return "slept"


@worker.orchestration
def slow(ctx: Any, seconds: float):
    result = yield ctx.call_activity("slow_step", input=seconds)
    return result
