"""The FAQ matcher as the bot and `POST /api/v1/faq/match/` use it: one `IntentMatcher` per
workspace, rebuilt when its FAQ entries change (their count and newest update are the cache key),
so a message costs a dictionary lookup and a match, not a query per example."""

import threading
from dataclasses import dataclass

from django.db.models import Count, Max

from apps.workflows.intents import IntentMatcher
from apps.workflows.models import BotSettings, FaqEntry

_cache: dict[int, tuple[tuple, IntentMatcher]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class FaqDecision:
    faq_id: int | None
    intent: str | None
    confidence: float
    answer: str = ""
    follow_up: bool = False


def _matcher(workspace_id: int) -> IntentMatcher:
    stamp = tuple(
        FaqEntry.objects.filter(workspace_id=workspace_id).aggregate(n=Count("id"), at=Max("updated_at")).values()
    )
    cached = _cache.get(workspace_id)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    entries = FaqEntry.objects.filter(workspace_id=workspace_id).values_list("id", "intent", "language", "examples")
    matcher = IntentMatcher(
        (entry_id, intent, language, text) for entry_id, intent, language, examples in entries for text in examples
    )
    with _lock:
        _cache[workspace_id] = (stamp, matcher)
    return matcher


def faq_threshold(workspace_id: int) -> float:
    threshold = BotSettings.objects.filter(workspace_id=workspace_id).values_list("faq_threshold", flat=True).first()
    return threshold if threshold is not None else BotSettings._meta.get_field("faq_threshold").default


def faq_match(*, workspace_id: int, text: str, language: str | None = None, threshold: float | None = None):
    """The FAQ entry that answers `text`, in `language` when the intent has an answer in it; no
    entry (faq_id None) when the matcher is less sure than the workspace's threshold."""
    match = _matcher(workspace_id).match(text or "", language or None)
    confidence = round(float(match.confidence), 4)
    if threshold is None:
        threshold = faq_threshold(workspace_id)
    if match.intent is None or confidence < threshold:
        return FaqDecision(faq_id=None, intent=None, confidence=confidence)
    entries = FaqEntry.objects.filter(workspace_id=workspace_id, intent=match.intent)
    entry = (language and entries.filter(language=language).first()) or entries.filter(pk=match.key).first()
    if entry is None:
        return FaqDecision(faq_id=None, intent=None, confidence=confidence)
    return FaqDecision(
        faq_id=entry.pk, intent=entry.intent, confidence=confidence, answer=entry.answer, follow_up=entry.follow_up
    )


def choice_match(options: list[tuple[str, list[str]]], text: str, *, threshold: float = 0.45) -> str | None:
    """A customer typed instead of tapping: the option whose title or keywords their words are
    closest to, if the matcher is sure enough."""
    examples = [(option_id, option_id, "any", phrase) for option_id, phrases in options for phrase in phrases]
    if not examples or not (text or "").strip():
        return None
    match = IntentMatcher(examples).match(text, None)
    return match.key if match.intent is not None and match.confidence >= threshold else None
