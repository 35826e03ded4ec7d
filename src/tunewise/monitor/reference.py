"""The reference stage: right after training, profile what the model will be compared with once deployed.

The reference is the **test split**: held out from training and from checkpoint selection (validation picks the
best checkpoint, so the model's confidence there is mildly optimistic), it is what evaluate scores, so the
accuracy feedback is compared with is the evaluated one, and it is the larger held-out split by default
(test_fraction 0.2 against validation_fraction 0.1). Training rows would make the model look over-confident and
the out-of-vocabulary rate zero.

Writes reference/: profile.json (ReferenceProfile), embeddings.npy (a seeded sample of MiniLM sentence
embeddings), vocab.txt (the training vocabulary). Cheap by design: at most monitor.reference_max_rows rows are
predicted and monitor.embedding_sample embedded; both splits are read a line at a time, so neither has to fit in
memory (the sample is the one a whole-list `rng.choice` gave).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunewise.artifacts.monitor import (CategoricalProfile, EmbeddingSample, NumericProfile, ReferencePerformance,
                                        ReferenceProfile, Vocabulary)
from tunewise.monitor import stats
from tunewise.monitor.features import (CATEGORICAL_DESCRIPTIONS, NUMERIC_DESCRIPTIONS, TOKENIZATION, TextFeatures,
                                       build_vocabulary, reply_flags)

if TYPE_CHECKING:
    from tunewise.rundir import RunDir, StageOutcome
    from tunewise.stages import RunOptions

SPLIT = "test"
SPLIT_REASON = ("held out from training and from checkpoint selection, and the split evaluate scores: the model's "
                "predictions, confidence and accuracy there are what unseen traffic should look like")
EMBEDDINGS_FILE = "embeddings.npy"
VOCAB_FILE = "vocab.txt"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def run(rd: "RunDir", options: "RunOptions") -> "StageOutcome":
    return rd.run_stage("reference", lambda out: write_reference(rd, out), force=options.force)


def input_text(row: Any) -> str:
    """The text a deployed model receives for a data/ row: a classifier's text (a pair joined by a blank line),
    a causal LM's prompt side."""
    pair = getattr(row, "text_pair", None)
    return row.text if pair is None else f"{row.text}\n\n{pair}"


