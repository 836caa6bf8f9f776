"""Multi-agent routing: a triage agent classifies each question (structured output) and an orchestration hands it
to the matching specialist agent."""

from __future__ import annotations

import sys
from typing import Literal

from _common import model_from_env, parse_args, run_example
from pydantic import BaseModel

from moorage import Agent, AgentClient, AgentWorker


class Route(BaseModel):
    department: Literal["billing", "technical", "general"]
    reason: str


SPECIALISTS = {
    "billing": "BillingAgent",
    "technical": "TechSupportAgent",
    "general": "GeneralAgent",
}


def build(worker: AgentWorker) -> None:
    model = model_from_env()
    worker.add_agent(Agent(
        name="TriageAgent", model=model,
        instructions="Classify the customer's question as billing, technical or general. Answer in JSON."))
    worker.add_agent(Agent(name="BillingAgent", model=model,
                           instructions="You answer billing questions: invoices, refunds, payment methods."))
    worker.add_agent(Agent(name="TechSupportAgent", model=model,
                           instructions="You solve technical problems step by step."))
    worker.add_agent(Agent(name="GeneralAgent", model=model,
                           instructions="You answer general questions about the company politely."))

    @worker.orchestration
    def route_question(ctx, question: str):
        route = yield ctx.get_agent("TriageAgent").run(question, response_schema=Route)
        specialist = SPECIALISTS[route.value.department]
        ctx.set_custom_status({"routedTo": specialist})
        answer = yield ctx.get_agent(specialist).run(question)
        return {"department": route.value.department, "agent": specialist, "reason": route.value.reason,
                "answer": answer.text}


def scenario(client: AgentClient) -> None:
    for question in ("I was charged twice for my subscription this month.",
                     "The app crashes when I upload a photo."):
        instance_id = client.start_orchestration("route_question", question)
        state = client.wait_for_orchestration(instance_id, timeout=120)
        state.raise_if_failed()
        result = state.get_output()
        print(f"Question: {question}")
        print(f"  routed to {result['agent']} ({result['department']}: {result['reason']})")
        print(f"  answer: {result['answer']}\n")


if __name__ == "__main__":
    sys.exit(run_example(parse_args(__doc__ or ""), build, scenario))
