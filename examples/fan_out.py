"""Fan-out / fan-in: the same question goes to several agents in parallel, then a summarizer combines them."""

from __future__ import annotations

import sys

from _common import model_from_env, parse_args, run_example

from moorage import Agent, AgentClient, AgentWorker

PANEL = {
    "OptimistAgent": "You see the upside of every plan. Answer in two sentences.",
    "SkepticAgent": "You look for risks and weaknesses. Answer in two sentences.",
    "EconomistAgent": "You weigh costs and benefits in numbers. Answer in two sentences.",
}


def build(worker: AgentWorker) -> None:
    model = model_from_env()
    for name, instructions in PANEL.items():
        worker.add_agent(Agent(name=name, instructions=instructions, model=model))
    worker.add_agent(Agent(name="SummarizerAgent", model=model,
                           instructions="Combine the panel's opinions into one balanced recommendation."))

    @worker.orchestration
    def panel_review(ctx, question: str):
        tasks = [ctx.get_agent(name).run(question) for name in PANEL]
        answers = yield ctx.when_all(tasks)
        opinions = "\n".join(f"- {name}: {a.text}" for name, a in zip(PANEL, answers))
        summary = yield ctx.get_agent("SummarizerAgent").run(
            f"Question: {question}\nOpinions:\n{opinions}\nGive one recommendation.")
        return {"opinions": {name: a.text for name, a in zip(PANEL, answers)}, "summary": summary.text}


def scenario(client: AgentClient) -> None:
    question = "Should our city replace its diesel buses with electric ones next year?"
    instance_id = client.start_orchestration("panel_review", question)
    state = client.wait_for_orchestration(instance_id, timeout=120)
    state.raise_if_failed()
    result = state.get_output()
    print(f"Question: {question}\n")
    for name, text in result["opinions"].items():
        print(f"{name}: {text}\n")
    print(f"Summary: {result['summary']}")


if __name__ == "__main__":
    sys.exit(run_example(parse_args(__doc__ or ""), build, scenario))
