"""The FAQ matcher (apps/workflows/intents.py) on a labelled set of e-commerce questions.

    python -m bench.intents [--threshold 0.5] [--errors]

No database, no network: it reads en.json and ru.json beside this file. Each holds, per intent, 26
customer messages written by hand (short and long, with typos, order numbers and greetings), and under
"none" messages that no intent covers (small talk, other shops' business, hard near-misses such as
"how do I become a courier"). The first 10 messages of each intent and language are the examples the
matcher learns from, as a workspace's FAQ entries would give them; the other 16 are held out.

It prints top-1 accuracy on the held-out questions with no threshold and at the threshold (a message below
it goes to the menu or a human: a false abstention when it had an answer), the share of out-of-scope
messages correctly abstained on, a threshold sweep, the same figures for workspaces with a short FAQ (where
questions of the intents it lacks must be abstained on too), and build and match times; match times are
those of a first sight of each message, stems not yet cached. `--errors` lists the misses.
"""

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from apps.workflows.intents import DEFAULT_THRESHOLD, IntentMatch, IntentMatcher

HERE = Path(__file__).resolve().parent
LANGUAGES = ("en", "ru")
TRAINING_PER_INTENT = 10
OUT_OF_SCOPE = "none"
SMALL_FAQ = {"intents": 8, "examples": 5, "draws": 10}
SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
TARGETS = {"top1": 0.85, "abstain": 0.80, "match_ms": 50}


@dataclass(frozen=True)
class Question:
    language: str
    expected: str | None  # None: no intent covers it
    text: str


@dataclass(frozen=True)
class Outcome:
    question: Question
    match: IntentMatch
    ms: float


def load() -> tuple[list[tuple[str, str, str, str]], list[Question]]:
    """The training examples as (key, intent, language, text), and the held-out questions."""
    examples, questions = [], []
    for language in LANGUAGES:
        data = json.loads((HERE / f"{language}.json").read_text(encoding="utf-8"))
        for intent, texts in data.items():
            if intent == OUT_OF_SCOPE:
                questions += [Question(language, None, text) for text in texts]
                continue
            examples += [(intent, intent, language, text) for text in texts[:TRAINING_PER_INTENT]]
            questions += [Question(language, intent, text) for text in texts[TRAINING_PER_INTENT:]]
    return examples, questions


def build(examples) -> tuple[IntentMatcher, float]:
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        matcher = IntentMatcher(examples)
        timings.append((time.perf_counter() - started) * 1000)
    return matcher, statistics.median(timings)


def run(matcher: IntentMatcher, questions: list[Question], *, hint: bool = True) -> list[Outcome]:
    outcomes = []
    for question in questions:
        started = time.perf_counter()
        match = matcher.match(question.text, question.language if hint else None)
        outcomes.append(Outcome(question, match, (time.perf_counter() - started) * 1000))
    return outcomes


def share(hits: int, total: int) -> str:
    return f"{hits / total:6.1%} ({hits}/{total})" if total else "   n/a"


def figures(outcomes: list[Outcome], threshold: float) -> dict[str, tuple[int, int]]:
    """(hits, total) for each figure at a threshold."""
    in_scope = [o for o in outcomes if o.question.expected is not None]
    out_of_scope = [o for o in outcomes if o.question.expected is None]
    confident = [o for o in in_scope if o.match.confidence >= threshold]
    return {
        "top1": (sum(o.match.intent == o.question.expected for o in in_scope), len(in_scope)),
        "answered right": (sum(o.match.intent == o.question.expected for o in confident), len(in_scope)),
        "answered wrong": (sum(o.match.intent != o.question.expected for o in confident), len(in_scope)),
        "false abstentions": (len(in_scope) - len(confident), len(in_scope)),
        "correct abstentions": (sum(o.match.confidence < threshold for o in out_of_scope), len(out_of_scope)),
    }


def report(outcomes: list[Outcome], threshold: float) -> None:
    by_language = {"all": outcomes} | {
        language: [o for o in outcomes if o.question.language == language] for language in LANGUAGES
    }
    table = {name: figures(rows, threshold) for name, rows in by_language.items()}
    print(f"  {'':<46}" + "".join(f"{name:>18}" for name in by_language))
    labels = {
        "top1": "top-1 accuracy, in scope, no threshold",
        "answered right": f"answered right at threshold {threshold}",
        "answered wrong": "answered wrong at the threshold",
        "false abstentions": "false abstentions (had an answer)",
        "correct abstentions": "correct abstentions, out of scope",
    }
    for figure, label in labels.items():
        print(f"  {label:<46}" + "".join(f"{share(*table[name][figure]):>18}" for name in by_language))


