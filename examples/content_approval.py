"""Content approval with a human in the loop: a writer agent drafts a post, the orchestration waits for an
``approval`` event raced against a durable timer (its custom status says what it waits for), publishes on
approval, revises with the reviewer's feedback on rejection, and gives up on timeout. While it waits, no worker
needs to run at all: stop them, raise the event days later, and it resumes with its full context.

    python examples/content_approval.py                         # auto-approve after showing the draft
    python examples/content_approval.py --decision reject       # one round of feedback, then approve
    python examples/content_approval.py --decision none --timeout-seconds 3   # nobody answers: timeout
    python examples/content_approval.py --decision ask          # you type the decision
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from _common import model_from_env, parse_args, run_example

from moorage import Agent, AgentClient, AgentWorker

MAX_REVISIONS = 3


def build(worker: AgentWorker) -> None:
    worker.add_agent(Agent(name="WriterAgent", model=model_from_env(),
                           instructions="You write engaging, accurate social media posts of at most 60 words."))

    @worker.activity
    def publish(ctx, post: str) -> str:
        return f"published ({len(post)} characters)"

    @worker.orchestration
    def content_approval(ctx, request: dict):
        writer = ctx.get_agent("WriterAgent")
        session = writer.new_session()
        draft = yield writer.run(f"Write a post about: {request['topic']}", session=session)
        for revision in range(MAX_REVISIONS + 1):
            ctx.set_custom_status({"state": "awaiting_approval", "revision": revision, "draft": draft.text,
                                   "event": "approval", "timeoutSeconds": request["timeout_seconds"]})
            approval = ctx.wait_for_external_event("approval")
            timeout = ctx.create_timer(timedelta(seconds=request["timeout_seconds"]))
            winner = yield ctx.when_any([approval, timeout])
            if winner is timeout:
                ctx.set_custom_status({"state": "timed_out", "draft": draft.text})
                return {"status": "timed_out", "draft": draft.text, "revisions": revision}
            timeout.cancel()  # the reviewer answered: the timer no longer matters
            decision = approval.get_result() or {}
            if decision.get("approved"):
                ctx.set_custom_status({"state": "publishing", "draft": draft.text})
                outcome = yield ctx.call_activity("publish", input=draft.text)
                ctx.set_custom_status({"state": "published"})
                return {"status": "published", "post": draft.text, "revisions": revision, "outcome": outcome}
            ctx.set_custom_status({"state": "revising", "feedback": decision.get("feedback", "")})
            draft = yield writer.run(f"Revise the post. Reviewer feedback: {decision.get('feedback', '')}",
                                     session=session)
        return {"status": "rejected", "draft": draft.text, "revisions": MAX_REVISIONS}


def add_args(parser) -> None:
    parser.add_argument("--topic", default="our new harbour-side cafe opening on Saturday")
    parser.add_argument("--decision", choices=["approve", "reject", "none", "ask"], default="approve",
                        help="how the (simulated) reviewer answers; 'none' lets the approval time out")
    parser.add_argument("--timeout-seconds", type=float, default=24 * 3600)


def wait_for_status(client: AgentClient, instance_id: str, done, timeout: float = 120) -> dict:
    """Poll the custom status until ``done(status)`` or the orchestration ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.get_orchestration(instance_id)
        if st is not None:
            status = st.get_custom_status() or {}
            if done(status) or st.runtime_status.name in ("COMPLETED", "FAILED", "TERMINATED"):
                return status
        time.sleep(0.05)
    raise TimeoutError(f"orchestration {instance_id} did not get there in {timeout}s")


def make_scenario(args):
    def scenario(client: AgentClient) -> None:
        instance_id = client.start_orchestration(
            "content_approval", {"topic": args.topic, "timeout_seconds": args.timeout_seconds})
        print(f"Started content approval {instance_id}")
        rejected_once = False
        answered_revision = -1
        while True:
            status = wait_for_status(client, instance_id, lambda s: s.get("state") in ("timed_out", "published")
                                     or (s.get("state") == "awaiting_approval"
                                         and s.get("revision", -1) > answered_revision))
            if status.get("state") != "awaiting_approval":
                break
            print(f"\nDraft (revision {status['revision']}), awaiting approval:\n  {status['draft']}")
            if args.decision == "none":
                print(f"No reviewer answers; waiting for the {args.timeout_seconds:g}s timeout...")
                break
            if args.decision == "ask":
                answer = input("Approve? [y/N/feedback]: ").strip()
                decision = {"approved": answer.lower() in ("y", "yes")}
                if not decision["approved"]:
                    decision["feedback"] = answer or "make it punchier"
            elif args.decision == "reject" and not rejected_once:
                decision = {"approved": False, "feedback": "Mention the free coffee for the first 50 guests."}
                rejected_once = True
            else:
                decision = {"approved": True}
            print(f"Reviewer: {decision}")
            answered_revision = status["revision"]
            client.raise_event(instance_id, "approval", decision)
            if decision["approved"]:
                break
        state = client.wait_for_orchestration(instance_id, timeout=max(120, args.timeout_seconds + 60))
        state.raise_if_failed()
        result = state.get_output()
        print(f"\nResult: {result['status']} after {result['revisions']} revision(s)")
        if result["status"] == "published":
            print(f"  {result['outcome']}: {result['post']}")

    return scenario


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "", add_args)
    sys.exit(run_example(arguments, build, make_scenario(arguments)))
