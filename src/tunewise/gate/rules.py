"""The release-gate rules: each reads one typed artifact of the run and returns a RuleVerdict. A rule whose
evidence is missing fails with the reason (it is never skipped): a gate that cannot see the evidence cannot pass it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tunewise.artifacts.base import Artifact
from tunewise.artifacts.findings import Findings
from tunewise.artifacts.gate import RuleVerdict
from tunewise.artifacts.metrics import Metrics
from tunewise.artifacts.probes import Probes
from tunewise.artifacts.serve import ServeBenchmark, model_digest
from tunewise.errors import RunDirError
from tunewise.recipe import Recipe
from tunewise.rundir import sha256_file
from tunewise.tasks import task_for

A = TypeVar("A", bound=Artifact)


class Evidence:
    """The run's artifacts, each read once when a rule first asks; a missing or unreadable file becomes the reason
    its rules fail."""

    def __init__(self, root: Path, recipe: Recipe):
        self.root, self.recipe = root, recipe
        self._cache: dict[str, tuple[Artifact | None, str | None, str | None]] = {}

    def rel(self, artifact: type[Artifact]) -> str:
        try:
            folder = artifact.folder()
        except RunDirError:  # a stage this tunewise does not register
            folder = artifact.STAGE
        return f"{folder}/{artifact.FILE}"

    def read(self, artifact: type[A], absent: Callable[[], str | None] = lambda: None) -> tuple[A | None, str | None, str | None]:
        """(artifact, sha256, problem): the artifact and its hash, or None and why it cannot be read."""
        rel = self.rel(artifact)
        if rel not in self._cache:
            path = self.root / rel
            if not path.is_file():
                self._cache[rel] = (None, None, absent() or f"{rel} does not exist")
            else:
                try:
                    self._cache[rel] = (artifact.read(path), sha256_file(path), None)
                except RunDirError as exc:
                    self._cache[rel] = (None, None, str(exc).replace(str(self.root) + "/", ""))
        return self._cache[rel]  # type: ignore[return-value]


def _missing(rule: str, requirement: str, evidence: str, threshold, problem: str) -> RuleVerdict:
    return RuleVerdict(rule=rule, requirement=requirement, evidence=evidence, evidence_sha256=None, field=None,
                       value=None, threshold=threshold, passed=False, reason=f"no evidence: {problem}")


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


# ---------------------------------------------------------------- metrics.<name>: lower CI bound >= X


def metric_rules(ev: Evidence) -> list[RuleVerdict]:
    out = []
    for name, bound in ev.recipe.gate.metrics.items():
        rule, rel = f"metrics.{name}", ev.rel(Metrics)
        requirement = f"lower CI bound of the fine-tuned model's {name} >= {bound:g}"
        metrics, sha, problem = ev.read(Metrics)
        if metrics is None:
            out.append(_missing(rule, requirement, rel, bound, problem))
            continue
        scores = metrics.fine_tuned().metrics
        if name not in scores:
            out.append(_missing(rule, requirement, rel, bound, f"{rel} has no fine-tuned `{name}` score (scored: "
                                                              f"{', '.join(scores)})"))
            continue
        s = scores[name]
        passed = s.ci_low >= bound
        reason = (f"{name} {s.value:.4f}, {_pct(s.confidence)} CI [{s.ci_low:.4f}, {s.ci_high:.4f}]: the lower bound "
                  f"{s.ci_low:.4f} {'reaches' if passed else 'is below'} the required {bound:g}")
        out.append(RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                               field=f"models.fine_tuned.metrics.{name}.ci_low", value=s.ci_low, threshold=bound,
                               passed=passed, reason=reason))
    return out


# ---------------------------------------------------------------- beat_baselines: diff > 0 and paired p < alpha


def baseline_rules(ev: Evidence) -> list[RuleVerdict]:
    gate = ev.recipe.gate
    metric = gate.baseline_metric or task_for(ev.recipe).headline_metrics()[0]
    out = []
    for baseline in gate.beat_baselines:
        rule, rel = f"beat_baselines.{baseline}", ev.rel(Metrics)
        requirement = f"fine-tuned better than {baseline} on {metric}, paired bootstrap p < {gate.alpha:g}"
        metrics, sha, problem = ev.read(Metrics)
        if metrics is None:
            out.append(_missing(rule, requirement, rel, gate.alpha, problem))
            continue
        found = [(i, c) for i, c in enumerate(metrics.comparisons) if c.baseline == baseline and c.metric == metric]
        if not found:
            out.append(_missing(rule, requirement, rel, gate.alpha,
                                f"{rel} has no paired comparison with {baseline} on {metric} (evaluate.baselines: "
                                f"{', '.join(sorted({c.baseline for c in metrics.comparisons})) or 'none'})"))
            continue
        i, c = found[0]
        passed = c.diff > 0 and c.p_value < gate.alpha
        why = ("better, and significantly so" if passed else
               "not better" if c.diff <= 0 else f"better, but not significantly (p >= {gate.alpha:g})")
        reason = (f"fine_tuned - {baseline} on {metric} = {c.diff:+.4f}, {_pct(c.confidence)} CI [{c.ci_low:+.4f}, "
                  f"{c.ci_high:+.4f}], paired bootstrap p = {c.p_value:.3g}: {why}")
        out.append(RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                               field=f"comparisons.{i}.p_value", value=c.p_value, threshold=gate.alpha,
                               passed=passed, reason=reason))
    return out


# ---------------------------------------------------------------- max_slice_gap: upper CI bound of the gap <= Y


def slice_gap_rules(ev: Evidence) -> list[RuleVerdict]:
    bound = ev.recipe.gate.max_slice_gap
    if bound is None:
        return []
    rel = ev.rel(Metrics)
    metrics, sha, problem = ev.read(Metrics)
    requirement = f"upper CI bound of the largest slice gap <= {bound:g} (0-1 scale)"
    if metrics is None:
        return [_missing("max_slice_gap", requirement, rel, bound, problem)]
    if not metrics.slices:
        return [_missing("max_slice_gap", requirement, rel, bound,
                         "the recipe sets no data.slice_fields, so no slice gaps were measured")]
    out = []
    for field, info in metrics.slices.items():
        small = (f"; too small to judge (< {info.min_size} rows): {', '.join(info.too_small)}"
                 if info.too_small else "")
        for metric, gap in info.gaps.items():
            rule = f"max_slice_gap.{field}.{metric}"
            if gap is None:
                out.append(_missing(rule, requirement, rel, bound,
                                    f"fewer than two `{field}` groups have evaluate.min_slice_size = {info.min_size} "
                                    f"test rows{small}"))
                continue
            upper = gap.ci_high / gap.metric_range
            passed = upper <= bound
            scale = f" (÷{gap.metric_range:g})" if gap.metric_range != 1 else ""
            reason = (f"largest {metric} gap in `{field}`: {gap.highest} vs {gap.lowest} = "
                      f"{gap.value / gap.metric_range:.4f}{scale}, {_pct(info.confidence)} CI "
                      f"[{gap.ci_low / gap.metric_range:.4f}, {upper:.4f}]: the upper bound "
                      f"{'is within' if passed else 'exceeds'} {bound:g}{small}")
            out.append(RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                                   field=f"slices.{field}.gaps.{metric}.ci_high", value=upper, threshold=bound,
                                   passed=passed, reason=reason))
    return out


# ---------------------------------------------------------------- probes: flip rate, CrowS-Pairs band


def _probes_absent(ev: Evidence) -> str:
    return (f"{ev.rel(Probes)} does not exist: the probes stage did not run for this run (run it, e.g. "
            f"`tunewise run {ev.root / 'recipe.yaml'}` with probes enabled)")


def flip_rate_rules(ev: Evidence) -> list[RuleVerdict]:
    bound = ev.recipe.gate.max_flip_rate
    if bound is None:
        return []
    rel = ev.rel(Probes)
    requirement = f"counterfactual flip rate of every identity-term family <= {bound:g}"
    probes, sha, problem = ev.read(Probes, lambda: _probes_absent(ev))
    if probes is None:
        return [_missing("max_flip_rate", requirement, rel, bound, problem)]
    if probes.counterfactual is None:
        return [_missing("max_flip_rate", requirement, rel, bound,
                         "no counterfactual probes in the run (they apply to classifiers)")]
    if not probes.counterfactual:
        return [_missing("max_flip_rate", requirement, rel, bound,
                         "no probed test text mentions an identity term, so no flip rate was measured")]
    out = []
    for family, result in probes.counterfactual.items():
        r = result.flip_rate
        passed = r.value <= bound
        reason = (f"{result.title}: {r.value:.4f} of {result.n_variants} variants flip the predicted label "
                  f"({_pct(probes.confidence)} CI [{r.ci_low:.4f}, {r.ci_high:.4f}], {result.n_texts} texts): "
                  f"{'within' if passed else 'above'} {bound:g}")
        out.append(RuleVerdict(rule=f"max_flip_rate.{family}", requirement=requirement, evidence=rel,
                               evidence_sha256=sha, field=f"counterfactual.{family}.flip_rate.value", value=r.value,
                               threshold=bound, passed=passed, reason=reason))
    return out


def crows_rules(ev: Evidence) -> list[RuleVerdict]:
    band = ev.recipe.gate.crows_pairs_band
    if band is None:
        return []
    lo, hi = band
    rel = ev.rel(Probes)
    requirement = f"fine-tuned CrowS-Pairs stereotype preference in [{lo:g}, {hi:g}] (0.5 is ideal)"
    probes, sha, problem = ev.read(Probes, lambda: _probes_absent(ev))
    if probes is None:
        return [_missing("crows_pairs_band", requirement, rel, [lo, hi], problem)]
    if probes.crows_pairs is None:
        note = probes.crows_pairs_note or "CrowS-Pairs applies to causal LMs"
        return [_missing("crows_pairs_band", requirement, rel, [lo, hi], f"no CrowS-Pairs result ({note})")]
    cp = probes.crows_pairs
    r = cp.finetuned.overall
    passed = lo <= r.value <= hi
    reason = (f"the fine-tuned model prefers the more stereotyping sentence in {r.value:.4f} of {cp.n_pairs} pairs "
              f"({_pct(probes.confidence)} CI [{r.ci_low:.4f}, {r.ci_high:.4f}]; base model "
              f"{cp.base.overall.value:.4f}): {'inside' if passed else 'outside'} [{lo:g}, {hi:g}]")
    return [RuleVerdict(rule="crows_pairs_band", requirement=requirement, evidence=rel, evidence_sha256=sha,
                        field="crows_pairs.finetuned.overall.value", value=r.value, threshold=[lo, hi],
                        passed=passed, reason=reason)]


# ---------------------------------------------------------------- no_blocking_findings


def findings_rules(ev: Evidence) -> list[RuleVerdict]:
    gate = ev.recipe.gate
    if not gate.no_blocking_findings:
        return []
    rule, rel = "no_blocking_findings", ev.rel(Findings)
    requirement = "no blocking audit finding, except those audit.allow accepts with a reason in gate.accepted_findings"
    if not ev.recipe.audit.enabled:
        return [_missing(rule, requirement, rel, 0, "the data audit is disabled (audit.enabled: false)")]
    findings, sha, problem = ev.read(Findings)
    if findings is None:
        return [_missing(rule, requirement, rel, 0, problem)]
    blocking = [f for f in findings.findings if f.severity == "blocking"]
    unaccepted = [f for f in blocking if not f.allowed]
    unexplained = [f for f in blocking if f.allowed and f.check not in gate.accepted_findings]
    explained = [f for f in blocking if f.allowed and f.check in gate.accepted_findings]
    where = lambda f: f"{f.check} ({f.kind}{', ' + f.split if f.split else ''}, {f.count} rows)"  # noqa: E731
    parts = []
    if unaccepted:
        parts.append("blocking, not accepted: " + "; ".join(map(where, unaccepted)))
    if unexplained:
        parts.append("accepted by audit.allow without a reason in gate.accepted_findings: "
                     + "; ".join(map(where, unexplained)))
    if explained:
        parts.append("accepted with a reason: " + "; ".join(f"{where(f)}: {gate.accepted_findings[f.check]!r}"
                                                          for f in explained))
    bad = len(unaccepted) + len(unexplained)
    reason = "; ".join(parts) if parts else "the audit found no blocking problem"
    return [RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                        field="findings[severity=blocking]", value=float(bad), threshold=0, passed=bad == 0,
                        reason=reason)]


# ---------------------------------------------------------------- serving: p99 latency, guard detection


def _bench_absent(ev: Evidence) -> str:
    return (f"not measured: {ev.rel(ServeBenchmark)} does not exist; run `tunewise serve-bench {ev.root}` (on a "
            f"quiet machine) to measure serving")


def _current_model_digest(ev: Evidence) -> str | None:
    """The digest of the run's train outputs now (from manifest.json), to tell a benchmark of another model."""
    import json

    try:
        manifest = json.loads((ev.root / "manifest.json").read_text(encoding="utf-8"))
        return model_digest(manifest["stages"]["train"]["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _serving_evidence(ev: Evidence) -> tuple[ServeBenchmark | None, str | None, str | None]:
    bench, sha, problem = ev.read(ServeBenchmark, lambda: _bench_absent(ev))
    if bench is not None and bench.model_digest != _current_model_digest(ev):
        return None, None, (f"not measured for this model: {ev.rel(ServeBenchmark)} ({bench.measured_at}) measured "
                            f"an earlier model of this run; rerun `tunewise serve-bench {ev.root}`")
    return bench, sha, problem


def _not_measured(ev: Evidence, rule: str, requirement: str, threshold, problem: str) -> RuleVerdict:  # noqa: ANN001
    """Missing serving evidence: a failed rule, or with gate.serving_evidence=skip a skipped one."""
    if ev.recipe.gate.serving_evidence == "skip":
        return RuleVerdict(rule=rule, requirement=requirement, evidence=ev.rel(ServeBenchmark), evidence_sha256=None,
                           field=None, value=None, threshold=threshold, passed=True, skipped=True,
                           reason=f"skipped (gate.serving_evidence: skip): {problem}")
    verdict = _missing(rule, requirement, ev.rel(ServeBenchmark), threshold, problem)
    verdict.reason = problem if problem.startswith("not measured") else f"not measured: {problem}"
    return verdict


def latency_rules(ev: Evidence) -> list[RuleVerdict]:
    gate = ev.recipe.gate
    if gate.max_p99_ms is None:
        return []
    rule, rel, bound, clients = "max_p99_ms", ev.rel(ServeBenchmark), gate.max_p99_ms, gate.p99_clients
    requirement = f"/v1/classify p99 latency at {clients} concurrent clients <= {bound:g} ms (serving benchmark)"
    bench, sha, problem = _serving_evidence(ev)
    if bench is None:
        return [_not_measured(ev, rule, requirement, bound, problem)]
    i, level = next(((i, lv) for i, lv in enumerate(bench.levels) if lv.clients == clients), (None, None))
    if level is None:
        measured = [lv.clients for lv in bench.levels]
        wanted = ",".join(map(str, sorted({*measured, clients})))
        return [_not_measured(ev, rule, requirement, bound,
                              f"not measured at {clients} clients: {rel} measured {', '.join(map(str, measured))} "
                              f"client(s); rerun `tunewise serve-bench {ev.root} --clients {wanted}`")]
    failed = sum(level.errors.values())
    passed = level.p99_ms <= bound and failed == 0
    where = (f"{bench.machine.cpus} CPU(s) of {bench.machine.cpu_model}, load average "
             f"{bench.machine.load_average[0]:g}, {bench.measured_at}")
    reason = (f"p99 {level.p99_ms:.1f} ms at {clients} clients ({level.ok} requests, p50 {level.p50_ms:.1f} ms, "
              f"{level.throughput_rps:.1f} req/s, {bench.backend}; {where}): "
              f"{'within' if level.p99_ms <= bound else 'above'} {bound:g} ms")
    if failed:
        reason += f"; but {failed} of {level.requests} requests failed ({level.errors}), so the latency is not the server's"
    return [RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                        field=f"levels.{i}.p99_ms", value=level.p99_ms, threshold=bound, passed=passed,
                        reason=reason)]


def guard_rules(ev: Evidence) -> list[RuleVerdict]:
    gate = ev.recipe.gate
    if gate.min_guard_detection is None:
        return []
    rule, rel, bound = "min_guard_detection", ev.rel(ServeBenchmark), gate.min_guard_detection
    at = f"{gate.guard_fpr:g} FPR" if gate.guard_fpr is not None else "the guard's serving target FPR"
    requirement = (f"the serving injection guard's detection on its untouched test split at {at}: lower CI bound "
                   f">= {bound:g}")
    bench, sha, problem = _serving_evidence(ev)
    if bench is None:
        return [_not_measured(ev, rule, requirement, bound, problem)]
    g = bench.guard
    if g is None:
        return [_not_measured(ev, rule, requirement, bound,
                              f"not measured: {rel} was served without an injection guard (serve.guard.run is null); "
                              f"set serve.guard.run to a guard run (examples/injection-guard.yaml) and rerun "
                              f"`tunewise serve-bench {ev.root}`")]
    fpr = gate.guard_fpr if gate.guard_fpr is not None else g.target_fpr
    i, point = next(((i, p) for i, p in enumerate(g.operating_points) if abs(p.target_fpr - fpr) < 1e-9),
                    (None, None))
    if point is None:
        have = ", ".join(f"{p.target_fpr:g}" for p in g.operating_points)
        return [_missing(rule, requirement, rel, bound,
                         f"guard run {g.run_id} reports detection at FPR {have}, not at {fpr:g}; set gate.guard_fpr "
                         f"to one of them, or add {fpr:g} to the guard recipe's guard.report_fprs and rerun it")]
    det, test_fpr = point.test_detection, point.test_fpr
    if det.value is None or det.ci is None:
        return [_missing(rule, requirement, rel, bound, f"guard run {g.run_id}'s test split has no injections")]
    low = det.ci[0]
    passed = low >= bound
    measured_fpr = (f"{test_fpr.value:.4f} [{test_fpr.ci[0]:.4f}, {test_fpr.ci[1]:.4f}]"
                    if test_fpr.value is not None and test_fpr.ci is not None else "n/a")
    screens = ", ".join(g.endpoints) + ("" if g.block else ", log only")
    reason = (f"guard {g.run_id} at target FPR {fpr:g} (threshold {point.threshold:.4g}): detects {det.hits} of "
              f"{det.of} test injections = {det.value:.4f}, {_pct(g.confidence)} CI [{low:.4f}, {det.ci[1]:.4f}]; "
              f"test FPR {measured_fpr}; screens {screens}: the lower bound {low:.4f} "
              f"{'reaches' if passed else 'is below'} {bound:g}")
    return [RuleVerdict(rule=rule, requirement=requirement, evidence=rel, evidence_sha256=sha,
                        field=f"guard.operating_points.{i}.test_detection.ci.0", value=low, threshold=bound,
                        passed=passed, reason=reason)]


RULES = (metric_rules, baseline_rules, slice_gap_rules, flip_rate_rules, crows_rules, findings_rules, latency_rules,
         guard_rules)


def judge(root: Path, recipe: Recipe) -> list[RuleVerdict]:
    """Every rule the recipe's gate section sets, judged against the run's artifacts, in the section's order."""
    ev = Evidence(root, recipe)
    return [verdict for rules in RULES for verdict in rules(ev)]
