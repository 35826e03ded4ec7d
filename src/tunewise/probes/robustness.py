"""Robustness probes: the same texts clean and with seeded noise (typos, casing, punctuation, whitespace), the
metric's drop paired by text.

Classifiers: accuracy, with an exact McNemar test. Generation and chat: sentence chrF (sacrebleu) of replies to
the clean and the noisy prompts against the references, with a Wilcoxon signed-rank test; only the user messages
are disturbed, never the references.
"""

from __future__ import annotations

import numpy as np

from tunewise.probes.noise import add_noise
from tunewise.probes.stats import Boot, mcnemar_p, mean_estimate, wilcoxon_p


def classifier_probe(kind: str, rate: float, texts: list[str], noisy: list[str], y: np.ndarray,
                     probs: dict[str, np.ndarray], boot: Boot) -> dict:
    clean_ok = np.array([probs[t].argmax() for t in texts]) == y
    noisy_ok = np.array([probs[t].argmax() for t in noisy]) == y
    return {"metric": "accuracy", "rate": rate, "clean": float(clean_ok.mean()), "noisy": float(noisy_ok.mean()),
            "drop": mean_estimate(clean_ok.astype(float) - noisy_ok.astype(float), boot),
            "p_value": mcnemar_p(clean_ok, noisy_ok), "test": "exact McNemar (paired correct/incorrect)",
            "n_changed": int(sum(a != b for a, b in zip(texts, noisy)))}


def noisy_examples(examples, kind: str, rate: float, seed: int):
    """Copies of causal-LM examples whose user messages carry the noise (system prompt and replies untouched)."""
    from dataclasses import replace

    users = [[m["content"] for m in ex.messages if m["role"] == "user"] for ex in examples]
    flat = add_noise([u for us in users for u in us], kind, rate, seed)
    out, k = [], 0
    for ex in examples:
        messages = []
        for m in ex.messages:
            if m["role"] == "user":
                m = {**m, "content": flat[k]}
                k += 1
            messages.append(m)
        out.append(replace(ex, messages=messages))
    return out


def sentence_chrf(outputs: list[str], references: list[list[str]]) -> np.ndarray:
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return np.array([chrf.sentence_score(o, refs).score for o, refs in zip(outputs, references)])


def generation_probe(kind: str, rate: float, clean_scores: np.ndarray, noisy_scores: np.ndarray,
                     n_changed: int, boot: Boot) -> dict:
    diff = clean_scores - noisy_scores
    return {"metric": "chrf", "rate": rate, "clean": float(clean_scores.mean()), "noisy": float(noisy_scores.mean()),
            "drop": mean_estimate(diff, boot), "p_value": wilcoxon_p(diff),
            "test": "Wilcoxon signed-rank (paired sentence chrF)", "n_changed": n_changed}
