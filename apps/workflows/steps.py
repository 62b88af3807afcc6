"""What each kind of step does. A step is entered (`enter`), and a step that waits is then given
the customer's next message (`receive`), its timer (`timeout`) or the answer of a call it made
outside the transaction (`result`). Each returns an outcome the engine (`services.py`) applies:
go to a step, wait, call out, or end. Steps never commit, publish or call out themselves: the
engine holds the conversation's lock and does the I/O after commit."""

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from apps.workflows.templating import all_variants, lookup

# Outcomes ------------------------------------------------------------------------------------


@dataclass
class Go:
    to: str | None
    outcome: str = "done"
    detail: str = ""


@dataclass
class Wait:
    waiting: dict
    minutes: float | None = None
    outcome: str = "waiting"
    detail: str = ""


@dataclass
class Call:
    """A request to make outside the transaction (HTTP step, notification); `result` gets its answer."""

    request: dict
    timeout_seconds: float = 5
    outcome: str = "calling"
    detail: str = ""


@dataclass
class End:
    state: str
    outcome: str
    detail: str = ""
    team: str | None = None  # a hand-over's team
    text: Any = None  # a hand-over's message (localised), None for the workspace's
    routed: bool = False  # a route step already placed it (and told the customer): nothing more to do


def _branch(settings: dict, name: str, step: dict) -> str | None:
    """A named branch of a step, else its `next`; None ends the run."""
    return settings.get(name) or step.get("next") or None


# The customer's reply ------------------------------------------------------------------------


@dataclass
class Reply:
    text: str
    choice: str | None = None  # an option id: a button, a list row, a keyboard press, a numbered answer
    message_id: int | None = None
    extra: dict = field(default_factory=dict)


def reply_of(message) -> Reply:
    payload = message.payload or {}
    choice = payload.get("reply_id") if message.kind == "interactive" else None
    return Reply(text=(message.text or "").strip(), choice=choice, message_id=message.id)


NUMBER = re.compile(r"\s*(\d{1,2})[.)]?\s*")


def option_chosen(options: list[dict], reply: Reply) -> dict | None:
    """The option a reply means: its id (tapped), its number, its title in any language, or words
    close enough to its title or keywords."""
    from apps.workflows.intents import normalise
    from apps.workflows.matching import choice_match

    by_id = {str(option.get("id")): option for option in options}
    if reply.choice and reply.choice in by_id:
        return by_id[reply.choice]
    number = NUMBER.fullmatch(reply.text)
    if number and 1 <= int(number.group(1)) <= len(options):
        return options[int(number.group(1)) - 1]
    said = normalise(reply.text)
    if not said:
        return None
    for option in options:
        if said in {normalise(title) for title in all_variants(option.get("title"))}:
            return option
    phrases = [(str(option["id"]), _phrases(option)) for option in options]
    chosen = choice_match(phrases, reply.text)
    return by_id.get(chosen) if chosen else None


def _phrases(option: dict) -> list[str]:
    keywords = option.get("keywords") or []
    if isinstance(keywords, dict):
        keywords = [word for words in keywords.values() for word in words]
    return [*all_variants(option.get("title")), *[str(word) for word in keywords]]


# Typed input ---------------------------------------------------------------------------------

DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%y")


def input_clean(kind: str, text: str, *, pattern: str = "", region: str | None = None) -> str | None:
    """The value a customer typed, normalised (E.164 phone, lower-case email, ISO date), or None
    when it is not one."""
    from apps.contacts.services import normalise_email, normalise_phone

    text = text.strip()
    if not text:
        return None
    if pattern and not re.fullmatch(pattern, text):
        return None
    if kind == "phone":
        return _phone(text, region, normalise_phone)
    if kind == "email":
        try:
            validate_email(text)
        except ValidationError:
            return None
        return normalise_email(text)
    if kind == "number":
        try:
            return str(Decimal(text.replace(",", ".").replace(" ", "")))
        except InvalidOperation:
            return None
    if kind == "date":
        for form in DATE_FORMATS:
            try:
                return datetime.strptime(text, form).date().isoformat()  # noqa: DTZ007 (a date, no time)
            except ValueError:
                continue
        return None
    if kind == "order_number":
        return _order_number(text)
    if kind == "order_or_phone":
        return _phone(text, region, normalise_phone) or input_clean("order_number", text)
    return text[:1000]


