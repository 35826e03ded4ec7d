"""Example lengths in the base model's tokens, and how many rows model.max_length truncates.

The tokenizer is loaded alone, never the model weights: from the model folder, or straight from a GGUF file
(built-in smollm2), so the audit does not trigger a model conversion. A base model that cannot be used here (a
path that does not exist, a folder with only pickle weights, a tokenizer that does not load) is a ModelError at
the audit, as it would be at train. Only a hub id that cannot be fetched here (offline) falls back to an
estimate of 1.3 tokens per whitespace word; the length check then reports a warning saying so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

WORDS_TO_TOKENS = 1.3


def load_tokenizer(base: str) -> tuple[Any | None, str]:
    """(tokenizer or None, how lengths are measured: a phrase for findings and cards). ModelError when the base
    model is unusable; None (an estimate) only for a hub id that cannot be fetched here."""
    from tunewise.errors import ModelError
    from tunewise.models import BUILTIN_MODELS, resolve_base_model

    builtin = BUILTIN_MODELS.get(base)
    gguf: Path | None = None
    if builtin is not None and getattr(builtin, "gguf_file", None):
        gguf = builtin.path()
    elif base.endswith(".gguf") and Path(base).is_file():
        gguf = Path(base)
    folder: Path | None = None
    if gguf is None:
        try:
            folder = resolve_base_model(base).path
        except ModelError as exc:
            if not is_hub_id(base):
                raise ModelError(f"audit: {exc} (the length check counts rows in this model's tokens; "
                                 f"training would fail the same way)") from None
            return None, _estimated(base, str(exc))
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            if gguf is not None:
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            else:
                tok = AutoTokenizer.from_pretrained(folder)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as exc:  # transformers raises many kinds for a broken tokenizer
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"audit: the tokenizer of model.base `{base}` ({gguf or folder}) could not be loaded "
                         f"({type(exc).__name__}: {reason}); the length check needs it, and so does training") from None
    return tok, f"tokens of the `{base}` tokenizer"


def is_hub_id(base: str) -> bool:
    """`org/name` that is not a local path: it may exist on the hub even when it cannot be fetched here."""
    return base.count("/") == 1 and not base.startswith((".", "/", "~")) and not Path(base).exists()


def _estimated(base: str, why: str) -> str:
    reason = why.splitlines()[0][:200] if why else "unknown reason"
    return (f"estimated tokens ({WORDS_TO_TOKENS} per whitespace word): the `{base}` tokenizer could not "
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
