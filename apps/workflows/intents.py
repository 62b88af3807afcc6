"""Which FAQ entry a customer's free-text message asks about, learnt from the entries' example phrasings alone.

Each example becomes two TF-IDF vectors: word stems (Snowball, English and Russian) and character trigrams
inside words, which tolerate typos and the endings Russian piles on a stem. An entry scores a blend of
its centroid's cosine with the message and its closest example's; the best entry's score becomes a confidence.

Pure Python and offline: no model, nothing downloaded, nothing stored. `python -m bench.intents` measures it
on a labelled set of e-commerce questions in English and Russian: accuracy, abstentions, build and match
times; the constants below were chosen there.
"""

import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import snowballstemmer

# A message whose confidence is below this goes to the menu or a human (bench.intents prints a sweep).
DEFAULT_THRESHOLD = 0.5

WORD_WEIGHT = 0.3  # of a similarity; the rest is the character n-grams'
BEST_EXAMPLE_WEIGHT = 0.15  # of an entry's score; the rest is its centroid's
# An entry's centroid adds its examples' vectors and takes the square root, so that a word every example
# repeats does not drown the rarer ones a customer may use instead.
CENTROID_POWER = 0.5
CHAR_NGRAMS = (3,)
# Confidence is a logistic curve of the best score, fitted on the bench's labels (correct answer or not):
# a score of CALIBRATION_MIDPOINT is an even chance.
CALIBRATION_SLOPE = 15.5
CALIBRATION_MIDPOINT = 0.205

# Greetings and politeness say nothing about what is asked, but a text made of nothing else keeps them, so
# that an entry for "hello" works in a workspace that has one. Pronouns and other small words stay: "my"
# (my order) against "you" (do you accept) tells entries apart.
FILLER_WORDS = frozenset(
    """
    please pls plz kindly hi hello hey hiya dear thanks thank thx ty ok okay
    пожалуйста пожалуйсто плиз пжл пжлст спасибо здравствуйте здрасьте здраствуйте привет добрый доброго
    подскажите
    """.split()  # noqa: SIM905 (a word list reads best as text)
)
FILLER_PHRASES = re.compile(
    r"\b(?:thank you(?: very| so)?(?: much)?|many thanks|good (?:morning|afternoon|evening|day|night)"
    r"|доброе утро|добрый (?:день|вечер)|доброго (?:дня|утра|вечера)|доброй ночи|большое спасибо|спасибо большое)\b"
)

_APOSTROPHES = re.compile(r"['’`ʼ]")
_NOT_WORD = re.compile(r"[\W_]+")
_LETTERS = re.compile(r"^[^\W\d_]+$")
_CYRILLIC = re.compile(r"[а-я]")
_STEMMERS = {"russian": snowballstemmer.stemmer("russian"), "english": snowballstemmer.stemmer("english")}
# Snowball stemmers keep their work in the instance: one thread at a time.
_STEMMER_LOCK = threading.Lock()


@dataclass(frozen=True)
class IntentMatch:
    key: object | None
    intent: str | None
    confidence: float


NO_MATCH = IntentMatch(key=None, intent=None, confidence=0.0)


def decide(match: IntentMatch, threshold: float = DEFAULT_THRESHOLD) -> IntentMatch:
    """The match itself when it is confident enough, else an abstention that keeps the confidence."""
    if match.confidence >= threshold:
        return match
    return IntentMatch(key=None, intent=None, confidence=match.confidence)


def normalise(text: str) -> str:
    """Lower case, ё as е, apostrophes dropped (dont = don't), other punctuation as spaces."""
    text = _APOSTROPHES.sub("", text.lower().replace("ё", "е"))
    return " ".join(_NOT_WORD.sub(" ", text).split())


@lru_cache(maxsize=50_000)
def stem(word: str) -> str:
    language = "russian" if _CYRILLIC.search(word) else "english"
    with _STEMMER_LOCK:
        return _STEMMERS[language].stemWord(word)


