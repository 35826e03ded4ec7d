"""Features of one claim (a summary, or one of its sentences) against its source, from the LM's token scores and
the text: how much the source raises the claim's tokens (PMI), how unlikely its least likely tokens stay given the
source, and the transparent checks (content words, numbers and names the source never mentions, negation).

Pure numpy on `TokenScores`, so the benchmark can cache the LM pass once and refit the combination freely.
"""

from __future__ import annotations

import re

import numpy as np

from tunewise.faithfulness.text import Span, content_words, stop_words, unsupported_facts

FEATURES = (
    "pmi_mean",             # mean over tokens of log p(t | source, prefix) - log p(t | prefix)
    "pmi_q10",              # its 10th percentile: the tokens the source supports least
    "pmi_min_word",         # the lowest PMI of a content word's first token
    "cond_mean",            # mean log p(t | source, prefix)
    "cond_q10",             # its 10th percentile
    "low_tokens",           # share of tokens the source does not raise (PMI < 0) that stay unlikely (cond < -3)
    "novel_content",        # share of content words absent from the source
    "novel_numbers",        # numbers (digits or words) the source never states
    "novel_names",          # capitalised words and dates the source never mentions
    "novel_negation",       # negations in the claim ("not paid") that the source never states
    "log_tokens",           # log number of tokens
)
LOW_PMI = 0.0          # a token the source does not make likelier ...
LOW_CONDITIONAL = -3.0  # ... and that stays unlikely given the source: shown as an unsupported span
_NEGATED = re.compile(r"\b(not|no|never|none|nobody|nothing|neither|nor|without|cannot|\w+n['’]t)\s+(\w+)", re.I)


def token_range(offsets: list[tuple[int, int]], span: Span | None) -> np.ndarray:
    """Indices of the tokens inside a character span (all tokens for None)."""
    if span is None:
        return np.arange(len(offsets))
    return np.array([i for i, (a, b) in enumerate(offsets) if b > span.start and a < span.end], dtype=int)


def claim_features(text: str, source: str, offsets: list[tuple[int, int]], conditional: np.ndarray,
                   unconditional: np.ndarray, span: Span | None = None) -> np.ndarray:
    """The FEATURES of `text` (the whole summary) or of one sentence `span` of it, in FEATURES order."""
    idx = token_range(offsets, span)
    claim = text if span is None else text[span.start:span.end]
    base = 0 if span is None else span.start
    if len(idx) == 0:
        return np.zeros(len(FEATURES))
    cond, pmi = conditional[idx], (conditional - unconditional)[idx]
    starts = _content_word_starts(claim, base)
    word_tokens = [i for i in idx if offsets[i][0] in starts or (offsets[i][0] + 1) in starts]
    pmi_words = (conditional - unconditional)[word_tokens] if word_tokens else pmi
    source_lower = source.lower()
    words = content_words(claim)
    source_words = set(content_words(source))
    facts = unsupported_facts(claim, source)
    return np.array([
        pmi.mean(), np.percentile(pmi, 10), pmi_words.min(), cond.mean(), np.percentile(cond, 10),
        float(((pmi < LOW_PMI) & (cond < LOW_CONDITIONAL)).mean()),
        float(np.mean([w not in source_words for w in words])) if words else 0.0,
        float(sum(f.kind in ("number", "number_word") for f in facts)),
        float(sum(f.kind in ("name", "date") for f in facts)),
        float(len(_negated(claim) - _negated(source_lower))),
        float(np.log(len(idx))),
    ])


def _negated(text: str) -> set[str]:
    """Negated words ("not" + the next word), so "did not pay" in a claim needs "not pay" in the source."""
    return {f"{m.group(1).lower()} {m.group(2).lower()}" for m in _NEGATED.finditer(text)}


def _content_word_starts(claim: str, base: int) -> set[int]:
    stop = stop_words()  # the stop list content_words uses
    return {base + m.start() for m in re.finditer(r"\w+", claim) if m.group(0).lower() not in stop}


def low_support_spans(text: str, offsets: list[tuple[int, int]], conditional: np.ndarray,
                      unconditional: np.ndarray) -> list[Span]:
    """Words holding a token the source does not raise (PMI < 0) and that stays unlikely given the source
    (log p < -3): the spans the report highlights. Adjacent words merge into one span."""
    pmi = conditional - unconditional
    bad = [(a, b) for (a, b), p, c in zip(offsets, pmi, conditional) if p < LOW_PMI and c < LOW_CONDITIONAL]
    spans: list[list[int]] = []
    for a, b in bad:
        m = next((w for w in re.finditer(r"\w+", text) if w.start() <= a < w.end() or a <= w.start() < b), None)
        if m is None:
            continue
        if spans and m.start() <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], m.end())
        else:
            spans.append([m.start(), m.end()])
    return [Span(a, b, text[a:b], "low_support") for a, b in spans]
