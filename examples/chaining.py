"""Orchestration chaining: a writer drafts and refines in one session (it remembers its draft), then an editor
agent polishes the result. Each step is a checkpoint: a crash between steps repeats none of the finished ones."""

from __future__ import annotations

import sys

from _common import model_from_env, parse_args, run_example

from moorage import Agent, AgentClient, AgentWorker


def build(worker: AgentWorker) -> None:
    model = model_from_env()
    worker.add_agent(Agent(name="WriterAgent", model=model,
                           instructions="You write short, vivid marketing copy."))
    worker.add_agent(Agent(name="EditorAgent", model=model,
                           instructions="You fix grammar and tighten prose. Return only the edited text."))

    @worker.orchestration
    def write_and_edit(ctx, topic: str):
        writer = ctx.get_agent("WriterAgent")
        session = writer.new_session()  # replay-safe: the same id on every replay
        draft = yield writer.run(f"Write a three-sentence product blurb about {topic}.", session=session)
        shorter = yield writer.run("Make your blurb shorter and punchier.", session=session)
        edited = yield ctx.get_agent("EditorAgent").run(f"Edit this text:\n\n{shorter.text}")
        return {"draft": draft.text, "shorter": shorter.text, "final": edited.text}


def scenario(client: AgentClient) -> None:
    instance_id = client.start_orchestration("write_and_edit", "a solar-powered kayak")
    state = client.wait_for_orchestration(instance_id, timeout=120)
    state.raise_if_failed()
    result = state.get_output()
    print(f"Draft:   {result['draft']}\n")
    print(f"Shorter: {result['shorter']}\n")
    print(f"Final:   {result['final']}")


if __name__ == "__main__":
    sys.exit(run_example(parse_args(__doc__ or ""), build, scenario))
