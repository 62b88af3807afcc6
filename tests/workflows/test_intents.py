import time

import pytest

from apps.workflows.intents import DEFAULT_THRESHOLD, NO_MATCH, IntentMatch, IntentMatcher, decide, normalise
from bench.intents import load

FAQ = {
    1: (
        "order_status",
        {
            "en": ["Where is my order?", "Track my order", "My parcel hasn't arrived yet", "When will my order come?"],
            "ru": ["Где мой заказ?", "Отследить заказ", "Посылка до сих пор не пришла", "Когда приедет заказ?"],
        },
    ),
    2: (
        "refund_timing",
        {
            "en": ["When will I get my money back?", "How long does a refund take?", "Where is my refund?"],
            "ru": ["Когда вернут деньги?", "Сколько идет возврат денег?", "Деньги еще не вернулись"],
        },
    ),
    3: (
        "unsubscribe",
        {
            "en": ["How do I unsubscribe from your emails?", "Stop sending me newsletters", "Turn off SMS"],
            "ru": ["Как отписаться от рассылки?", "Перестаньте присылать письма", "Отключить смс рассылку"],
        },
    ),
    4: (
        "promo_code",
        {"en": ["My promo code doesn't work", "The discount code is not applied", "Where do I enter a coupon?"]},
    ),
}


def examples(faq=FAQ):
    return [
        (key, intent, language, text)
        for key, (intent, by_language) in faq.items()
        for language, texts in by_language.items()
        for text in texts
    ]


@pytest.fixture(scope="module")
def matcher():
    return IntentMatcher(examples())


@pytest.mark.parametrize(
    ("text", "language", "key"),
    [
        ("hi, where's my parcel? it's been a week", "en", 1),
        ("when is my money coming back", "en", 2),
        ("please stop the emails", "en", 3),
        ("здравствуйте, где моя посылка?", "ru", 1),
        ("когда мне вернут деньги за заказ", "ru", 2),
        ("отпишите меня от рассылок", "ru", 3),
    ],
)
def test_question_is_matched_to_its_entry_from_a_few_examples(matcher, text, language, key):
    match = matcher.match(text, language)

    assert (match.key, match.intent) == (key, FAQ[key][0])
    assert match.confidence >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(("text", "language"), [("wher is my oder", "en"), ("где мой закза", "ru")])
def test_typos_are_tolerated(matcher, text, language):
    assert matcher.match(text, language).key == 1


@pytest.mark.parametrize(
    "text", ["what's the weather like today", "do you sell cars", "hello", "thanks!", "какая сегодня погода", "привет"]
)
def test_message_no_entry_covers_gets_a_confidence_below_the_default_threshold(matcher, text):
    match = matcher.match(text)

    assert match.confidence < DEFAULT_THRESHOLD
    assert decide(match) == IntentMatch(key=None, intent=None, confidence=match.confidence)


def test_a_greeting_is_answered_when_the_workspace_has_an_entry_for_it():
    faq = FAQ | {9: ("greeting", {"en": ["Hello", "Hi there"], "ru": ["Привет", "Здравствуйте"]})}
    matcher = IntentMatcher(examples(faq))

    assert matcher.match("hello!", "en").key == 9
    assert matcher.match("привет", "ru").key == 9
    assert matcher.match("hello, where is my order?", "en").key == 1


def test_the_language_given_limits_the_match_to_examples_in_that_language(matcher):
    in_russian = matcher.match("где мой заказ", "ru")
    against_english_examples = matcher.match("где мой заказ", "en")

    assert in_russian.key == 1
    assert against_english_examples.confidence < DEFAULT_THRESHOLD < in_russian.confidence


def test_an_entry_without_examples_in_the_language_is_matched_on_its_other_examples(matcher):
    assert matcher.match("promo code not working", "ru").key == 4


@pytest.mark.parametrize(("code", "language"), [("RU", "ru"), ("ru-RU", "ru"), ("en_GB", "en")])
def test_a_language_is_known_by_its_primary_tag(matcher, code, language):
    assert matcher.match("где мой заказ?", code) == matcher.match("где мой заказ?", language)


@pytest.mark.parametrize("language", [None, "", "de"])
def test_without_a_language_of_the_examples_every_language_is_tried(matcher, language):
    assert matcher.match("где мой заказ?", language).key == 1
    assert matcher.match("where is my refund", language).key == 2


@pytest.mark.parametrize("text", ["", "   ", "?!", "12345678", "№ 4521-77"])
def test_a_message_without_words_matches_nothing(matcher, text):
    assert matcher.match(text, "en") == NO_MATCH


def test_a_matcher_without_examples_matches_nothing():
    matcher = IntentMatcher([])

    assert matcher.match("where is my order") == NO_MATCH
    assert matcher.intents == set()


def test_intents_are_the_entries_intent_names(matcher):
    assert matcher.intents == {"order_status", "refund_timing", "unsubscribe", "promo_code"}


def test_decide_keeps_a_confident_match():
    match = IntentMatch(key=1, intent="order_status", confidence=0.8)

    assert decide(match, 0.5) is match
    assert decide(match, 0.9) == IntentMatch(key=None, intent=None, confidence=0.8)


def test_normalise_lowercases_folds_yo_and_drops_punctuation():
    assert normalise("  ЕЩЁ раз: где мой заказ?! Don't  know… ") == "еще раз где мой заказ dont know"


def test_confidence_is_between_zero_and_one(matcher):
    for text in ["Where is my order?", "where is my order", "order", "weather", "когда вернут деньги?"]:
        assert 0.0 <= matcher.match(text).confidence <= 1.0


def test_on_the_bench_set_most_questions_are_answered_right_and_out_of_scope_ones_abstained_on():
    training, questions = load()
    matcher = IntentMatcher(training)
    in_scope = [q for q in questions if q.expected is not None]
    out_of_scope = [q for q in questions if q.expected is None]

    started = time.perf_counter()
    right = sum(matcher.match(q.text, q.language).intent == q.expected for q in in_scope)
    abstained = sum(matcher.match(q.text, q.language).confidence < DEFAULT_THRESHOLD for q in out_of_scope)
    per_message_ms = (time.perf_counter() - started) * 1000 / len(questions)

    assert right / len(in_scope) >= 0.83
    assert abstained / len(out_of_scope) >= 0.80
    assert per_message_ms < 5
