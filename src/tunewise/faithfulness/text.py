"""Text pieces of the faithfulness checker: summary sentences, the evidence window a claim is checked against,
and the transparent checks (numbers, names and dates in a claim that the source never mentions).

Pure Python (no torch): the data-prep script (examples/data/make_faithfulness.py) builds the checker's training
pairs with the same `evidence` function the stage uses at scoring time, so the model sees one input shape.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
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
EVIDENCE_GAP = " … "  # joins evidence units that are not adjacent in the source


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


def source_units(source: str) -> list[str]:
    """The units evidence is picked from: the turns of a dialogue (one per line), else sentences."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    if len(lines) >= 3:
        units = []
        for line in lines:  # a very long turn or paragraph is split into its sentences
            units.extend([s.text for s in sentence_spans(line)] if len(line) > 400 else [line])
        return units
    return [s.text for s in sentence_spans(source)]


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str) -> list[str]:
    stop = _stop_words()
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in stop]


def evidence(source: str, claim: str, budget_chars: int) -> str:
    """The parts of `source` a claim is checked against, at most about `budget_chars` long: the whole source when
    it fits; else the units that share the most rare words with the claim (IDF over the source's units), plus
    the first unit (a dialogue's or article's setting), in source order, gaps marked with ' … '."""
    if len(source) <= budget_chars:
        return source
    units = source_units(source)
    if len(units) <= 1:
        return source[:budget_chars]
    words = [set(content_words(u)) for u in units]
    df = Counter(w for ws in words for w in ws)
    claim_words = set(content_words(claim))
    n = len(units)

    def score(i: int) -> float:
        return sum(math.log(1 + n / df[w]) for w in words[i] & claim_words) / math.sqrt(1 + len(words[i]))

    chosen = {0}
    used = len(units[0])
    for i in sorted(range(1, n), key=lambda i: (-score(i), i)):
        if score(i) <= 0 or used + len(units[i]) > budget_chars:
            continue
        chosen.add(i)
        used += len(units[i]) + 1
    parts, previous = [], -1
    for i in sorted(chosen):
        if parts:
            parts.append("\n" if i == previous + 1 else EVIDENCE_GAP)
        parts.append(units[i][:budget_chars])
        previous = i
    return "".join(parts)


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
