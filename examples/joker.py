"""Single agent, multi-turn: the Joker keeps the conversation in its session (entity ``dafx-joker``)."""

from __future__ import annotations

import sys

from _common import model_from_env, parse_args, run_example

from moorage import Agent, AgentClient, AgentWorker


def joker_agent() -> Agent:
    return Agent(name="Joker", instructions="You are good at telling jokes.", model=model_from_env())


def build(worker: AgentWorker) -> None:
    worker.add_agent(joker_agent())


def scenario(client: AgentClient) -> None:
    joker = client.get_agent("Joker")
    session = joker.new_session()
    for prompt in ("Tell me a joke about a pirate.",
                   "Now explain why that joke is funny.",
                   "Give me a shorter one on the same theme."):
        print(f"User:  {prompt}")
        response = joker.run(prompt, session=session)
        print(f"Joker: {response.text}\n")
    info = client.get_session("Joker", session)
    print(f"Session {session.session_id}: {info.turns if info else 0} turns stored.")


if __name__ == "__main__":
    sys.exit(run_example(parse_args(__doc__ or ""), build, scenario))
