"""The checker: a causal LM read as a likelihood scorer (tunewise.faithfulness.likelihood) plus a small logistic
regression over the features of each claim (tunewise.faithfulness.features), fitted on human-labelled summaries by
`python bench/faithfulness.py --fit-out FILE`. The fitted combination is one small JSON file: the built-in
`smollm2` checker ships in this package; `evaluate.faithfulness.checker` may name another such file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.errors import RecipeError
from tunewise.faithfulness.features import FEATURES, claim_features, low_support_spans
from tunewise.faithfulness.text import Span, sentence_spans

BUILTIN_CHECKERS = {"smollm2": Path(__file__).with_name("smollm2_checker.json")}
FORMAT = "tunewise-faithfulness-checker/1"


@dataclass
class CheckerModel:
    """The fitted combination: standardise the features, then a logistic regression for P(unfaithful)."""

    name: str
    lm: str
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    thresholds: dict[str, float]               # per unit ("summary", "sentence"): the cut on P(unfaithful)
    threshold_note: str                        # how the cuts were chosen
    max_source_tokens: int = 2048
    fitted_on: dict[str, Any] = field(default_factory=dict)   # data, rows, documents, C, cross-validation
    benchmark: dict[str, Any] = field(default_factory=dict)   # held-out balanced accuracy, filled by the bench
    format: str = FORMAT

    def prob(self, X: np.ndarray) -> np.ndarray:
        """P(unfaithful) per row of a features matrix (columns in `self.features` order)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        z = ((X - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "CheckerModel":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{path}: not a readable faithfulness checker file ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise RecipeError(f"{path}: field `format` must be {FORMAT!r} (a file written by "
                              f"`python bench/faithfulness.py --fit-out FILE`)")
        unknown = [f for f in raw.get("features", []) if f not in FEATURES]
        if unknown:
            raise RecipeError(f"{path}: field `features` names {unknown}, which this tunewise does not compute; "
                              f"known: {', '.join(FEATURES)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise RecipeError(f"{path}: {exc}") from None


def locate(cfg) -> Path:
    """The checker file `evaluate.faithfulness.checker` names: a built-in name or a checker JSON file."""
    if cfg.checker is None:
        raise RecipeError("evaluate.faithfulness needs a checker: set evaluate.faithfulness.checker to `smollm2` "
                          "(the built-in one) or to a checker file written by `python bench/faithfulness.py "
                          "--fit-out FILE`, or turn the stage off with evaluate.faithfulness.enabled=false")
    if cfg.checker in BUILTIN_CHECKERS:
        return BUILTIN_CHECKERS[cfg.checker]
    path = Path(cfg.checker)
    if not path.is_file() or path.suffix != ".json":
        raise RecipeError(f"evaluate.faithfulness.checker={cfg.checker}: no such checker; expected a built-in "
                          f"name ({', '.join(BUILTIN_CHECKERS)}) or a .json file written by "
                          f"`python bench/faithfulness.py --fit-out FILE`")
    return path


def checker_inputs(path: Path) -> list[Path]:
    """The files whose hashes decide whether the faithfulness stage must run again."""
    return [path]


@dataclass
class Assessment:
    """One output: P(unfaithful) of the whole output and of each sentence, and the low-support word spans."""

    summary_score: float | None
    sentences: list[tuple[Span, float]]
    low_support: list[Span]


@dataclass
class Checker:
    """A loaded checker: `assess(outputs, sources)` scores each output against its source."""

    path: Path
    model: CheckerModel
    scorer: Any

    @classmethod
    def load(cls, path: Path, batch_size: int | None = None, threads: int | None = None) -> "Checker":
        from tunewise.faithfulness.likelihood import LikelihoodScorer

        model = CheckerModel.read(path)
        scorer = LikelihoodScorer.load(model.lm, max_source_tokens=model.max_source_tokens,
                                       batch_size=batch_size or 8, threads=threads)
        return cls(path, model, scorer)

    def facts(self) -> dict[str, Any]:
        return {"name": self.model.name, "path": str(self.path.resolve()), "lm": self.model.lm,
                "sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(), "features": list(self.model.features),
                "fitted_on": self.model.fitted_on.get("description", ""), "benchmark": self.model.benchmark}

    def threshold(self, unit: str) -> tuple[float, str]:
        return float(self.model.thresholds[unit]), self.model.threshold_note

    def assess(self, outputs: list[str], sources: list[str]) -> list[Assessment]:
        """Outputs sharing a source share its LM pass (the source's KV cache)."""
        by_source: dict[str, list[int]] = {}
        for i, (output, source) in enumerate(zip(outputs, sources)):
            if sentence_spans(output):
                by_source.setdefault(source, []).append(i)
        result = [Assessment(None, [], []) for _ in outputs]
        for source, idx in by_source.items():
            scores = self.scorer.score(source, [outputs[i] for i in idx])
            for i, ts in zip(idx, scores):
                result[i] = self.assess_scored(outputs[i], source, ts.offsets, ts.conditional, ts.unconditional)
        return result

    def assess_scored(self, text: str, source: str, offsets, conditional, unconditional) -> Assessment:
        """The assessment from an output's token scores (the benchmark calls this on cached scores)."""
        spans = sentence_spans(text)
        columns = [FEATURES.index(f) for f in self.model.features]
        rows = [claim_features(text, source, offsets, conditional, unconditional, None)]
        rows += [claim_features(text, source, offsets, conditional, unconditional, s) for s in spans]
        probs = self.model.prob(np.array(rows)[:, columns])
        return Assessment(float(probs[0]), [(s, float(p)) for s, p in zip(spans, probs[1:])],
                          low_support_spans(text, offsets, conditional, unconditional))
