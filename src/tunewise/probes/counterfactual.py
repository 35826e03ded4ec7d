"""Counterfactual identity-term probes for classifiers: swap the terms of a family in each test text and see
whether the prediction moves.

A text that mentions a family's terms gets one variant per cyclic shift of the family's groups
(`kit.identity_terms`); its predicted label flips when a variant's top class differs from the original's. The
flip rate is flipped variants over variants, resampled by text (a text's variants move together).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunewise.kit.identity_terms import Family
from tunewise.probes.stats import Boot, ratio_estimate


@dataclass
class TextVariants:
    index: int            # position of the text among the probed rows
    variants: list[str]


def variants_of(family: Family, texts: list[str]) -> list[TextVariants]:
    """The texts that mention the family, with their counterfactual variants."""
    out = []
    for i, text in enumerate(texts):
        vs = [v for _, v in family.variants(text)]
        if vs:
            out.append(TextVariants(i, vs))
    return out


def family_result(family: Family, found: list[TextVariants], rows, texts: list[str], labels: list[str],
                  probs: dict[str, np.ndarray], boot: Boot, top: int) -> tuple[dict, list[dict]]:
    """The family's CounterfactualFamily fields, and one record per variant (for probes/counterfactual.jsonl).
    `probs` maps every text (original or variant) to its class probabilities."""
    flips, counts, shifts, abs_shifts, ranked, records = [], [], [], [], [], []
    for tv in found:
        original = texts[tv.index]
        p0 = probs[original]
        pred = int(p0.argmax())
        pv = np.stack([probs[v] for v in tv.variants])
        flipped = pv.argmax(1) != pred
        shift = pv[:, pred] - p0[pred]
        flips.append(int(flipped.sum()))
        counts.append(len(tv.variants))
        shifts.append(float(shift.sum()))
        abs_shifts.append(float(np.abs(shift).sum()))
        for v, p, f, s in zip(tv.variants, pv, flipped, shift):
            records.append({"family": family.name, "id": rows[tv.index].id, "original": original, "variant": v,
                            "original_label": labels[pred], "variant_label": labels[int(p.argmax())],
                            "flipped": bool(f), "prob_shift": round(float(s), 6)})
        if flipped.any():
            worst = int(np.argmin(np.where(flipped, pv[:, pred], np.inf)))  # the flip that keeps the least of it
            ranked.append(((-flipped.mean(), float(shift[worst])), {
                "id": rows[tv.index].id, "original": original, "variant": tv.variants[worst],
                "original_label": labels[pred], "variant_label": labels[int(pv[worst].argmax())],
                "original_prob": round(float(p0[pred]), 6), "variant_prob": round(float(pv[worst, pred]), 6),
                "flipped_variants": int(flipped.sum()), "variants": len(tv.variants)}))
    ranked.sort(key=lambda item: item[0])
    counts_a = np.asarray(counts, dtype=float)
    result = {
        "title": family.title, "source": family.source, "groups": list(family.groups),
        "flip_rate": ratio_estimate(flips, counts_a, boot),
        "prob_shift": ratio_estimate(shifts, counts_a, boot),
        "mean_abs_prob_shift": float(np.sum(abs_shifts) / counts_a.sum()),
        "n_texts": len(found), "n_variants": int(counts_a.sum()),
        "texts_with_flip": int(sum(f > 0 for f in flips)),
        "top_flips": [flip for _, flip in ranked[:top]],
    }
    return result, records


__all__ = ["TextVariants", "family_result", "variants_of"]