ORDER_WORDS = re.compile(r"(?i)\b(?:order|no|nr|number|заказ\w*|номер)\b|[#№]")


def _order_number(text: str) -> str | None:
    """An order number, alone or in a short sentence ("#NB-1042", "заказ №48213977", "order
    nb-1042 please"): the one token with at least three digits."""
    tokens = [t for t in re.split(r"[\s,.;:!?()]+", ORDER_WORDS.sub(" ", text)) if t]
    candidates = [t for t in tokens if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]{2,39}", t)]
    candidates = [t for t in candidates if sum(ch.isdigit() for ch in t) >= 3]
    return candidates[0].upper() if len(candidates) == 1 and len(tokens) <= 6 else None


def _phone(text: str, region, normalise_phone) -> str | None:
    if len(re.sub(r"\D", "", text)) < 7:
        return None
    try:
        return normalise_phone(text, region=region) or None
    except Exception:  # phonenumbers refuses it: not a phone number
        return None


# Branch conditions ---------------------------------------------------------------------------

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def condition_holds(rule: dict, subject_value: Any) -> bool:
    op, value = rule.get("op", "equals"), rule.get("value")
    if op == "exists":
        return subject_value not in (None, "", [], {}) if value in (None, True) else subject_value in (None, "")
    if isinstance(subject_value, list):
        items = [str(item).lower() for item in subject_value]
        if op in ("contains", "equals", "in"):
            wanted = value if isinstance(value, list) else [value]
            return any(str(item).lower() in items for item in wanted)
        if op in ("not_in", "not_equals"):
            wanted = value if isinstance(value, list) else [value]
            return not any(str(item).lower() in items for item in wanted)
        return False
    text = "" if subject_value is None else str(subject_value)
    if op == "equals":
        return text.lower() == str(value).lower()
    if op == "not_equals":
        return text.lower() != str(value).lower()
    if op == "in":
        return text.lower() in [str(item).lower() for item in (value or [])]
    if op == "not_in":
        return text.lower() not in [str(item).lower() for item in (value or [])]
    if op == "contains":
        return str(value).lower() in text.lower()
    if op == "matches":
        return re.search(str(value), text) is not None
    if op in ("gt", "lt", "between"):
        return _compare(op, text, value)
    return False


def _compare(op: str, text: str, value) -> bool:
    def as_number(raw):
        try:
            return Decimal(str(raw))
        except InvalidOperation:
            return str(raw)  # "09:30" and ISO dates compare as text

    left = as_number(text)
    try:
        if op == "between":
            low, high = (as_number(v) for v in value)
            return low <= left <= high
        right = as_number(value)
        return left > right if op == "gt" else left < right
    except TypeError:
        return False


def subject_value(ctx, subject: str) -> Any:
    """What a branch rule looks at."""
    now_local = ctx.now.astimezone(ctx.workspace.tz)
    if subject == "channel":
        return ctx.conversation.channel.kind
    if subject == "language":
        return ctx.language
    if subject == "time":
        return now_local.strftime("%H:%M")
    if subject == "weekday":
        return WEEKDAYS[now_local.weekday()]
    if subject == "workspace.open":
        from apps.workspaces.selectors import workspace_is_open

        return "true" if workspace_is_open(workspace=ctx.workspace, at=ctx.now) else "false"
    if subject == "contact.tags":
        return list(ctx.conversation.contact.tags.values_list("name", flat=True))
    return lookup(ctx.template_context(), subject)


# The steps -----------------------------------------------------------------------------------
# enter_<kind>(ctx, step) is required; receive_<kind>, timeout_<kind> and result_<kind> exist
# for the steps that wait for them. `step` is the step's dict from the run's version.


def _settings(step: dict) -> dict:
    return step.get("settings") or {}


def _options_payload(ctx, options: list[dict]) -> list[dict]:
    rendered = []
    for option in options:
        item = {"id": str(option["id"]), "title": ctx.text(option.get("title"))[:100]}
        if option.get("description"):
            item["description"] = ctx.text(option["description"])[:200]
        rendered.append(item)
    return rendered


def enter_message(ctx, step):
    settings = _settings(step)
    options = settings.get("options") or []
    text = ctx.text(settings.get("text"))
    if settings.get("media_url"):
        media = {"url": settings["media_url"], "mime_type": settings.get("mime_type", "")}
        ctx.send(text, media={**media, "filename": settings.get("filename", "")})
        text = ""
    if text or options:
        ctx.send(text, options=_options_payload(ctx, options), button=settings.get("button"))
    return Go(step.get("next"), "sent")


