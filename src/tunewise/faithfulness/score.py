"""Scoring generated outputs against their sources: the source out of each prompt, the checker's score per
sentence and per output, the transparent checks, the flag, and the bootstrap intervals of the flagged share."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunewise.errors import RecipeError
from tunewise.faithfulness.text import unsupported_facts
from tunewise.recipe import FaithfulnessConfig, Recipe, template_fields

# Transparent checks that flag an output: a number in digits the source never states was unfaithful in 98% of the
# SummEdits training/validation summaries where it fired. Number words ("two characters"), names and dates fire
# far more often on faithful dialogue summaries (precision 0.25-0.69), so they are shown, not flagged.
FLAGGING_KINDS = ("number",)


# ---------------------------------------------------------------- the source of each prompt


@dataclass(frozen=True)
class SourceReader:
    """Takes the source text out of a rendered prompt: the named column of data.prompt_template, matched back
    out of the prompt; the whole prompt when the recipe has no template (or the prompt does not match it)."""

    pattern: re.Pattern | None
    column: str | None

    @classmethod
    def for_recipe(cls, recipe: Recipe) -> "SourceReader":
        template = recipe.data.prompt_template
        wanted = recipe.evaluate.faithfulness.source_field
        if template is None:
            if wanted is not None:
                raise RecipeError(f"evaluate.faithfulness.source_field={wanted!r} needs data.prompt_template; "
                                  f"without one the whole prompt is the source (leave source_field null)")
            return cls(None, None)
        columns = template_fields(template)
        column = wanted or columns[-1]
        if column not in columns:
            raise RecipeError(f"evaluate.faithfulness.source_field={column!r} is not a column of "
                              f"data.prompt_template; its columns: {', '.join(columns)}")
        parts, seen = [], set()
        for literal, name, _, _ in string.Formatter().parse(template):
            parts.append(re.escape(literal))
            if name is not None:
                group = name not in seen and name == column
                parts.append("(?P<source>.*?)" if group else "(?:.*?)")
                seen.add(name)
        return cls(re.compile("".join(parts) + r"\Z", re.DOTALL), column)

    def describe(self) -> str:
        return f"prompt-template column `{self.column}`" if self.column else "the whole prompt"

    def __call__(self, prompt: str) -> tuple[str, bool]:
        """(source, whether it came from the template column)."""
        if self.pattern is not None:
            match = self.pattern.match(prompt)
            if match and match.group("source").strip():
                return match.group("source"), True
        return prompt, self.pattern is None


# ---------------------------------------------------------------- per output


def score_outputs(outputs: list[str], sources: list[str], checker, cfg: FaithfulnessConfig) -> list[dict[str, Any]]:
    """One record per output: sentence scores, the whole output's score, unsupported spans (numbers, names and
    dates the source never mentions; words the source does not make likelier), flag and reasons.
    `cfg.threshold` must be a number here (the stage resolves `auto` against the checker first)."""
    if not isinstance(cfg.threshold, float | int):
        raise ValueError(f"score_outputs needs a numeric threshold, not {cfg.threshold!r}")
    assessments = checker.assess(outputs, sources)
    records = []
    for output, source, a in zip(outputs, sources, assessments):
        sentence_scores = [p for _, p in a.sentences]
        sent = [{"start": s.start, "end": s.end, "score": round(p, 6), "flagged": p >= cfg.threshold}
                for s, p in a.sentences]
        if cfg.unit == "sentence":
            score = max(sentence_scores) if sentence_scores else None
        else:
            score = a.summary_score
        reasons = []
        if score is not None and score >= cfg.threshold:
            reasons.append("checker")
        facts = unsupported_facts(output, source)
        if cfg.transparent_checks:
            reasons += sorted({u.kind for u in facts if u.kind in FLAGGING_KINDS})
        covered = [(u.start, u.end) for u in facts]
        spans = facts + [u for u in a.low_support if not any(s < u.end and u.start < e for s, e in covered)]
        records.append({
            "flagged": bool(reasons), "flagged_by": reasons,
            "score": None if score is None else round(score, 6),
            "summary_score": None if a.summary_score is None else round(a.summary_score, 6),
            "sentences": sent,
            "unsupported": [{"start": u.start, "end": u.end, "text": u.text, "kind": u.kind}
                            for u in sorted(spans, key=lambda u: u.start)],
        })
    return records


# ---------------------------------------------------------------- intervals


def share_interval(flags: np.ndarray, *, n_resamples: int, confidence: float, seed: int) -> dict[str, float]:
    """The share of True with a percentile bootstrap interval over the outputs."""
    flags = np.asarray(flags, dtype=float)
    value = float(flags.mean()) if len(flags) else 0.0
    if len(flags) < 2 or flags.std() == 0:
        return {"value": value, "ci_low": value, "ci_high": value, "n": int(len(flags))}
    means = _resampled_means(flags, n_resamples, seed)
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return {"value": value, "ci_low": float(low), "ci_high": float(high), "n": int(len(flags))}


def paired_difference(model: np.ndarray, baseline: np.ndarray, *, n_resamples: int, confidence: float,
                      seed: int) -> dict[str, float]:
    """mean(model) - mean(baseline) over the same items, with a paired percentile bootstrap interval and a
    two-sided bootstrap p-value."""
    d = np.asarray(model, dtype=float) - np.asarray(baseline, dtype=float)
    diff = float(d.mean()) if len(d) else 0.0
    if len(d) < 2 or d.std() == 0:
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p_value": 1.0 if diff == 0 else 0.0, "n": len(d)}
    means = _resampled_means(d, n_resamples, seed)
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return {"diff": diff, "ci_low": float(low), "ci_high": float(high), "p_value": p, "n": len(d)}


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
