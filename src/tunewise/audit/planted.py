"""Paraphrase-level perturbations for planting known problems in real text: the audit's recall tests and
bench/audit.py use the same edits, so the recall they report is measured against the same kind of near-copy."""

from __future__ import annotations

import random

FILLERS = ("please", "actually", "really", "now", "just", "again", "today")
SYNONYMS = {"card": "cards", "money": "funds", "help": "assist", "get": "receive", "want": "wish", "my": "the"}


def paraphrase(text: str, rng: random.Random, *, fillers=FILLERS, synonyms=SYNONYMS) -> str:
    """Casing and punctuation changes, plus one word inserted, dropped, swapped or replaced by a synonym."""
    words = text.rstrip("?.!").split()
    kind = rng.choice(["insert", "delete", "swap", "synonym"])
    i = rng.randrange(1, len(words) - 1)
    if kind == "insert":
        words.insert(i, rng.choice(fillers))
    elif kind == "delete":
        del words[i]
    elif kind == "swap":
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        j = next((k for k, w in enumerate(words) if w.lower() in synonyms), i)
        words[j] = synonyms.get(words[j].lower(), rng.choice(fillers))
    out = " ".join(words)
    return (out.lower() if rng.random() < 0.5 else out) + rng.choice(["", "?", "!!", " ."])