def _ask_again(ctx, step, waiting: dict, outcome: str):
    """A reply that does not fit: say so and ask again, until the retries run out."""
    settings = _settings(step)
    tries = waiting.get("tries", 0) + 1
    if tries > int(settings.get("retries", 2)):
        fallback = settings.get("fallback")
        if fallback:
            return Go(fallback, "no valid answer")
        return End("handed_over", "no valid answer", detail="the customer's answers did not fit")
    default = {
        "en": "Sorry, I didn't get that.",
        "ru": "Извините, я не понял.",
        "zh-hant": "抱歉，我不太明白。",
        "zh-hans": "抱歉，我不太明白。",
    }
    ctx.send(ctx.text(settings.get("invalid_text") or default))
    return _prompt(ctx, step, {**waiting, "tries": tries}, outcome)


def _prompt(ctx, step, waiting: dict, outcome: str = "asked"):
    settings = _settings(step)
    options = settings.get("options") or []
    ctx.send(ctx.text(settings.get("text")), options=_options_payload(ctx, options), button=settings.get("button"))
    return Wait(waiting, minutes=settings.get("timeout_minutes"), outcome=outcome)


def enter_menu(ctx, step):
    return _prompt(ctx, step, {"for": "choice", "tries": 0})


def receive_menu(ctx, step, reply: Reply):
    settings = _settings(step)
    option = option_chosen(settings.get("options") or [], reply)
    if option is None:
        return _ask_again(ctx, step, ctx.run.waiting, "invalid choice")
    ctx.set_var(settings.get("save_as") or step["key"], str(option["id"]))
    ctx.set_var(f"{settings.get('save_as') or step['key']}_title", ctx.text(option.get("title")))
    return Go(option.get("next") or step.get("next"), f"chose {option['id']}")


def timeout_default(ctx, step):
    settings = _settings(step)
    if settings.get("timeout"):
        return Go(settings["timeout"], "timed out")
    return End("done", "timed out")


def enter_ask(ctx, step):
    return _prompt(ctx, step, {"for": "input", "tries": 0})


def receive_ask(ctx, step, reply: Reply):
    settings = _settings(step)
    value = input_clean(
        settings.get("input", "text"), reply.text, pattern=settings.get("pattern", ""), region=ctx.region
    )
    if value is None:
        return _ask_again(ctx, step, ctx.run.waiting, "invalid input")
    ctx.set_var(settings.get("save_as") or step["key"], value)
    return Go(step.get("next"), "answered")


def enter_branch(ctx, step):
    settings = _settings(step)
    for index, rule in enumerate(settings.get("rules") or []):
        if condition_holds(rule, subject_value(ctx, rule.get("if", ""))):
            return Go(rule.get("next") or step.get("next"), f"rule {index + 1}")
    return Go(settings.get("else") or step.get("next"), "else")


def enter_set_language(ctx, step):
    settings = _settings(step)
    language = settings.get("language") or lookup(ctx.template_context(), settings.get("from", "")) or ""
    ctx.set_language(str(language)[:8])
    return Go(step.get("next"), f"language {language}")


def enter_update_contact(ctx, step):
    ctx.update_contact(_settings(step))
    return Go(step.get("next"), "updated")


def enter_route(ctx, step):
    settings = _settings(step)
    result = ctx.route(
        team_name=settings.get("team", ""),
        strategy=settings.get("strategy", "round_robin"),
        online_only=settings.get("online_only", True),
        respect_capacity=settings.get("respect_capacity", True),
    )
    if result is None:
        return End("handed_over", "no such team", detail=f"team {settings.get('team')!r} not found")
    text_key = {"assigned": "text_assigned", "queued": "text_busy" if result.busy else "text_queued"}.get(
        result.outcome, "text_closed"
    )
    text = settings.get(text_key) or (settings.get("text_queued") if text_key == "text_busy" else None)
    if text is None:
        text = DEFAULT_ROUTE_TEXTS.get(text_key)
    if text:
        ctx.send(ctx.text(text))
    branch = settings.get(result.outcome)
    if branch:
        return Go(branch, result.outcome)
    return End("handed_over", result.outcome, detail=ctx.vars.get("queue", {}).get("summary", ""), routed=True)


