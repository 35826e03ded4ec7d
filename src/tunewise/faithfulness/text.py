"""Text pieces of the faithfulness checker: summary sentences, content words, and the transparent checks
(numbers, names and dates in a claim that the source never mentions). Pure Python (no torch)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# A sentence ends at . ! ? (optionally closed by a quote or bracket) before whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])[$£€]?\d+(?:[.,]\d+)*%?")
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
                "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "hundred": "100",
                "thousand": "1000", "million": "1000000", "billion": "1000000000"}


@dataclass(frozen=True)
class Span:
    """A character span of a text: [start, end) and what it is."""

    start: int
    end: int
    text: str
    kind: str  # "sentence", or a transparent check's kind: "number", "name", "date"


def sentence_spans(text: str) -> list[Span]:
    """The sentences of a summary as spans (a text without sentence ends is one sentence)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        _add_span(spans, text, start, match.end())  # the span is stripped: closing quotes stay, spaces go
        start = match.end()
    _add_span(spans, text, start, len(text))
    return spans


def _add_span(spans: list[Span], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    piece = piece.strip()
    if _WORD.search(piece):
        spans.append(Span(start + lead, start + lead + len(piece), piece, "sentence"))


@functools.lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str) -> list[str]:
    stop = stop_words()
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in stop]


# ---------------------------------------------------------------- transparent checks


def _number_key(token: str) -> str:
    """A number as comparable text: no currency sign, thousands separators or trailing zeros after a point."""
    t = token.strip("$£€%").replace(",", "")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return t


def _source_facts(source: str) -> tuple[set[str], set[str]]:
    words = {m.group(0).lower() for m in _WORD.finditer(source)}
    numbers = {_number_key(m.group(0)) for m in _NUMBER.finditer(source)}
    numbers |= {value for word, value in NUMBER_WORDS.items() if word in words}
    return words, numbers


def unsupported_facts(claim: str, source: str) -> list[Span]:
    """Numbers, names and dates in `claim` that `source` never mentions (case-insensitive; a number matches its
    digits or its word, "three" = "3"). Kinds: `number` (digits), `number_word` ("three"), `name` (a capitalised
    word not at a sentence start), `date` (a month or weekday name); each is one span."""
    words, numbers = _source_facts(source)
    found: list[Span] = []
    for m in _NUMBER.finditer(claim):
        if _number_key(m.group(0)) not in numbers:
            found.append(Span(m.start(), m.end(), m.group(0), "number"))
    sentence_starts = {s.start for s in sentence_spans(claim)}
    for m in _CAPITALISED.finditer(claim):
        token = m.group(0).rstrip("'’-")
        base = re.sub(r"['’]s$", "", token).lower()
        if m.start() in sentence_starts or base in words or base in NUMBER_WORDS:
            continue
        kind = "date" if base in MONTHS else "name"
        found.append(Span(m.start(), m.start() + len(token), token, kind))
    for m in _WORD.finditer(claim):  # number words ("three") whose value the source never states
        value = NUMBER_WORDS.get(m.group(0).lower())
        if value is not None and value not in numbers and m.group(0).lower() not in words:
            found.append(Span(m.start(), m.end(), m.group(0), "number_word"))
    return sorted(found, key=lambda s: s.start)