def sweep(outcomes: list[Outcome]) -> None:
    print("\n  threshold   answered right   answered wrong   false abstentions   correct abstentions")
    for threshold in SWEEP:
        row = figures(outcomes, threshold)
        marker = "  <- DEFAULT_THRESHOLD" if abs(threshold - DEFAULT_THRESHOLD) < 1e-9 else ""
        print(
            f"  {threshold:9.2f}   {row['answered right'][0] / row['answered right'][1]:14.1%}   "
            f"{row['answered wrong'][0] / row['answered wrong'][1]:14.1%}   "
            f"{row['false abstentions'][0] / row['false abstentions'][1]:17.1%}   "
            f"{row['correct abstentions'][0] / row['correct abstentions'][1]:19.1%}{marker}"
        )


def small_faqs(examples, questions: list[Question], threshold: float) -> None:
    """Workspaces with a short FAQ: a few intents drawn at random, the first examples of each. Questions of
    the intents left out are then out of scope too, and the likeliest to be answered wrongly."""
    rng = random.Random(7)
    intents = sorted({intent for _key, intent, _language, _text in examples})
    right = wrong = answered_total = abstained = abstain_total = 0
    for _ in range(SMALL_FAQ["draws"]):
        chosen = set(rng.sample(intents, SMALL_FAQ["intents"]))
        kept: dict[tuple[str, str], list] = {}
        for example in examples:
            if example[1] in chosen:
                kept.setdefault((example[1], example[2]), []).append(example)
        matcher = IntentMatcher([e for group in kept.values() for e in group[: SMALL_FAQ["examples"]]])
        for outcome in run(matcher, questions):
            confident = outcome.match.confidence >= threshold
            if outcome.question.expected in chosen:
                answered_total += 1
                right += confident and outcome.match.intent == outcome.question.expected
                wrong += confident and outcome.match.intent != outcome.question.expected
            else:
                abstain_total += 1
                abstained += not confident
    print(
        f"\n  short FAQs ({SMALL_FAQ['intents']} random intents x {SMALL_FAQ['examples']} examples per language, "
        f"{SMALL_FAQ['draws']} draws; the other intents' questions count as out of scope), at {threshold}:\n"
        f"    answered right {share(right, answered_total)}, answered wrong {share(wrong, answered_total)}, "
        f"correct abstentions {share(abstained, abstain_total)}"
    )


def errors(outcomes: list[Outcome], threshold: float) -> None:
    print("\n  misses (expected -> got, confidence):")
    for o in outcomes:
        expected = o.question.expected
        wrong = o.match.intent != expected if expected else o.match.confidence >= threshold
        late = expected is not None and not wrong and o.match.confidence < threshold
        if wrong or late:
            kind = "abstained" if late else "wrong"
            print(
                f"    [{o.question.language}] {kind:<9} {expected or '(none)':<20} -> {o.match.intent or '-':<20} "
                f"{o.match.confidence:.2f}  {o.question.text}"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.intents")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--errors", action="store_true", help="list the misclassified and abstained messages")
    args = parser.parse_args(argv)

    examples, questions = load()
    started = time.perf_counter()
    IntentMatcher(examples)
    first_build_ms = (time.perf_counter() - started) * 1000
    matcher, build_ms = build(examples)
    outcomes = run(matcher, questions)
    in_scope = sum(q.expected is not None for q in questions)
    print(
        f"data: {len(matcher.intents)} intents x {len(LANGUAGES)} languages, {len(examples)} training examples, "
        f"{in_scope} held-out questions, {len(questions) - in_scope} out-of-scope messages"
    )
    report(outcomes, args.threshold)
    no_hint = figures(run(matcher, questions, hint=False), args.threshold)
    print(f"  {'top-1 accuracy without a language hint':<46}{share(*no_hint['top1']):>18}")
    sweep(outcomes)
    small_faqs(examples, questions, args.threshold)
    times = sorted(o.ms for o in outcomes)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"\n  build {build_ms:.1f} ms for {len(examples)} examples ({first_build_ms:.1f} ms the first time in a "
        f"process); match mean {statistics.fmean(times):.2f} ms, "
        f"p99 {p99:.2f} ms, max {times[-1]:.2f} ms (target < {TARGETS['match_ms']} ms)"
    )
    overall = figures(outcomes, args.threshold)
    reached = {
        f"top-1 >= {TARGETS['top1']:.0%}": overall["top1"][0] / overall["top1"][1] >= TARGETS["top1"],
        f"correct abstentions >= {TARGETS['abstain']:.0%}": overall["correct abstentions"][0]
        / overall["correct abstentions"][1]
        >= TARGETS["abstain"],
        f"p99 match < {TARGETS['match_ms']} ms": p99 < TARGETS["match_ms"],
    }
    print("  targets: " + ", ".join(f"{name} [{'ok' if ok else 'missed'}]" for name, ok in reached.items()))
    if args.errors:
        errors(outcomes, args.threshold)
