"""Threshold choice on validation and the detection report on test, for the guard stage (see tunewise.guard)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunewise.artifacts.data import Labels
from tunewise.artifacts.guard import BenignEval, Component, GuardReport, OperatingPoint, Rate, RuleReport
from tunewise.errors import DataError, RecipeError
from tunewise.recipe import Recipe
from tunewise.rundir import RunDir, atomic_write_jsonl
from tunewise.safety.guard import TorchScorer, windowed_scores
from tunewise.safety.rules import RULES, guess_language, matching_rules
from tunewise.tasks import task_for

CONFIDENCE = 0.95
CI_METHOD = "Wilson score interval (scipy.stats.binomtest)"
MODEL_NEVER = math.nextafter(1.0, 2.0)  # a threshold no probability reaches: only the rules flag


@dataclass
class Scored:
    """One split, scored: injection truth, model score and rule flags per row."""

    ids: list[str]
    texts: list[str]
    injection: np.ndarray   # bool
    scores: np.ndarray      # float, the model's probability of injection
    rules: list[list[str]]  # rules fired per row

    @property
    def by_rule(self) -> np.ndarray:
        return np.array([bool(r) for r in self.rules], dtype=bool)

    def flagged(self, threshold: float, *, model: bool = True, rules: bool = True) -> np.ndarray:
        out = np.zeros(len(self.ids), dtype=bool)
        if model:
            out |= self.scores >= threshold
        if rules:
            out |= self.by_rule
        return out


def rate(flags: np.ndarray, of: np.ndarray) -> Rate:
    """The share of rows in `of` (a mask) that are flagged, with its Wilson interval."""
    from scipy.stats import binomtest

    n, k = int(of.sum()), int((flags & of).sum())
    if n == 0:
        return Rate(value=None, ci=None, hits=0, of=0)
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Rate(value=k / n, ci=(float(ci.low), float(ci.high)), hits=k, of=n)


def choose_threshold(val: Scored, target_fpr: float, *, use_rules: bool) -> float:
    """The lowest model threshold whose combined guard (model OR rules) keeps the validation FPR <= target_fpr.

    Candidates sit just above each benign score, so the benign row at that score is not flagged. When the rules
    alone exceed the target, no threshold can help: MODEL_NEVER (only the rules flag)."""
    benign = ~val.injection
    rule_fp = val.by_rule & benign if use_rules else np.zeros_like(benign)
    allowed = math.floor(target_fpr * benign.sum() + 1e-9)  # false positives the target allows on validation
    if rule_fp.sum() > allowed:
        return MODEL_NEVER
    # benign rows the rules leave alone, highest score first: the model may flag the first (allowed - rule_fp) of them
    free = np.sort(val.scores[benign & ~rule_fp])[::-1]
    budget = allowed - int(rule_fp.sum())
    if budget >= len(free):
        return float(np.nextafter(np.float64(free.min()), -1.0)) if len(free) else 0.0
    return float(np.nextafter(np.float64(free[budget]), 2.0))


def score_split(scorer: TorchScorer, rows: list, positive_label: str, max_length: int, positive: int,
                use_rules: bool) -> Scored:
    texts = [r.text for r in rows]
    scores = windowed_scores(scorer, texts, max_length=max_length, positive=positive)
    return Scored(ids=[r.id for r in rows], texts=texts,
                  injection=np.array([r.label == positive_label for r in rows], dtype=bool),
                  scores=np.asarray(scores, dtype=np.float64),
                  rules=[matching_rules(t) if use_rules else [] for t in texts])


def operating_point(val: Scored, test: Scored, target_fpr: float, use_rules: bool) -> OperatingPoint:
    t = choose_threshold(val, target_fpr, use_rules=use_rules)
    v, s = val.flagged(t, rules=use_rules), test.flagged(t, rules=use_rules)
    return OperatingPoint(target_fpr=target_fpr, threshold=t,
                          validation_fpr=rate(v, ~val.injection), validation_detection=rate(v, val.injection),
                          test_detection=rate(s, test.injection), test_fpr=rate(s, ~test.injection))


def component(flags: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> Component:
    mask = np.ones_like(truth) if mask is None else mask
    return Component(detection=rate(flags, truth & mask), fpr=rate(flags, ~truth & mask))


def read_benign_texts(path: Path, text_field: str, max_rows: int | None = None) -> list[str]:
    """The texts of one guard.benign_eval file (jsonl); a bad line is an error naming the file, line and field."""
    from tunewise.kit.jsonl import read_jsonl

    if not path.is_file():
        raise DataError(f"{path}: guard.benign_eval file not found")
    texts = []
    for n, row in read_jsonl(path, advice="; guard.benign_eval files are jsonl"):
        text = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{n}: field {text_field!r} (data.text_field) is missing or not a non-empty "
                            f"string")
        texts.append(text)
    if not texts:
        raise DataError(f"{path}: guard.benign_eval file has no rows")
    return texts[:max_rows] if max_rows else texts


def benign_eval(scored: Scored, threshold: float, f, use_rules: bool) -> BenignEval:
    """The FPR on one all-benign file at the serving threshold (combined, model alone, rules alone)."""
    every = np.ones(len(scored.ids), dtype=bool)
    flags = scored.flagged(threshold, rules=use_rules)
    worst = [i for i in np.argsort(-scored.scores, kind="stable") if flags[i]][:5]
    return BenignEval(path=f.path, source=f.source, license=f.license, fpr=rate(flags, every),
                      model_fpr=rate(scored.flagged(threshold, rules=False), every),
                      rules_fpr=rate(scored.flagged(threshold, model=False, rules=use_rules), every),
                      examples=[scored.texts[i][:160] for i in worst])


def build_report(recipe: Recipe, labels: list[str], val: Scored, test: Scored,
                 benign: list[BenignEval] | None = None) -> GuardReport:
    cfg = recipe.guard
    use_rules = cfg.rules
    targets = sorted(set(cfg.report_fprs) | {cfg.target_fpr})
    points = [operating_point(val, test, f, use_rules) for f in targets]
    serving = next(p for p in points if p.target_fpr == cfg.target_fpr)
    t = serving.threshold
    languages = np.array([guess_language(x) for x in test.texts])
    auc = None
    if test.injection.any() and (~test.injection).any():
        from sklearn.metrics import roc_auc_score

        auc = float(roc_auc_score(test.injection, test.scores))
    rule_reports = []
    for rule in RULES if use_rules else ():
        fired = np.array([rule.name in r for r in test.rules], dtype=bool)
        rule_reports.append(RuleReport(name=rule.name, language=rule.language, pattern=rule.pattern, why=rule.why,
                                       test_hits_injection=int((fired & test.injection).sum()),
                                       test_hits_benign=int((fired & ~test.injection).sum())))
    n_val_benign = int((~val.injection).sum())
    return GuardReport(
        labels=labels, positive_label=cfg.positive_label, positive_index=labels.index(cfg.positive_label),
        rules=use_rules, target_fpr=cfg.target_fpr, threshold=t, max_length=recipe.model.max_length,
        confidence=CONFIDENCE, ci_method=CI_METHOD,
        validation_rows={"benign": n_val_benign, "injection": int(val.injection.sum())},
        test_rows={"benign": int((~test.injection).sum()), "injection": int(test.injection.sum())},
        operating_points=points, test_auc=auc,
        components={"model": component(test.flagged(t, rules=False), test.injection),
                    "rules": component(test.flagged(t, model=False, rules=use_rules), test.injection),
                    "combined": component(test.flagged(t, rules=use_rules), test.injection)},
        per_language={lang: component(test.flagged(t, rules=use_rules), test.injection, languages == lang)
                      for lang in sorted(set(languages))},
        rule_reports=rule_reports, benign_eval=benign or [],
        caveats=caveats(recipe, n_val_benign, use_rules),
    )


def caveats(recipe: Recipe, n_val_benign: int, use_rules: bool) -> list[str]:
    out = [f"The threshold rests on {n_val_benign} benign validation rows: an FPR target below "
           f"1/{n_val_benign} = {1 / max(n_val_benign, 1):.1%} can only mean zero false positives on validation, "
           f"and the FPR met on test can differ (the report gives it, with its interval).",
           "Validation and test are carved (seeded, stratified by label) from the same file as train. Where that file "
           "holds the same attack several times (translated, or behind a different benign opening), copies can fall "
           "on both sides, so detection of attacks unlike any in train may be lower than reported.",
           "Languages are guessed from function words (de, en, other), not labelled."]
    if use_rules:
        out.append("The first ten rules were written by reading the whole training file, test rows included; the later "
                   "ones (machine_impersonation, ignore_instructions_other, and the 'ignore the above', 'forget about "
                   "everything' and 'now you are' phrasings) by reading the train and validation splits only. Their "
                   "hit rate on test is still optimistic for new phrasings. The model-only row shows the classifier "
                   "without them.")
    if recipe.data.test is None:
        out.append("The test split is carved from the training file; no separately published test set was used.")
    return out


def write_guard(rd: RunDir, out: Path) -> str:
    recipe = rd.recipe
    cfg = recipe.guard
    task = task_for(recipe)
    if not cfg.enabled:
        raise RecipeError("this run's recipe is not an injection-guard recipe (guard.enabled is false); see "
                          "examples/injection-guard.yaml")
    if not task.has_labels:
        raise RecipeError(f"guard.enabled needs task: classification (a benign/injection classifier), not "
                          f"{recipe.task!r}")
    data_dir = rd.stage_dir("data")
    labels = Labels.read(data_dir / Labels.FILE).labels
    if cfg.positive_label not in labels:
        raise RecipeError(f"guard.positive_label {cfg.positive_label!r} is not one of the data's labels {labels}; "
                          f"set it to the label that means prompt injection")
    splits = {}
    for split in ("validation", "test"):
        if not (data_dir / f"{split}.jsonl").is_file():
            raise DataError(f"{data_dir / (split + '.jsonl')}: missing; the guard chooses its threshold on validation "
                            f"and reports on test: set data.validation_fraction > 0 (or give data.{split})")
        splits[split] = task.read_split(data_dir, split)
    max_length = recipe.model.max_length
    positive = labels.index(cfg.positive_label)
    scorer = TorchScorer(rd.stage_dir("train"), max_length=max_length)
    val, test = (score_split(scorer, splits[s], cfg.positive_label, max_length, positive, cfg.rules)
                 for s in ("validation", "test"))
    for name, scored in (("validation", val), ("test", test)):
        if scored.injection.all() or not scored.injection.any():
            raise DataError(f"{data_dir / (name + '.jsonl')}: needs both benign and injection rows to measure the "
                            f"guard; it has {int(scored.injection.sum())} injections of {len(scored.ids)} rows")
    threshold = choose_threshold(val, cfg.target_fpr, use_rules=cfg.rules)
    benign = []
    for f in cfg.benign_eval:
        texts = read_benign_texts(Path(f.path), recipe.data.text_field, f.max_rows)
        scores = windowed_scores(scorer, texts, max_length=max_length, positive=positive)
        scored = Scored(ids=[str(i) for i in range(len(texts))], texts=texts,
                        injection=np.zeros(len(texts), dtype=bool), scores=np.asarray(scores, dtype=np.float64),
                        rules=[matching_rules(t) if cfg.rules else [] for t in texts])
        benign.append(benign_eval(scored, threshold, f, cfg.rules))
    report = build_report(recipe, labels, val, test, benign)
    report.write(out)
    atomic_write_jsonl(out / "scores.jsonl", score_rows(val, "validation") + score_rows(test, "test"))
    return summary_line(report)


def score_rows(scored: Scored, split: str) -> list[dict]:
    return [{"split": split, "id": i, "injection": bool(y), "score": round(float(s), 6), "rules": r,
             "language": guess_language(t)}
            for i, t, y, s, r in zip(scored.ids, scored.texts, scored.injection, scored.scores, scored.rules)]


def pct(r: Rate) -> str:
    if r.value is None:
        return "n/a"
    return f"{r.value:.1%} [{r.ci[0]:.1%}, {r.ci[1]:.1%}]"


def summary_line(report: GuardReport) -> str:
    parts = [f"at {p.target_fpr:.0%} FPR detection {pct(p.test_detection)} (test FPR {p.test_fpr.value:.1%})"
             for p in report.operating_points]
    ood = [f"{Path(b.path).name} {pct(b.fpr)}" for b in report.benign_eval]
    return (f"guard: threshold {report.threshold:.4f} for {report.target_fpr:.0%} FPR on validation; on test "
            + "; ".join(parts) + (f"; FPR on out-of-distribution benign text: {', '.join(ood)}" if ood else ""))