DEFAULT_ROUTE_TEXTS = {
    "text_queued": {
        "en": "All our agents are busy. You are number {{queue.position}} in line; expected wait about "
        "{{queue.wait_minutes}} min.",
        "ru": "Все операторы заняты. Вы {{queue.position}}-й в очереди, ожидание около {{queue.wait_minutes}} мин.",
        "zh-hant": "客服人員目前忙碌中。您排在第 {{queue.position}} 位，預計等候約 {{queue.wait_minutes}} 分鐘。",
        "zh-hans": "客服人员目前忙碌中。您排在第 {{queue.position}} 位，预计等候约 {{queue.wait_minutes}} 分钟。",
    },
    "text_busy": {
        "en": "We are very busy right now: expected wait about {{queue.wait_minutes}} min "
        "(you are number {{queue.position}}). We will answer as soon as we can.",
        "ru": "Сейчас много обращений: ожидание около {{queue.wait_minutes}} мин "
        "(вы {{queue.position}}-й в очереди). Ответим как можно скорее.",
        "zh-hant": "目前諮詢量較大，預計等候約 {{queue.wait_minutes}} 分鐘"
        "（您排在第 {{queue.position}} 位），我們會盡快回覆。",
        "zh-hans": "目前咨询量较大，预计等候约 {{queue.wait_minutes}} 分钟"
        "（您排在第 {{queue.position}} 位），我们会尽快回复。",
    },
    "text_closed": {
        "en": "Our {{team.name}} team is away now; we open at {{team.opens_at}} and will answer you then.",
        "ru": "Команда «{{team.name}}» сейчас не работает; откроемся {{team.opens_at}} и сразу ответим.",
        "zh-hant": "{{team.name}}團隊目前休息中，將於 {{team.opens_at}} 開始服務，屆時回覆您。",
        "zh-hans": "{{team.name}}团队目前休息中，将于 {{team.opens_at}} 开始服务，届时回复您。",
    },
}


def enter_hours(ctx, step):
    settings = _settings(step)
    is_open = ctx.is_open(settings.get("team") or "")
    return Go(settings.get("open" if is_open else "closed") or step.get("next"), "open" if is_open else "closed")


FOLLOW_UP = {
    "en": "Did this answer your question?",
    "ru": "Это ответ на ваш вопрос?",
    "zh-hant": "這個回答對您有幫助嗎？",
    "zh-hans": "这个回答对您有帮助吗？",
}
YES_NO = [
    {"id": "yes", "title": {"en": "Yes, thanks", "ru": "Да, спасибо", "zh-hant": "是，謝謝", "zh-hans": "是，谢谢"}},
    {
        "id": "no",
        "title": {
            "en": "No, a person please",
            "ru": "Нет, нужен оператор",
            "zh-hant": "否，找真人",
            "zh-hans": "否，找人工",
        },
    },
]


def enter_faq(ctx, step):
    settings = _settings(step)
    decision = ctx.faq(ctx.vars.get("message", ""), threshold=settings.get("threshold"))
    ctx.set_var("intent", decision.intent or "")
    ctx.set_var("confidence", decision.confidence)
    if decision.faq_id is None:
        return Go(_branch(settings, "not_matched", step), f"no answer ({decision.confidence:.2f})")
    ctx.send(ctx.text(decision.answer))
    ctx.record("faq_answered", intent=decision.intent)
    detail = f"{decision.intent} ({decision.confidence:.2f})"
    if decision.follow_up and (settings.get("helped") or settings.get("not_helped") or step.get("next")):
        ctx.send(ctx.text(settings.get("follow_up_text") or FOLLOW_UP), options=_options_payload(ctx, YES_NO))
        return Wait(
            {"for": "feedback", "intent": decision.intent},
            minutes=settings.get("timeout_minutes", 60),
            outcome="answered",
            detail=detail,
        )
    return Go(settings.get("matched") or step.get("next"), "answered", detail)


