"""Past weeks for a demo workspace, so its dashboard has pictures on the first visit.

`history_generate` writes closed conversations of the last `days` (a busy weekday rhythm, quieter
weekends, a trickle over the months before) with their messages dated when they happened and
the same events the services log (opened, messages by whom, assignment, a bot's FAQ answer or
hand-over, close, rating), then folds them like beat does. It writes rows directly instead of
calling the sending services: nothing of the past may leave for a provider now. Customers are
"Demo customer N" with numbers from a range no real phone has (+20 100 999 xxxx). Runs once per
workspace (it does nothing if the workspace already has analytics)."""

import random
from datetime import datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from apps.analytics.models import AgentPresence, Cycle, Event
from apps.analytics.services import events_fold_all

CATEGORIES = ("order status", "refund", "delivery", "product question")
HOURS = [1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 13, 11, 12, 13, 13, 12, 10, 8, 7, 6, 4, 2, 1]
ASKS = ("Where is my order?", "Can I change the delivery address?", "The eggs arrived broken", "Do you have mangoes?")
ANSWERS = ("Let me check that for you.", "Done! Anything else?", "Sorry about that, a refund is on its way.")


class _Story:
    """One conversation's rows, written in order with the moment each happened."""

    def __init__(self, workspace, channel, contact, start: datetime):
        from apps.conversations.models import Conversation

        self.workspace, self.channel, self.t, self.start = workspace, channel, start, start
        self.conversation = Conversation.objects.create(
            workspace=workspace, contact=contact, channel=channel, status=Conversation.Status.OPEN
        )
        self.assignee = self.team = None

    def event(self, kind: str, by: str = "", *, author=None, value=None, **data) -> None:
        Event.objects.create(
            workspace=self.workspace,
            conversation=self.conversation,
            kind=kind,
            at=self.t,
            by=by,
            author=author,
            agent=self.assignee,
            team=self.team,
            value=value,
            data=data,
        )

    def message(self, direction: str, sender_kind: str, text: str, author=None) -> None:
        from apps.conversations.models import Message

        message = Message.objects.create(
            workspace=self.workspace,
            conversation=self.conversation,
            channel=self.channel,
            direction=direction,
            sender_kind=sender_kind,
            author=author.user if author else None,
            text=text,
            state="received" if direction == "in" else "read",
        )
        Message.objects.filter(pk=message.pk).update(created_at=self.t, sent_at=self.t)
        if direction == "in":
            self.event("message_in", "contact", language=self.workspace.default_language)
        else:
            by = "agent" if author else "bot"
            self.event("message_out", by, author=author)

    def later(self, seconds: int) -> None:
        self.t += timedelta(seconds=seconds)


def _moment(rng, tz, day) -> datetime:
    hour = rng.choices(range(24), weights=HOURS)[0]
    return datetime.combine(day, time(hour, rng.randint(0, 59)), tzinfo=tz)


def _play(rng, story: _Story, agents, team_of) -> None:
    story.event("opened", "contact", source="inbound")
    story.message("in", "contact", rng.choice(ASKS))
    if rng.random() < 0.25:
        story.later(3)
        story.message("out", "bot", "I can help with that!")
        story.event("faq_answered", "bot", intent="order_status")
        if rng.random() < 0.55:
            story.later(40)
            story.event("faq_accepted", "bot", intent="order_status")
            story.later(20)
            story.event("closed", "bot", category=CATEGORIES[0])
            return
        story.later(50)
        story.event("handover", "bot")
    agent = rng.choice(agents)
    story.later(rng.randint(2, 90))
    story.assignee, story.team = agent, team_of.get(agent.pk)
    story.event("assigned", "system")
    story.later(min(int(rng.lognormvariate(3.1, 1.2)), 5400))
    story.message("out", "agent", rng.choice(ANSWERS), author=agent)
    if rng.random() < 0.6:
        story.later(rng.randint(30, 600))
        story.message("in", "contact", "Thanks! And the invoice?")
        story.later(rng.randint(20, 400))
        story.message("out", "agent", "Sent to your email.", author=agent)
    story.later(rng.randint(60, 4 * 3600))
    story.event("closed", "agent", author=agent, category=rng.choice(CATEGORIES))
    if rng.random() < 0.55:
        story.later(120)
        story.event("rated", "contact", value=rng.choices((1, 2, 3, 4, 5), weights=(4, 4, 10, 30, 52))[0])


def _close(story: _Story) -> None:
    from apps.conversations.models import Conversation

    Conversation.objects.filter(pk=story.conversation.pk).update(
        status=Conversation.Status.CLOSED,
        assignee=story.assignee,
        team=story.team,
        opened_at=story.start,
        closed_at=story.t,
        last_message_at=story.t,
    )


def history_generate(*, workspace, days: int = 28, per_day: int = 12, months: int = 6, seed: int = 9) -> int:
    """Returns how many conversations it wrote (0 when the workspace has analytics already)."""
    from apps.connectors.models import Channel
    from apps.contacts.models import Contact
    from apps.contacts.services import contact_index
    from apps.workspaces.models import Membership, Role, Team

    if Cycle.objects.filter(workspace=workspace).exists() or Event.objects.filter(workspace=workspace).exists():
        return 0
    agents = list(Membership.objects.filter(workspace=workspace, role=Role.AGENT).select_related("user"))
    channels = list(Channel.objects.filter(workspace=workspace, enabled=True).exclude(kind="custom")[:4])
    if not agents or not channels:
        return 0
    team_of = {}
    for team in Team.objects.filter(workspace=workspace).prefetch_related("members"):
        for member in team.members.all():
            team_of.setdefault(member.pk, team)
    rng, tz = random.Random(seed), workspace.tz  # noqa: S311 (made-up history, not secrets)
    today = timezone.now().astimezone(tz).date()
    moments = []
    for offset in range(days, 0, -1):
        day = today - timedelta(days=offset)
        moments += [_moment(rng, tz, day) for _n in range(per_day // 2 if day.weekday() >= 5 else per_day)]
    moments += [
        _moment(rng, tz, today - timedelta(days=offset))
        for offset in range(days + 1, days + 30 * months)
        if rng.random() < 0.2
    ]
    with transaction.atomic():
        for n, start in enumerate(sorted(moments)):
            contact = Contact(workspace=workspace, name=f"Demo customer {n + 1}", phone=f"+2010099{n:05d}")
            contact_index(contact)
            contact.save()
            story = _Story(workspace, rng.choice(channels), contact, start)
            _play(rng, story, agents, team_of)
            _close(story)
        for agent in agents:
            for offset in range(days, 0, -1):
                day = today - timedelta(days=offset)
                if day.weekday() < 5:
                    on = datetime.combine(day, time(rng.choice((8, 9))), tzinfo=tz)
                    off = on + timedelta(hours=rng.choice((7, 8, 9)))
                    AgentPresence.objects.create(workspace=workspace, membership=agent, status="online", at=on)
                    AgentPresence.objects.create(workspace=workspace, membership=agent, status="offline", at=off)
    events_fold_all()
    return len(moments)
