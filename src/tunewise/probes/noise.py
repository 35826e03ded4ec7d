"""Seeded text noise for the robustness probes: typos, casing, punctuation and whitespace.

Each text gets its own generator, seeded by (recipe seed, noise kind, text position), so a text's noisy form does
not depend on the other texts' content or on which noise kinds run before it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

import numpy as np

KINDS = ("typos", "casing", "punctuation", "whitespace")
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# letters next to each other on a QWERTY keyboard (same row and the rows above and below)
NEIGHBOURS = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        near = {_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)}
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_ROWS):
                near |= {_ROWS[_other][j] for j in (_c - 1, _c, _c + 1) if 0 <= j < len(_ROWS[_other])}
        NEIGHBOURS[_ch] = "".join(sorted(near))
MARKS = ".,!?"
_WORD = re.compile(r"[A-Za-z]{3,}")
_CASED = re.compile(r"\S*[A-Za-z]\S*")


def _typo(word: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(len(word)))
    op = int(rng.integers(4))
    if op == 0:                                   # a dropped letter
        return word[:i] + word[i + 1:]
    if op == 1:                                   # a doubled letter
        return word[:i] + word[i] + word[i:]
    if op == 2:                                   # two neighbouring letters swapped
        i = min(i, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    near = NEIGHBOURS.get(word[i].lower(), "")    # a neighbouring key
    if not near:
        return word[:i] + word[i + 1:]
    ch = near[int(rng.integers(len(near)))]
    return word[:i] + (ch.upper() if word[i].isupper() else ch) + word[i + 1:]


def typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """One typo in each word of 3+ letters with probability `rate`."""
    return _WORD.sub(lambda m: _typo(m.group(0), rng) if rng.random() < rate else m.group(0), text)


def casing(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each word, with probability `rate`, in another of lower, UPPER or Title case."""
    def change(m: re.Match) -> str:
        word = m.group(0)
        if rng.random() >= rate:
            return word
        options = [w for w in (word.lower(), word.upper(), word.capitalize()) if w != word]
        return options[int(rng.integers(len(options)))] if options else word
    return _CASED.sub(change, text)


def punctuation(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each punctuation mark dropped with probability `rate`; a stray mark after a word with probability
    `rate / 5`."""
    out = []
    for i, ch in enumerate(text):
        if ch in string.punctuation and rng.random() < rate:
            continue
        out.append(ch)
        word_end = ch.isalnum() and (i + 1 == len(text) or not text[i + 1].isalnum())
        if word_end and rng.random() < rate / 5:
            out.append(MARKS[int(rng.integers(len(MARKS)))])
    return "".join(out)


def whitespace(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each space, with probability `rate`, removed (words run together) or doubled, half and half."""
    out = []
    for ch in text:
        if ch == " " and rng.random() < rate:
            if rng.random() < 0.5:
                continue
            out.append(" ")
        out.append(ch)
    return "".join(out)


NOISE: dict[str, Callable[[str, float, np.random.Generator], str]] = {
    "typos": typos, "casing": casing, "punctuation": punctuation, "whitespace": whitespace}


def add_noise(texts: list[str], kind: str, rate: float, seed: int) -> list[str]:
    """The noisy form of every text; text i's generator is seeded by (seed, kind, i)."""
    fn, k = NOISE[kind], KINDS.index(kind)
    return [fn(t, rate, np.random.default_rng([seed, k, i])) for i, t in enumerate(texts)]
