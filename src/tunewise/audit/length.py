"""Example lengths in the base model's tokens, and how many rows model.max_length truncates.

The tokenizer is loaded alone, never the model weights: from the model folder, or straight from a GGUF file
(built-in smollm2), so the audit does not trigger a model conversion. When no tokenizer can be loaded (an
offline hub id, a missing package) lengths are estimated as 1.3 tokens per whitespace word, and the finding
says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

WORDS_TO_TOKENS = 1.3


def load_tokenizer(base: str) -> tuple[Any | None, str]:
    """(tokenizer or None, how lengths are measured: a phrase for findings and cards)."""
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from tunewise.models import BUILTIN_MODELS, resolve_base_model

        builtin = BUILTIN_MODELS.get(base)
        gguf: Path | None = None
        if builtin is not None and getattr(builtin, "gguf_file", None):
            gguf = builtin.path()
        elif base.endswith(".gguf") and Path(base).is_file():
            gguf = Path(base)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            if gguf is not None:
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            else:
                tok = AutoTokenizer.from_pretrained(resolve_base_model(base).path)
        finally:
            hf_logging.set_verbosity(verbosity)
        return tok, f"tokens of the `{base}` tokenizer"
    except Exception as exc:  # any failure to load falls back to an estimate, and says why
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return None, (f"estimated tokens ({WORDS_TO_TOKENS} per whitespace word): the `{base}` tokenizer could not "
                      f"be loaded ({reason})")


class LengthCounter:
    """Token lengths of batches of texts (classification) or messages (generation, chat)."""

    def __init__(self, tokenizer: Any | None):
        self.tok = tokenizer
        self._message_overhead: float | None = None

    def _count(self, texts: list[str], special: bool) -> np.ndarray:
        if self.tok is None:
            return np.array([math.ceil(len(t.split()) * WORDS_TO_TOKENS) for t in texts], dtype=np.int64)
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "sequence length is longer than the maximum": that is what we measure
        try:
            ids = self.tok(texts, add_special_tokens=special, truncation=False)["input_ids"]
        finally:
            hf_logging.set_verbosity(verbosity)
        return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))

    def texts(self, texts: list[str]) -> np.ndarray:
        return self._count(texts, special=True)

    def conversations(self, conversations: list[list[dict[str, Any]]]) -> np.ndarray:
        """Tokens of each conversation: its messages' contents plus the chat template's per-message overhead,
        measured once on the first conversation (0 without a template)."""
        flat = [m["content"] for conv in conversations for m in conv]
        per_message = self._count(flat, special=False) if flat else np.empty(0, dtype=np.int64)
        sizes = np.array([len(conv) for conv in conversations], dtype=np.int64)
        totals = np.add.reduceat(per_message, np.concatenate([[0], np.cumsum(sizes)[:-1]])) if len(flat) else sizes * 0
        if self._message_overhead is None:
            self._message_overhead = self._overhead(conversations[0], int(totals[0])) if conversations else 0.0
        return totals + np.round(self._message_overhead * sizes).astype(np.int64)

    def _overhead(self, conversation: list[dict[str, Any]], content_tokens: int) -> float:
        if self.tok is None or not getattr(self.tok, "chat_template", None):
            return 0.0
        try:
            ids = self.tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in conversation],
                                               tokenize=True)
            n = len(ids["input_ids"]) if isinstance(ids, dict) or hasattr(ids, "keys") else len(ids)
        except Exception:  # a template that rejects the roles: measure contents only
            return 0.0
        return max(0.0, (n - content_tokens) / max(1, len(conversation)))