@lru_cache(maxsize=50_000)
def char_ngrams(word: str) -> tuple[str, ...]:
    padded = f" {word} "
    return tuple(padded[start : start + size] for size in CHAR_NGRAMS for start in range(len(padded) - size + 1))


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _cjk_split(words: list[str]) -> list[str]:
    """Chinese is written without spaces: a run of Han characters becomes its overlapping pairs
    (保修 期 → 保修, 修期), the usual stand-in for words when there is no dictionary."""
    split = []
    for word in words:
        if _CJK.search(word) and len(word) > 2:
            split.extend(word[start : start + 2] for start in range(len(word) - 1))
        else:
            split.append(word)
    return split


def content_words(text: str) -> list[str]:
    """The words that carry meaning; numbers (order ids, dates, amounts) are left out."""
    text = normalise(text)
    words = _cjk_split([word for word in text.split() if _LETTERS.match(word)])
    meaningful = [word for word in FILLER_PHRASES.sub(" ", text).split() if _LETTERS.match(word)]
    meaningful = _cjk_split([word for word in meaningful if word not in FILLER_WORDS])
    return meaningful or words


def term_counts(text: str) -> tuple[Counter[str], Counter[str]]:
    """Counts of a text's word stems and of the character n-grams within its words."""
    words = content_words(text)
    return Counter(map(stem, words)), Counter(chain.from_iterable(map(char_ngrams, words)))


def unit(vector: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(weight * weight for weight in vector.values()))
    return {term: weight / norm for term, weight in vector.items()} if norm else {}


def dot(query: dict[str, float], vector: dict[str, float]) -> float:
    return sum(weight * vector.get(term, 0.0) for term, weight in query.items())


