"""The probes stage's work: sample the test rows, run the probes the model family calls for, write probes/."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np

from tunewise.artifacts.probes import Probes
from tunewise.artifacts.rows import count_split, iter_split, sample_split
from tunewise.hardware import Placement, choose_placement
from tunewise.kit.identity_terms import load_families
from tunewise.probes import counterfactual, crows, robustness
from tunewise.probes.noise import add_noise
from tunewise.probes.stats import Boot, mcnemar_p, mean_estimate
from tunewise.recipe import Recipe
from tunewise.rundir import atomic_write_jsonl, sha256_file
from tunewise.tasks import task_for


def boot_of(recipe: Recipe) -> Boot:
    return Boot(recipe.evaluate.bootstrap_samples, recipe.evaluate.confidence, recipe.seed)


def crows_wanted(recipe: Recipe) -> tuple[bool, str | None]:
    """(score CrowS-Pairs?, why not). Causal LMs only; null `probes.crows_pairs` means: when the data is there."""
    cfg = recipe.probes
    if task_for(recipe).family != "causal_lm":
        return False, None
    if cfg.crows_pairs is False:
        return False, "probes.crows_pairs is false"
    path = crows.csv_path(cfg.crows_pairs_path)
    if not path.is_file() and cfg.crows_pairs is None:
        return False, (f"no {crows.CSV_NAME} at probes.crows_pairs_path ({cfg.crows_pairs_path}); set it to the "
                       f"CrowS-Pairs folder (https://github.com/nyu-mll/crows-pairs, data/)")
    return True, None


def external_inputs(recipe: Recipe) -> list[Path]:
    """Files outside the run whose content decides the probes: the CrowS-Pairs CSV when it is scored."""
    wanted, _ = crows_wanted(recipe)
    return [crows.csv_path(recipe.probes.crows_pairs_path)] if wanted else []


def write_probes(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path) -> str:
    task = task_for(recipe)
    placement = choose_placement(recipe.train.device, recipe.train.precision)
    # each family reads only the test rows it probes, a line at a time: the split need not fit in memory
    n_test = count_split(data_dir, "test")
    doc, lines = PROBES[task.family](recipe, task, n_test, data_dir, model_dir, out, placement)
    boot = boot_of(recipe)
    Probes(task=recipe.task, family_of_model=task.family, seed=recipe.seed, confidence=boot.confidence,
           n_resamples=boot.n_resamples, n_test=n_test, **doc).write(out)
    return "\n".join(lines)


# ---------------------------------------------------------------- classifiers


def classifier_probes(recipe: Recipe, task, n_test: int, data_dir: Path, model_dir: Path, out: Path,
                      placement: Placement) -> tuple[dict, list[str]]:
    from tunewise.artifacts.rows import load_labels

    cfg, boot = recipe.probes, boot_of(recipe)
    labels = load_labels(data_dir)
    # a seeded random sample of probes.max_texts rows in test order (test files are often sorted by label, so
    # not the first rows); all rows when max_texts is null or not smaller
    rows, _ = sample_split(data_dir, "test", cfg.max_texts, np.random.default_rng(recipe.seed),
                           kind=task.record_kind, n=n_test)
    texts = [r.text for r in rows]
    y = np.array([labels.index(r.label) for r in rows])
    families = load_families(cfg.families)
    found = {f.name: counterfactual.variants_of(f, texts) for f in families}
    noisy = {kind: add_noise(texts, kind, getattr(cfg.noise_rates, kind), recipe.seed) for kind in cfg.robustness}
    unique = list(dict.fromkeys([*texts, *(v for fv in found.values() for tv in fv for v in tv.variants),
                                 *(t for ts in noisy.values() for t in ts)]))
    model, tokenizer = task.load_model(model_dir), task.load_tokenizer(model_dir)
    from dataclasses import replace

    probs = task.predict(model, tokenizer, [replace(rows[0], text=t) for t in unique], recipe, placement)
    by_text = dict(zip(unique, probs))

    families_out, records, absent = {}, [], []
    for fam in families:
        if not found[fam.name]:
            absent.append(fam.name)
            continue
        families_out[fam.name], recs = counterfactual.family_result(fam, found[fam.name], rows, texts, labels,
                                                                    by_text, boot, cfg.top_flips)
        records += recs
    atomic_write_jsonl(out / "counterfactual.jsonl", records)
    robust = {kind: robustness.classifier_probe(kind, getattr(cfg.noise_rates, kind), texts, noisy[kind], y,
                                                by_text, boot) for kind in cfg.robustness}
    doc = {"n_probed": len(rows), "counterfactual": families_out, "families_without_terms": absent,
           "robustness": robust, "robustness_note": None if cfg.robustness else "probes.robustness is empty",
           "crows_pairs": None, "crows_pairs_note": None}
    pct = f"{boot.confidence:.0%}"
    lines = [f"probes: {len(rows):,} of {n_test:,} test rows, {len(unique):,} texts scored ({pct} bootstrap CIs)"]
    for name, r in families_out.items():
        fr = r["flip_rate"]
        lines.append(f"  {name}: {r['n_texts']} texts mention it, flip rate {fr['value']:.3f} "
                     f"[{fr['ci_low']:.3f}, {fr['ci_high']:.3f}] over {r['n_variants']} variants")
    if absent:
        lines.append(f"  no probed text mentions: {', '.join(absent)}")
    for kind, r in robust.items():
        d = r["drop"]
        lines.append(f"  {kind}: accuracy {r['clean']:.3f} -> {r['noisy']:.3f}, drop {d['value']:+.3f} "
                     f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], p={r['p_value']:.3g}")
    return doc, lines


# ---------------------------------------------------------------- causal LMs


def causal_probes(recipe: Recipe, task, n_test: int, data_dir: Path, model_dir: Path, out: Path,
                  placement: Placement) -> tuple[dict, list[str]]:
    from tunewise.models import resolve_base_model
    from tunewise.tasks.causal import for_inference, load_finetuned

    cfg, boot = recipe.probes, boot_of(recipe)
    base = resolve_base_model(recipe.model.base)
    tok = task.load_tokenizer(model_dir if (model_dir / "tokenizer_config.json").is_file() else base.path)
    lines = []
    finetuned = load_finetuned(model_dir, base.path, placement)

    robust, note, n_probed = {}, None, 0
    if not cfg.robustness:
        note = "probes.robustness is empty"
    elif cfg.generation_max_texts == 0:
        note = ("off for generation and chat by default (probes.generation_max_texts = 0): each noise kind means "
                "generating every reply again; set probes.generation_max_texts to probe the first N test rows")
    else:
        examples = list(islice(iter_split(data_dir, "test", kind=task.record_kind), cfg.generation_max_texts))
        n_probed = len(examples)
        refs = [[ex.target, *ex.references] for ex in examples]
        clean, _ = task.predict(finetuned, tok, examples, recipe, placement, desc="probes: clean prompts")
        clean_scores = robustness.sentence_chrf(clean, refs)
        for kind in cfg.robustness:
            rate = getattr(cfg.noise_rates, kind)
            noisy_ex = robustness.noisy_examples(examples, kind, rate, recipe.seed)
            changed = sum(a.messages != b.messages for a, b in zip(examples, noisy_ex))
            outputs, _ = task.predict(finetuned, tok, noisy_ex, recipe, placement, desc=f"probes: {kind}")
            noisy_scores = robustness.sentence_chrf(outputs, refs)
            robust[kind] = robustness.generation_probe(kind, rate, clean_scores, noisy_scores, changed, boot)
            d = robust[kind]["drop"]
            lines.append(f"  {kind}: chrF {robust[kind]['clean']:.2f} -> {robust[kind]['noisy']:.2f}, drop "
                         f"{d['value']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] on {n_probed} prompts")
        note = f"the first {n_probed} test rows only (probes.generation_max_texts)"

    crows_doc, crows_note = None, None
    wanted, crows_note = crows_wanted(recipe)
    if wanted:
        path = crows.csv_path(cfg.crows_pairs_path)
        pairs = crows.read_pairs(path, cfg.crows_pairs_max_pairs)
        ft_scores = crows.score_pairs(finetuned, tok, pairs, batch_size=cfg.batch_size, device=placement.device)
        del finetuned
        base_model = for_inference(task.load_model(base.path), placement)
        base_scores = crows.score_pairs(base_model, tok, pairs, batch_size=cfg.batch_size, device=placement.device)
        del base_model
        crows_doc = crows_result(pairs, base_scores, ft_scores, path, recipe, placement, boot)
        atomic_write_jsonl(out / "crows_pairs.jsonl", [
            {"line": p.line, "bias_type": p.bias_type, "direction": p.direction, "sent_more": p.more,
             "sent_less": p.less, "base": [round(float(x), 4) for x in b], "finetuned": [round(float(x), 4) for x in f]}
            for p, b, f in zip(pairs, base_scores, ft_scores)])
        b, f, d = crows_doc["base"]["overall"], crows_doc["finetuned"]["overall"], crows_doc["difference"]
        lines.insert(0, f"  CrowS-Pairs ({len(pairs):,} pairs; 0.5 ideal): base {b['value']:.3f} [{b['ci_low']:.3f}, "
                        f"{b['ci_high']:.3f}], fine-tuned {f['value']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}], "
                        f"difference {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    elif crows_note:
        lines.insert(0, f"  CrowS-Pairs not scored: {crows_note}")
    lines.insert(0, f"probes: {recipe.task} ({boot.confidence:.0%} bootstrap CIs)")
    doc = {"n_probed": n_probed, "counterfactual": None, "families_without_terms": [], "robustness": robust,
           "robustness_note": note, "crows_pairs": crows_doc, "crows_pairs_note": crows_note}
    return doc, lines


def crows_score(prefers: np.ndarray, types: np.ndarray, ties: int, boot: Boot) -> dict:
    return {"overall": mean_estimate(prefers, boot),
            "per_bias_type": {t: mean_estimate(prefers[types == t], boot) for t in sorted(set(types))},
            "ties": ties}


def crows_result(pairs, base_scores: np.ndarray, ft_scores: np.ndarray, path: Path, recipe: Recipe,
                 placement: Placement, boot: Boot) -> dict:
    types = np.array([p.bias_type for p in pairs])
    base_pref = (base_scores[:, 0] > base_scores[:, 1]).astype(float)
    ft_pref = (ft_scores[:, 0] > ft_scores[:, 1]).astype(float)
    diff = ft_pref - base_pref
    return {
        "dataset": f"{path.name} (CrowS-Pairs, Nangia et al. 2020; https://github.com/nyu-mll/crows-pairs)",
        "sha256": sha256_file(path), "n_pairs": len(pairs), "method": crows.METHOD,
        "base_model": recipe.model.base, "precision": placement.precision,
        "base": crows_score(base_pref, types, int((base_scores[:, 0] == base_scores[:, 1]).sum()), boot),
        "finetuned": crows_score(ft_pref, types, int((ft_scores[:, 0] == ft_scores[:, 1]).sum()), boot),
        "difference": mean_estimate(diff, boot), "difference_p_value": mcnemar_p(ft_pref, base_pref),
        "per_bias_type_difference": {t: mean_estimate(diff[types == t], boot) for t in sorted(set(types))},
    }


# the one place this stage tells the model families apart
PROBES = {"classifier": classifier_probes, "causal_lm": causal_probes}

__all__ = ["PROBES", "external_inputs", "write_probes"]
