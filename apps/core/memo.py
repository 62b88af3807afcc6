"""Answers remembered for the length of one batch of work.

The inbound drainer applies dozens of deliveries in one go; whether a workspace has a workflow
that messages start, or what its broadcast rules are, does not change between two of them a few
milliseconds apart, so inside `remembering()` each such question is asked of the database once
per batch. Outside a batch `remembered` simply computes: nothing is cached across requests or
tasks, so nothing can go stale."""

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

_answers: ContextVar[dict | None] = ContextVar("memo_answers", default=None)


@contextmanager
def remembering() -> Iterator[None]:
    token = _answers.set({})
    try:
        yield
    finally:
        _answers.reset(token)


def remembered(key: Hashable, compute: Callable[[], T]) -> T:
    answers = _answers.get()
    if answers is None:
        return compute()
    if key not in answers:
        answers[key] = compute()
    return answers[key]