def centroid(vectors: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for vector in vectors:
        for term, weight in vector.items():
            total[term] += weight
    return unit({term: weight**CENTROID_POWER for term, weight in total.items()})


def confidence(score: float) -> float:
    """The best entry's score as a chance of being right: 0 for nothing in common, 0.5 at the midpoint."""
    floor = 1 / (1 + math.exp(CALIBRATION_SLOPE * CALIBRATION_MIDPOINT))
    curve = 1 / (1 + math.exp(-CALIBRATION_SLOPE * (score - CALIBRATION_MIDPOINT)))
    return max(0.0, (curve - floor) / (1 - floor))


class _Space:
    """TF-IDF vectors of the examples in one kind of term (stems or n-grams), and their inverted index."""

    def __init__(self, counts: list[dict[str, int]], entries: list[object]):
        # Document frequency counts entries, not examples: a term that every entry uses tells none apart.
        terms_of: dict[object, set[str]] = defaultdict(set)
        for document, entry in zip(counts, entries, strict=True):
            terms_of[entry].update(document)
        entry_count = len(terms_of)
        frequency = Counter(term for terms in terms_of.values() for term in terms)
        self.idf = {term: math.log((1 + entry_count) / (1 + seen)) + 1 for term, seen in frequency.items()}
        self.unseen_idf = math.log(1 + entry_count) + 1
        self.vectors = [self.weigh(document) for document in counts]
        self.postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for index, vector in enumerate(self.vectors):
            for posting in vector.items():
                self.postings[posting[0]].append((index, posting[1]))

    def weigh(self, counts: dict[str, int]) -> dict[str, float]:
        """A unit vector; a term no example has still counts in its length, so unknown words lower the scores."""
        idf, unseen = self.idf, self.unseen_idf
        return unit({term: (1 + math.log(n) if n > 1 else 1) * idf.get(term, unseen) for term, n in counts.items()})

    def similarities(self, query: dict[str, float]) -> dict[int, float]:
        scores: dict[int, float] = defaultdict(float)
        for term, weight in query.items():
            for index, example_weight in self.postings.get(term, ()):
                scores[index] += weight * example_weight
        return scores


@dataclass(frozen=True)
class _View:
    """What a message in one language is compared with: each entry's examples in that language (all of
    its examples when it has none in it), and each entry's centroids over those."""

    examples: frozenset[int]
    centroids: dict[object, tuple[dict[str, float], dict[str, float]]]


class IntentMatcher:
    """Built once per set of FAQ entries from (key, intent, language, text) examples; match() only reads,
    so one matcher serves every thread."""

    def __init__(self, examples: Iterable[tuple[object, str, str, str]]):
        rows = [(key, intent, language_code(language), term_counts(text)) for key, intent, language, text in examples]
        rows = [row for row in rows if row[3][0]]
        self.keys = [key for key, _intent, _language, _counts in rows]
        self.intent_of = {key: intent for key, intent, _language, _counts in rows}
        languages = [language for _key, _intent, language, _counts in rows]
        self.words = _Space([stems for *_, (stems, _grams) in rows], self.keys)
        self.grams = _Space([grams for *_, (_stems, grams) in rows], self.keys)
        self.views = {language: self._view(language, languages) for language in set(languages)}

    @property
    def intents(self) -> set[str]:
        return set(self.intent_of.values())

    def match(self, text: str, language: str | None = None) -> IntentMatch:
        """The best entry for a message. In a language no example has, or none given, each language's
        examples are tried and the best entry of any wins."""
        stem_counts, gram_counts = term_counts(text)
        if not self.keys or not stem_counts:
            return NO_MATCH
        words, grams = self.words.weigh(stem_counts), self.grams.weigh(gram_counts)
        word_scores, gram_scores = self.words.similarities(words), self.grams.similarities(grams)
        code = language_code(language)
        views = [self.views[code]] if code in self.views else self.views.values()
        scores: dict[object, float] = {}
        for view in views:
            for key, example in self._closest_examples(word_scores, gram_scores, view).items():
                score = BEST_EXAMPLE_WEIGHT * example + (1 - BEST_EXAMPLE_WEIGHT) * self._similarity(
                    words, grams, *view.centroids[key]
                )
                scores[key] = max(score, scores.get(key, 0.0))
        if not scores:
            return NO_MATCH
        best = max(scores, key=scores.__getitem__)
        return IntentMatch(key=best, intent=self.intent_of[best], confidence=confidence(scores[best]))

    def _closest_examples(self, word_scores: dict, gram_scores: dict, view: _View) -> dict[object, float]:
        """Each entry's best similarity with one of its examples in the view."""
        closest: dict[object, float] = defaultdict(float)
        for index in (word_scores.keys() | gram_scores.keys()) & view.examples:
            similarity = WORD_WEIGHT * word_scores.get(index, 0.0) + (1 - WORD_WEIGHT) * gram_scores.get(index, 0.0)
            key = self.keys[index]
            closest[key] = max(closest[key], similarity)
        return closest

    @staticmethod
    def _similarity(words: dict, grams: dict, word_vector: dict, gram_vector: dict) -> float:
        return WORD_WEIGHT * dot(words, word_vector) + (1 - WORD_WEIGHT) * dot(grams, gram_vector)

    def _view(self, language: str | None, languages: list[str | None]) -> _View:
        by_key: dict[object, list[int]] = defaultdict(list)
        for index, key in enumerate(self.keys):
            by_key[key].append(index)
        chosen = {key: [i for i in indexes if languages[i] == language] or indexes for key, indexes in by_key.items()}
        return _View(
            examples=frozenset(i for indexes in chosen.values() for i in indexes),
            centroids={
                key: (
                    centroid([self.words.vectors[i] for i in indexes]),
                    centroid([self.grams.vectors[i] for i in indexes]),
                )
                for key, indexes in chosen.items()
            },
        )


def language_code(language: str | None) -> str | None:
    """A language tag by its first part ("ru-RU", "ru_RU" and "RU" are "ru"); None for "" or None."""
    return re.split(r"[-_]", language.strip().lower())[0] or None if language else None
