"""Text normalisation shared by every audit check.

Two forms of a text:
- `exact_form`: Unicode NFKC, invisible format characters removed, whitespace collapsed. Two rows are exact
  duplicates when their exact forms are equal ("Café", "Cafe\u0301" and "Café\u200b " are one text).
- `words`: the exact form case-folded, with punctuation dropped, split into words. Near-duplicate shingles,
  n-gram leakage and the near-empty check use it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# zero-width space/joiners, word joiner, BOM, soft hyphen, bidi marks: invisible, so never a real difference
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SPACE = re.compile(r"\s+")
NON_WORD = re.compile(r"[\W_]+")


def exact_form(text: str) -> str:
    """NFKC, invisible characters removed, runs of whitespace made one space, ends stripped."""
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = _INVISIBLE.sub("", text)
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Case-folded words of the exact form, punctuation and symbols dropped."""
    return NON_WORD.sub(" ", exact_form(text).casefold()).split()


def key64(form: str) -> int:
    """A stable 64-bit key of a normalised text (BLAKE2b), the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(form.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def content_chars(text: str) -> int:
    """Letters and digits in the text: the near-empty check's measure."""
    return sum(ch.isalnum() for ch in text)


def word_ngrams(tokens: list[str], n: int) -> list[str]:
    """Consecutive n-word windows, as strings."""
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def snippet(text: str, limit: int = 160) -> str:
    """A one-line excerpt for findings and cards."""
    flat = _SPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
