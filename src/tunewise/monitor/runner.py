"""One monitor run: stream the log in chunks, predict what the log did not, cut windows (rows or logged time),
test each closed window against the reference, then correct every p-value of the run together (Holm) and decide.

Multiple testing: the family is every test of every window of this monitor run (about 8 per window: chars, words,
tokens, oov_rate, confidence, prediction, embedding, and label and accuracy with feedback). Holm's step-down
correction over the whole family keeps the chance of any false alarm in the run at or below monitor.alpha, under
any dependence between tests (the windows share one reference sample; chars, words and tokens move together).
An alert is any test significant after that correction. More windows cost power, not false alarms: monitor new
traffic with --since (each run is its own family) rather than re-reading a long history.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.monitor import sources, stats
from tunewise.monitor.detect import DriftDetector, EmbeddingSample, ReferenceData, WindowAccumulator
from tunewise.monitor.features import TextFeatures, reply_flags
from tunewise.monitor.sources import LogRecord, Quarantined

MULTIPLE_TESTING = ("Holm step-down over every test of every window of this monitor run (family-wise error rate "
                    "<= alpha under any dependence); an alert is any test significant after correction.")


@dataclass
class ClosedWindow:
    index: int
    start: str
    end: str
    rows: int
    tested: bool
    tests: list[stats.TestResult]
    means: dict[str, float]
    shares: dict[str, dict[str, float]]
    bins: dict[str, list[float]]                      # numeric: share per reference PSI bin (for the report)
    performance: dict[str, Any] | None
    examples: list[str]


@dataclass
class MonitorResult:
    windows: list[ClosedWindow] = field(default_factory=list)
    rows_read: int = 0
    rows_skipped_since: int = 0
    predicted_here: int = 0
    quarantine: list[Quarantined] = field(default_factory=list)
    adjusted: list[np.ndarray] = field(default_factory=list)  # per window, Holm-adjusted p-values of its tests
    seconds: float = 0.0


class Windower:
    """Assigns rows to windows: every `rows` rows, or by `seconds` of logged time (aligned to the epoch, so
    hourly windows start on the hour). Rows are taken in log order; a late row joins the open window."""

    def __init__(self, rows: int | None, seconds: int | None):
        self.rows, self.seconds = rows, seconds
        self.key: int | None = None
        self.count = 0

    def boundary(self, rec: LogRecord) -> bool:
        """True when `rec` opens a new window (after the first)."""
        if self.seconds is not None:
            key = int(rec.timestamp // self.seconds)
            new = self.key is not None and key > self.key
            if self.key is None or key > self.key:
                self.key = key
            return new
        self.count += 1
        return self.count > 1 and (self.count - 1) % self.rows == 0


def iterate(log: str, chunk_rows: int, kind: str) -> Iterator[list[LogRecord | Quarantined]]:
    return (sources.read_sql(log, chunk_rows, kind) if sources.is_sql(log)
            else sources.read_jsonl(Path(log), chunk_rows))


def monitor_log(log: str, *, profile, embeddings: np.ndarray, vocabulary: list[str], model, cfg, window: str,
                since: float | None, seed: int, feedback_sink: Callable[[LogRecord], None] | None = None,
                progress: bool = True) -> MonitorResult:
    """Read the log and test every window. `model` is the run's RunModel (tokenizer; predictions for a
    classifier); `cfg` the MonitorConfig in force."""
    t0 = time.perf_counter()
    from tunewise.monitor.embed import Embedder

    duration = sources.parse_duration(window)
    windower = Windower(None if duration else int(window), duration)
    reference = ReferenceData.from_profile(profile, embeddings)
    detector = DriftDetector(reference, alpha=cfg.alpha, permutations=cfg.permutations,
                             min_rows=cfg.min_window_rows, seed=seed)
    embedder = Embedder(profile.embeddings.precision)  # the reference's own numerics
    featurize = TextFeatures(vocabulary, model.tokenizer)
    labels = profile.labels or []
    label_index = {lab: i for i, lab in enumerate(labels)}
    rng = np.random.default_rng(seed)
    result = MonitorResult()
    sample_size = max(cfg.window_embedding_sample, cfg.examples_per_window)
    acc = WindowAccumulator(0, sample_size, rng)

    kind = "classifier" if profile.labels else "causal"
    total = sources.count_sql(log, kind) if sources.is_sql(log) else sources.count_jsonl(Path(log))
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="monitor", unit="row", disable=not progress, leave=False)

    def close(acc: WindowAccumulator) -> None:
        if acc.rows == 0:
            return
        result.windows.append(finish(acc, detector, embedder, cfg, labels, seed))

    def flush(batch: list[LogRecord]) -> None:
        if not batch:
            return
        texts = [r.text for r in batch]
        numeric = featurize(texts)
        categorical: dict[str, list[str | None]] = {}
        if "confidence" in profile.numeric or "prediction" in profile.categorical:
            missing = [i for i, r in enumerate(batch) if r.prediction is None]
            if missing and model.can_predict:
                preds, conf, _ = model.predict([texts[i] for i in missing])
                for i, p, c in zip(missing, preds, conf):
                    batch[i].prediction, batch[i].confidence = p, float(c)
                result.predicted_here += len(missing)
            numeric["confidence"] = np.array([r.confidence if r.confidence is not None else np.nan for r in batch])
            categorical["prediction"] = [r.prediction for r in batch]
        if "label" in profile.categorical:
            categorical["label"] = [r.label for r in batch]
        if "response_tokens" in profile.numeric:
            replies = [r.response for r in batch]
            have = [i for i, x in enumerate(replies) if x is not None]
            if have:
                numeric["response_tokens"] = featurize.token_counts([replies[i] for i in have])
                for name, values in reply_flags([replies[i] for i in have]).items():
                    categorical[name] = values
        numeric = {k: v[~np.isnan(v)] for k, v in numeric.items()}
        labelled = [r for r in batch if r.label is not None and r.prediction is not None]
        feedback = None
        if labelled and labels:
            extra = len(labels)  # a feedback label the model does not know counts as a class of its own
            feedback = (np.array([label_index.get(r.label, extra) for r in labelled]),
                        np.array([label_index.get(r.prediction, extra) for r in labelled]))
        if feedback_sink is not None:
            for r in batch:
                if r.label is not None:
                    feedback_sink(r)
        first, last = (sources.format_time(r.timestamp) if r.timestamp is not None else r.where
                       for r in (batch[0], batch[-1]))
        acc.add(texts, numeric, categorical, (first, last), feedback)

    for chunk in iterate(log, cfg.chunk_rows, kind):
        bar.update(len(chunk))
        batch: list[LogRecord] = []
        for rec in chunk:
            if isinstance(rec, Quarantined):
                result.quarantine.append(rec)
                continue
            if (since is not None or duration) and rec.timestamp is None:
                need = "--since" if since is not None else f"--window {window}"
                result.quarantine.append(Quarantined(rec.where, "timestamp", f"missing: {need} needs a time on "
                                                                             f"every row"))
                continue
            if since is not None and rec.timestamp < since:
                result.rows_skipped_since += 1
                continue
            result.rows_read += 1
            if windower.boundary(rec):
                flush(batch)
                batch = []
                close(acc)
                acc = WindowAccumulator(len(result.windows), sample_size, rng)
            batch.append(rec)
        flush(batch)
    close(acc)
    bar.close()
    decide(result, cfg.alpha)
    result.seconds = time.perf_counter() - t0
    return result


def finish(acc: WindowAccumulator, detector: DriftDetector, embedder, cfg, labels: list[str],
           seed: int) -> ClosedWindow:
    tested = acc.rows >= cfg.min_window_rows
    # the rows the domain test may use (a small reference caps the window's side at half of it), shuffled so that
    # any prefix, which is all its first stage embeds, is a uniform sample of the window (a reservoir's slots are
    # not: the window's first rows fill the first slots)
    shuffled = np.random.default_rng([seed, acc.index]).permutation(len(acc.sample))
    n_embed = detector.embedding_sizes(min(len(acc.sample), cfg.window_embedding_sample))[1]
    sample = EmbeddingSample.of_texts([acc.sample[i] for i in shuffled[:n_embed]], embedder)
    data = acc.data(sample if tested and acc.sample else None)
    tests = detector.test(data) if tested else []
    ref = detector.reference
    bins = {k: stats.bin_shares(v, ref.psi_edges[k]).tolist() for k, v in data.numeric.items()
            if k in ref.psi_edges and len(v)}
    shares = {k: {c: n / max(1, sum(cnt.values())) for c, n in cnt.most_common()} for k, cnt in
              data.categorical.items()}
    performance = None
    if data.correct is not None and len(data.correct):
        f1, f1_ci = stats.macro_f1_ci(data.y, data.pred, len(labels) + 1, seed=seed)
        performance = {"n_labelled": len(data.correct), "accuracy": float(np.mean(data.correct)),
                       "accuracy_ci": stats.wilson_ci(data.correct), "macro_f1": f1, "macro_f1_ci": f1_ci}
    order = np.random.default_rng(seed + acc.index).permutation(len(acc.sample))[: cfg.examples_per_window]
    return ClosedWindow(index=acc.index, start=acc.start or "", end=acc.end or "", rows=acc.rows, tested=tested,
                        tests=tests, means={k: float(np.mean(v)) for k, v in data.numeric.items() if len(v)},
                        shares=shares, bins=bins, performance=performance,
                        examples=[acc.sample[i] for i in order])


def decide(result: MonitorResult, alpha: float) -> None:
    """Holm over every test of every window; split the adjusted p-values back per window."""
    flat = [t.p_value for w in result.windows for t in w.tests]
    adjusted = stats.holm(flat)
    result.adjusted = []
    i = 0
    for w in result.windows:
        result.adjusted.append(adjusted[i:i + len(w.tests)])
        i += len(w.tests)