def numeric_profile(name: str, values: np.ndarray, bins: int) -> NumericProfile:
    edges, shares = stats.psi_bins(values, bins)
    return NumericProfile(description=NUMERIC_DESCRIPTIONS[name], n=len(values), mean=float(np.mean(values)),
                          std=float(np.std(values)),
                          quantiles={f"p{int(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
                          psi_edges=[float(e) for e in edges], psi_reference=[float(s) for s in shares],
                          values=[float(f"{v:.6g}") for v in values])


def categorical_profile(name: str, values: list[str], order: list[str] | None = None) -> CategoricalProfile:
    counts = {c: 0 for c in (order or [])}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return CategoricalProfile(description=CATEGORICAL_DESCRIPTIONS[name], n=len(values), counts=counts)


def guard_run(recipe) -> str | None:
    """The injection guard the recipe serves behind (serve.guard.run), when it names one."""
    serve = getattr(recipe, "serve", None)
    return getattr(getattr(serve, "guard", None), "run", None)


def write_reference(rd: "RunDir", out: Path) -> str:
    from tunewise.artifacts.rows import iter_split, load_labels, sample_split
    from tunewise.monitor.embed import MAX_LENGTH, Embedder, default_precision
    from tunewise.monitor.model import RunModel
    from tunewise.rundir import atomic_write_text, sha256_file
    from tunewise.tasks import task_for

    t0 = time.perf_counter()
    recipe, cfg = rd.recipe, rd.recipe.monitor
    task = task_for(recipe)
    data_dir, model_dir = rd.stage_dir("data"), rd.stage_dir("train")
    # both splits are read a line at a time: only the sampled rows and the training words' counts are held
    rng = np.random.default_rng(recipe.seed)
    rows, split_rows = sample_split(data_dir, SPLIT, cfg.reference_max_rows, rng, kind=task.record_kind)
    texts = [input_text(r) for r in rows]

    vocab, distinct = build_vocabulary((input_text(r) for r in iter_split(data_dir, "train", kind=task.record_kind)),
                                       cfg.vocab_size)
    atomic_write_text(out / VOCAB_FILE, "".join(w + "\n" for w in vocab))
    labels = load_labels(data_dir) if task.has_labels else None
    model = RunModel(recipe, model_dir, labels, load_model=task.family == "classifier")
    featurize = TextFeatures(vocab, model.tokenizer)
    numeric = featurize(texts)
    missing, total = featurize.oov_words(texts)
    rates = {"oov_rate": missing / total if total else 0.0}
    categorical: dict[str, CategoricalProfile] = {}
    performance = None
    if model.can_predict:
        preds, confidence, _ = model.predict(texts)
        numeric["confidence"] = confidence
        categorical["prediction"] = categorical_profile("prediction", preds, labels)
        categorical["label"] = categorical_profile("label", [r.label for r in rows], labels)
        y = np.array([labels.index(r.label) for r in rows])
        p = np.array([labels.index(x) for x in preds])
        performance = ReferencePerformance(n=len(rows), accuracy=float(np.mean(y == p)),
                                           macro_f1=float(stats.macro_f1(y, p, len(labels))[0]))
    else:  # a causal LM: the reference replies are the split's own (what the model was trained to answer)
        replies = [r.target for r in rows]
        numeric["response_tokens"] = featurize.token_counts(replies)
        flags = reply_flags(replies)
        for name, values in flags.items():
            categorical[name] = categorical_profile(name, values, ["no", "yes"])
            rates[f"{name}_rate"] = float(np.mean([v == "yes" for v in values])) if values else 0.0
    guard = guard_run(recipe)
    if guard:
        from tunewise.safety.guard import InjectionGuard

        numeric["guard_score"] = np.asarray(InjectionGuard.load(guard).scores(texts), float)

    sample = sorted(rng.choice(len(texts), min(cfg.embedding_sample, len(texts)), replace=False))
    embedder = Embedder(default_precision())
    emb = embedder([texts[i] for i in sample])
    np.save(out / EMBEDDINGS_FILE, emb)
    profile = ReferenceProfile(
        task=recipe.task, split=SPLIT, split_reason=SPLIT_REASON, rows=len(rows), split_rows=split_rows,
        labels=labels, numeric={k: numeric_profile(k, v, cfg.psi_bins) for k, v in numeric.items()},
        categorical=categorical, rates=rates, performance=performance,
        vocabulary=Vocabulary(file=VOCAB_FILE, size=len(vocab), train_words=distinct, tokenization=TOKENIZATION),
        embeddings=EmbeddingSample(file=EMBEDDINGS_FILE, sha256=sha256_file(out / EMBEDDINGS_FILE), rows=len(emb),
                                   dim=int(emb.shape[1]), model=embedder.description, max_length=MAX_LENGTH,
                                   precision=embedder.precision),
        guard=guard, seconds=round(time.perf_counter() - t0, 2))
    profile.write(out)
    perf = (f" · accuracy {performance.accuracy:.4f} on them" if performance else "")
    return (f"reference: {len(rows):,} {SPLIT} rows profiled{perf} · OOV rate {rates['oov_rate']:.3f} · "
            f"{len(emb)} MiniLM embeddings ({profile.seconds:.1f}s)")


def load_reference(folder: Path) -> tuple[ReferenceProfile, np.ndarray, list[str]]:
    """The profile, its embedding sample and the vocabulary, checked against the recorded hash."""
    from tunewise.errors import RunDirError
    from tunewise.rundir import sha256_file

    profile = ReferenceProfile.read(folder / ReferenceProfile.FILE)
    emb_path = folder / profile.embeddings.file
    if not emb_path.is_file() or sha256_file(emb_path) != profile.embeddings.sha256:
        raise RunDirError(f"{emb_path}: missing or changed since the reference stage wrote it; rerun it "
                          f"(`tunewise reference {folder.parent} --force`)")
    vocab = (folder / profile.vocabulary.file).read_text(encoding="utf-8").splitlines()
    return profile, np.load(emb_path), vocab
