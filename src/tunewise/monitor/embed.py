"""Sentence embeddings from the built-in MiniLM (sentence-transformers/all-MiniLM-L6-v2): mean pooling over the
attention mask, L2-normalised, as sentence-transformers computes them. The same embedder serves every task (a
causal LM's prompts too), so the reference and every window live in one space."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EMBEDDING_MODEL = "minilm"
MAX_LENGTH = 128


class Embedder:
    """`Embedder()(texts) -> float32 [n, 384]`, batched, length-sorted to cut padding, order kept."""

    def __init__(self, batch_size: int = 64, max_length: int = MAX_LENGTH):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from tunewise.models import resolve_base_model

        resolved = resolve_base_model(EMBEDDING_MODEL)
        self.description = f"{resolved.hub_id} (mean pooling, L2-normalised)"
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        self.model = AutoModel.from_pretrained(resolved.path, use_safetensors=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self._torch = torch

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