def receive_faq(ctx, step, reply: Reply):
    settings = _settings(step)
    option = option_chosen(YES_NO, reply)
    if option is None:
        # Not a yes or no: a new question. Answer it the same way.
        ctx.set_var("message", reply.text)
        return Go(step["key"], "asked again")
    if option["id"] == "yes":
        ctx.count_resolved()
        ctx.record("faq_accepted", intent=ctx.run.waiting.get("intent"))
        return Go(settings.get("helped") or settings.get("matched") or step.get("next"), "helped")
    if settings.get("not_helped"):
        return Go(settings["not_helped"], "did not help")
    return End("handed_over", "did not help", detail=f"FAQ answer {ctx.run.waiting.get('intent')} did not help")


def timeout_faq(ctx, step):
    settings = _settings(step)
    return Go(settings.get("helped") or settings.get("matched") or step.get("next"), "no feedback")


def enter_order_lookup(ctx, step):
    settings = _settings(step)
    source = settings.get("from", "contact")
    value = "" if source == "contact" else str(lookup(ctx.template_context(), source) or "")
    order = ctx.order_find(value)
    if order is None:
        return Go(_branch(settings, "not_found", step), "not found")
    ctx.set_var("order", order)
    return Go(settings.get("found") or step.get("next"), f"found {order['number']}")


def enter_http(ctx, step):
    from apps.workflows.templating import render, render_data

    settings = _settings(step)
    context = ctx.template_context()
    request = {
        "kind": "http",
        "method": settings.get("method", "GET").upper(),
        "url": render(settings.get("url", ""), context),
        "headers": render_data(settings.get("headers") or {}, context),
        "body": render_data(settings.get("body"), context),
    }
    return Call(request, timeout_seconds=float(settings.get("timeout_seconds", 5)), detail=request["url"])


def result_http(ctx, step, response: dict):
    settings = _settings(step)
    if not response.get("ok"):
        ctx.set_var("http_error", response.get("error", ""))
        if settings.get("failure"):
            return Go(settings["failure"], "failed", response.get("error", ""))
        return End("handed_over", "request failed", detail=f"{settings.get('url')}: {response.get('error', '')}")
    data = response.get("json")
    ctx.set_var("http_status", response.get("status"))
    for name, path in (settings.get("map") or {}).items():
        ctx.set_var(name, lookup({"json": data}, _json_path(path)))
    return Go(step.get("next"), f"HTTP {response.get('status')}")


def _json_path(path: str) -> str:
    return path if path.startswith("json.") or path == "json" else f"json.{path}"


def enter_note(ctx, step):
    ctx.note(ctx.render(_settings(step).get("text", "")))
    return Go(step.get("next"), "noted")


def enter_notify(ctx, step):
    settings = _settings(step)
    waiting = bool(settings.get("wait_for_reply"))
    request = {
        "kind": "notify",
        "via": settings.get("via", "webhook"),
        "url": settings.get("url", ""),
        "to": settings.get("to", ""),
        "text": ctx.render(ctx.text(settings.get("text", ""))),
        "data": ctx.escalation_data(with_callback=waiting),
    }
    return Call(request, timeout_seconds=float(settings.get("timeout_seconds", 5)), detail=request["via"])


def result_notify(ctx, step, response: dict):
    settings = _settings(step)
    if not response.get("ok"):
        ctx.note(f"Escalation via {settings.get('via', 'webhook')} failed: {response.get('error', '')}")
        return Go(_branch(settings, "failure", step), "failed", response.get("error", ""))
    if settings.get("wait_for_reply"):
        ctx.set_pending(True)
        return Wait({"for": "callback"}, minutes=settings.get("timeout_minutes"), outcome="escalated")
    return Go(step.get("next"), "notified")


def callback_notify(ctx, step, data: dict):
    ctx.set_var("reply", data)
    ctx.set_pending(False)
    if data.get("text"):
        ctx.note(f"Reply to the escalation: {data['text']}")
    return Go(step.get("next"), "reply received")


def receive_notify(ctx, step, reply: Reply):
    return Wait(ctx.run.waiting, minutes=None, outcome="still waiting")  # the customer writes; people see it


def timeout_notify(ctx, step):
    ctx.set_pending(False)
    return timeout_default(ctx, step)


def enter_close(ctx, step):
    settings = _settings(step)
    ctx.close(category=settings.get("category", ""), summary=ctx.render(settings.get("summary", "")))
    return Go(step.get("next"), "closed")


def enter_wait(ctx, step):
    return Wait({"for": "timer"}, minutes=float(_settings(step).get("minutes", 1)), outcome="waiting")


