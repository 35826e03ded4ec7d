"""The causal LM as a likelihood scorer: for every summary token, log p(token | source, summary prefix) and
log p(token | summary prefix alone). Their difference is the token's pointwise mutual information with the source:
a token the source makes likelier (a name, a number, a fact it states) has positive PMI; a token the source does
not support, or contradicts, has PMI near zero or below.

The source is encoded once per document and its KV cache is shared by every summary of that document (SummEdits
has ~30 summaries per document), so scoring costs one source pass plus a short pass per summary.
Long sources keep their first `max_source_tokens` tokens (the built-in SmolLM2 reads 8,192 positions; every source
of the benchmark sets fits in the default 2,048 whole).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_LM = "smollm2"
SOURCE_HEADER = "Document:\n{source}\n\n"
QUERY_HEADER = "Question: {query}\n"
SUMMARY_HEADER = "Summary:\n"   # the same words before the summary with and without the source: PMI isolates it


@dataclass
class TokenScores:
    """One summary's tokens with their character offsets and the two log-probabilities of each."""

    offsets: list[tuple[int, int]]
    conditional: np.ndarray       # log p(token | source [, query], prefix)
    unconditional: np.ndarray     # log p(token | [query,] prefix)
    truncated_source: bool = False

    @property
    def pmi(self) -> np.ndarray:
        return self.conditional - self.unconditional


@dataclass
class LikelihoodScorer:
    """A causal LM (the built-in SmolLM2 by default) that scores summaries against sources."""

    model: Any
    tokenizer: Any
    max_source_tokens: int = 2048
    batch_size: int = 8
    base: str = DEFAULT_LM
    _torch: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, base: str = DEFAULT_LM, *, max_source_tokens: int = 2048, batch_size: int = 8,
             threads: int | None = None) -> "LikelihoodScorer":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tunewise.models import resolve_base_model

        if threads:
            torch.set_num_threads(threads)
        path = resolve_base_model(base).path
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # fp32: bf16 not measured equal
        model.eval()
        return cls(model, tokenizer, max_source_tokens, batch_size, base, torch)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, source: str, summaries: list[str], query: str | None = None) -> list[TokenScores]:
        """Token scores of each summary of one source (the source is encoded once)."""
        source_ids = self._ids(SOURCE_HEADER.format(source=source))
        truncated = len(source_ids) > self.max_source_tokens
        if truncated:  # keep the start; the header's closing blank line stays so the summary follows as usual
            source_ids = source_ids[:self.max_source_tokens - 2] + self._ids("\n\n")
        tail = (QUERY_HEADER.format(query=query) if query else "") + SUMMARY_HEADER
        encoded = [self.tokenizer(s, add_special_tokens=False, return_offsets_mapping=True) for s in summaries]
        cond = self._logprobs(source_ids + self._ids(tail), [e["input_ids"] for e in encoded])
        uncond = self._logprobs(self._ids(tail), [e["input_ids"] for e in encoded])
        return [TokenScores([tuple(o) for o in e["offset_mapping"]], c, u, truncated)
                for e, c, u in zip(encoded, cond, uncond)]

    def _logprobs(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        """log p of each continuation's tokens after `prefix`; the prefix's KV cache is computed once and
        repeated over a batch of right-padded continuations (padding comes after every real token, so the causal
        mask alone keeps it out)."""
        torch = self._torch
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(continuations)
        with torch.inference_mode():
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)  # passed in, as `cache=` (past_key_values is deprecated)
            first = self.model(input_ids=torch.tensor([prefix]), cache=cache, use_cache=True, logits_to_keep=1)
            last = first.logits[0, -1].float().log_softmax(-1)
            order = [i for i in sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
                     if continuations[i]]
            pad = self.tokenizer.pad_token_id or 0
            for b in range(0, len(order), self.batch_size):
                batch = order[b:b + self.batch_size]
                width = max(len(continuations[i]) for i in batch)
                ids = torch.tensor([continuations[i] + [pad] * (width - len(continuations[i])) for i in batch])
                shared = copy.deepcopy(cache)
                shared.batch_repeat_interleave(len(batch))
                logits = self.model(input_ids=ids, cache=shared, use_cache=True).logits.float()
                logp = logits.log_softmax(-1)
                for row, i in enumerate(batch):
                    tokens = continuations[i]
                    n = len(tokens)
                    values = np.empty(n, dtype=np.float32)
                    values[0] = last[tokens[0]].item()
                    if n > 1:
                        idx = torch.tensor(tokens[1:])
                        values[1:] = logp[row, torch.arange(n - 1), idx].numpy()
                    out[i] = values
        return out
