"""Per-row features of logged text, computed the same way for the reference split and for every window:
characters, words, model tokens, the share of words outside the training vocabulary; for causal LMs the reply's
length, refusals and empty replies. Vectorised over a chunk of rows (one tokenizer call per chunk)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)
TOKENIZATION = "lower-cased \\w+ runs (Unicode)"

# Opening phrases of refusals in English assistant replies (the usual markers: apologies, "as an AI", inability).
REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry, (but )?i|i can(no|')t|i cannot|i'?m (not able|unable)|"
                     r"i am (not able|unable)|i won'?t|as an ai|i'?m just an ai|unfortunately,? i can)",
                     re.IGNORECASE)

NUMERIC_DESCRIPTIONS = {
    "chars": "Characters in the input text.",
    "words": "Words (\\w+ runs) in the input text.",
    "tokens": "Tokens of the model's own tokenizer in the input text (no special tokens).",
    "oov_rate": "Share of the text's words missing from the training vocabulary (0 for a text without words).",
    "confidence": "The model's top-class probability.",
    "response_tokens": "Tokens in the model's reply.",
    "guard_score": "The injection guard's score of the prompt.",
}
CATEGORICAL_DESCRIPTIONS = {
    "prediction": "The model's predicted label.",
    "label": "The true label (feedback rows only): label shift.",
    "refusal": "Whether the reply opens like a refusal (yes/no).",
    "empty": "Whether the reply is empty or whitespace (yes/no).",
}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], size: int) -> tuple[list[str], int]:
    """The `size` most frequent words (ties by first appearance) and the number of distinct words."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return [w for w, _ in counts.most_common(size)], len(counts)


class TextFeatures:
    """Computes the numeric text features of a chunk of texts."""

    def __init__(self, vocabulary: Sequence[str], tokenizer=None):
        self.vocabulary = frozenset(vocabulary)
        self.tokenizer = tokenizer
        # a fast tokenizer's Rust backend counts tokens ~4x cheaper than the Python wrapper (no BatchEncoding);
        # a copy, with truncation and padding off, since the wrapper re-sets them on the shared one per call
        self._backend = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(backend.to_str())
            self._backend.no_truncation()
            self._backend.no_padding()

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        split = [words(t) for t in texts]
        n_words = np.fromiter((len(w) for w in split), float, len(split))
        oov = np.fromiter((sum(x not in self.vocabulary for x in w) for w in split), float, len(split))
        out = {"chars": np.fromiter((len(t) for t in texts), float, len(texts)),
               "words": n_words,
               "oov_rate": np.divide(oov, n_words, out=np.zeros_like(oov), where=n_words > 0)}
        if self.tokenizer is not None:
            out["tokens"] = self.token_counts(texts)
        return out

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        if self._backend is not None:
            encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
            return np.fromiter((len(e) for e in encodings), float, len(encodings))
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return np.fromiter((len(x) for x in ids), float, len(ids))

    def oov_words(self, texts: Iterable[str]) -> tuple[int, int]:
        """(words outside the vocabulary, words) over all texts."""
        total = missing = 0
        for text in texts:
            w = words(text)
            total += len(w)
            missing += sum(x not in self.vocabulary for x in w)
        return missing, total


def reply_flags(replies: Sequence[str]) -> dict[str, list[str]]:
    """refusal and empty as yes/no per reply."""
    return {"refusal": ["yes" if REFUSAL.match(r or "") else "no" for r in replies],
            "empty": ["yes" if not (r or "").strip() else "no" for r in replies]}