def receive_wait(ctx, step, reply: Reply):
    return Wait(ctx.run.waiting, minutes=None, outcome="still waiting")


def timeout_wait(ctx, step):
    return Go(step.get("next"), "waited")


def enter_jump(ctx, step):
    return Go(_settings(step).get("to") or step.get("next"), "jumped")


def enter_start_workflow(ctx, step):
    name = _settings(step).get("workflow", "")
    return (
        End("done", "started another", detail=name, team=None, text=None)
        if ctx.chain(name)
        else Go(step.get("next"), "no such workflow", name)
    )


def enter_handover(ctx, step):
    settings = _settings(step)
    if settings.get("note"):
        ctx.note(ctx.render(settings["note"]))
    return End("handed_over", "handed over", team=settings.get("team") or None, text=settings.get("text"))


CSAT_TEXT = {
    "en": "How would you rate our help? 1 is poor, 5 is excellent.",
    "ru": "Оцените, пожалуйста, нашу помощь: 1 — плохо, 5 — отлично.",
    "zh-hant": "請為我們的服務評分：1 分最差，5 分最好。",
    "zh-hans": "请为我们的服务评分：1 分最差，5 分最好。",
}
CSAT_COMMENT = {
    "en": "Thank you! Anything you would like to add? (or just skip)",
    "ru": "Спасибо! Хотите что-то добавить? (можно пропустить)",
    "zh-hant": "謝謝！還有其他意見嗎？（可略過）",
    "zh-hans": "谢谢！还有其他意见吗？（可略过）",
}
CSAT_THANKS = {
    "en": "Thank you for your feedback!",
    "ru": "Спасибо за отзыв!",
    "zh-hant": "感謝您的回饋！",
    "zh-hans": "感谢您的反馈！",
}
STARS = ["1 ⭐", "2 ⭐⭐", "3 ⭐⭐⭐", "4 ⭐⭐⭐⭐", "5 ⭐⭐⭐⭐⭐"]
RATING = re.compile(r"\s*([1-5])\s*(?:/\s*5)?\s*[.!)]?\s*$")
SKIP = {"skip", "no", "нет", "пропустить", "-", "no thanks", "nope", "略過", "略过", "沒有", "没有"}


def enter_csat(ctx, step):
    settings = _settings(step)
    options = [{"id": f"csat-{n}", "title": STARS[n - 1]} for n in range(5, 0, -1)]
    ctx.send(ctx.text(settings.get("text") or CSAT_TEXT), options=options, button={"en": "Rate", "ru": "Оценить"})
    return Wait({"for": "rating"}, minutes=settings.get("timeout_minutes", 1440), outcome="asked")


def receive_csat(ctx, step, reply: Reply):
    settings = _settings(step)
    if ctx.run.waiting.get("for") == "comment":
        comment = "" if reply.text.lower() in SKIP else reply.text[:2000]
        ctx.csat_record(int(ctx.vars["rating"]), comment)
        ctx.send(ctx.text(settings.get("thanks_text") or CSAT_THANKS))
        return Go(step.get("next"), "commented" if comment else "rated")
    score = _rating(reply)
    if score is None:
        if ctx.run.waiting.get("tries", 0) >= 1:
            return Go(step.get("next"), "no rating")
        ctx.send(ctx.text({"en": "Please choose a number from 1 to 5.", "ru": "Выберите число от 1 до 5."}))
        return Wait({"for": "rating", "tries": 1}, minutes=settings.get("timeout_minutes", 1440), outcome="asked")
    ctx.set_var("rating", score)
    ctx.csat_record(score, "")
    if settings.get("comment_text", True) is not False:
        ctx.send(ctx.text(settings.get("comment_text") or CSAT_COMMENT))
        return Wait({"for": "comment"}, minutes=settings.get("comment_minutes", 60), outcome=f"rated {score}")
    ctx.send(ctx.text(settings.get("thanks_text") or CSAT_THANKS))
    return Go(step.get("next"), f"rated {score}")


def _rating(reply: Reply) -> int | None:
    if reply.choice and reply.choice.startswith("csat-"):
        return int(reply.choice[5:])
    found = RATING.match(reply.text)
    if found:
        return int(found.group(1))
    stars = reply.text.count("⭐")
    return stars if 1 <= stars <= 5 else None


def timeout_csat(ctx, step):
    return Go(step.get("next"), "no answer")
