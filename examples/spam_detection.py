"""Spam detection with structured output: one agent classifies an email (a typed ``SpamResult``), spam goes to an
activity that quarantines it, anything else gets a reply drafted by a second agent (a typed ``EmailReply``) and
sent by another activity."""

from __future__ import annotations

import sys

from _common import model_from_env, parse_args, run_example
from pydantic import BaseModel, Field

from moorage import Agent, AgentClient, AgentWorker


class SpamResult(BaseModel):
    is_spam: bool
    confidence: float = Field(ge=0, le=1)
    reason: str


class EmailReply(BaseModel):
    subject: str
    body: str


def build(worker: AgentWorker) -> None:
    model = model_from_env()
    worker.add_agent(Agent(name="SpamDetectionAgent", model=model,
                           instructions="You are an expert at detecting spam. Answer in JSON."))
    worker.add_agent(Agent(name="EmailAssistantAgent", model=model,
                           instructions="You draft short, friendly, professional email replies. Answer in JSON."))

    @worker.activity
    def handle_spam(ctx, email: dict) -> str:
        return f"Email {email['id']} quarantined"

    @worker.activity
    def send_email(ctx, reply: dict) -> str:
        return f"Reply sent: {reply['subject']}"

    @worker.orchestration
    def spam_detection(ctx, email: dict):
        spam = yield ctx.get_agent("SpamDetectionAgent").run(
            f"Analyze this email for spam:\nFrom: {email['from']}\nSubject: {email['subject']}\n\n{email['body']}",
            response_schema=SpamResult)
        if spam.value.is_spam:
            outcome = yield ctx.call_activity("handle_spam", input=email)
            return {"spam": True, "reason": spam.value.reason, "outcome": outcome}
        reply = yield ctx.get_agent("EmailAssistantAgent").run(
            f"Draft a reply to this email:\nFrom: {email['from']}\nSubject: {email['subject']}\n\n{email['body']}",
            response_schema=EmailReply)
        outcome = yield ctx.call_activity("send_email", input=reply.value)
        return {"spam": False, "reason": spam.value.reason, "reply": reply.value, "outcome": outcome}


EMAILS = [
    {"id": "e1", "from": "prize@lucky-win.example", "subject": "YOU WON $1,000,000!!!",
     "body": "Click here within 24 hours to claim your prize. Send your bank details."},
    {"id": "e2", "from": "anna@customer.example", "subject": "Meeting next week",
     "body": "Hi, could we move Tuesday's meeting to Wednesday at 10?"},
]


def scenario(client: AgentClient) -> None:
    for email in EMAILS:
        instance_id = client.start_orchestration("spam_detection", email)
        state = client.wait_for_orchestration(instance_id, timeout=120)
        state.raise_if_failed()
        result = state.get_output()
        verdict = "SPAM" if result["spam"] else "not spam"
        print(f"{email['id']} ({email['subject']}): {verdict} — {result['reason']}")
        if not result["spam"]:
            print(f"  reply subject: {result['reply']['subject']}")
            print(f"  reply body: {result['reply']['body']}")
        print(f"  {result['outcome']}")


if __name__ == "__main__":
    sys.exit(run_example(parse_args(__doc__ or ""), build, scenario))
