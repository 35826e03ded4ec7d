"""Check `length`: rows longer than model.max_length, in the base model's tokens (see audit/length.py), which
training truncates. A warning when at least LENGTH_WARN_RATE of all rows are over, else information; a warning
too when the lengths are only estimated (the base model's tokenizer could not be fetched)."""

from __future__ import annotations

import numpy as np

from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan

LENGTH_WARN_RATE = 0.01


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"length": "ran"})
    max_length = scan.recipe.model.max_length
    if scan.length_unit.startswith("estimated"):  # never a silent "every row fits": say the count is a guess
        result.findings.append(Finding(
            "length", "estimated_lengths", "warning", sum(sp.n for sp in scan.splits),
            f"lengths are {scan.length_unit}, so rows over model.max_length={max_length} may be missed",
            "make model.base loadable here (a built-in model, a local folder with safetensors and a tokenizer, "
            "or a hub id with network access) and audit again"))
    over = {sp.name: np.flatnonzero(sp.lengths > max_length) for sp in scan.splits}  # local rows per split
    n_over = sum(len(rows) for rows in over.values())
    if not n_over:
        return result
    rate = n_over / max(1, sum(sp.n for sp in scan.splits))
    # the longest rows, ties in split and row order (a stable sort of every over-length row by its length)
    split_of = np.concatenate([np.full(len(over[sp.name]), k) for k, sp in enumerate(scan.splits)])
    local = np.concatenate([over[sp.name] for sp in scan.splits])
    tokens = np.concatenate([sp.lengths[over[sp.name]] for sp in scan.splits]).astype(np.int64)
    longest = [(scan.splits[int(split_of[j])], int(local[j])) for j in np.argsort(-tokens, kind="stable")[:EXAMPLES]]
    # the one task-worded sentence: prompt -> reply rows keep the reply and lose the end of the prompt
    cut = "have the end of their prompt cut (model.truncation=truncate)" if scan.task.has_prompts \
        else "are cut at the end"
    result.findings.append(Finding(
        "length", "over_max_length", "warning" if rate >= LENGTH_WARN_RATE else "info", n_over,
        f"{plural(n_over, 'row')} ({rate:.1%}) longer than model.max_length={max_length} "
        f"({scan.length_unit}); in training they {cut}",
        "raise model.max_length (costs time and memory), or shorten these rows",
        examples=[{**sp.row(i), "detail": f"{int(sp.lengths[i])} tokens"} for sp, i in longest],
        details={"truncation_rate": rate, "unit": scan.length_unit}))
    for sp in scan.splits:
        for i in over[sp.name].tolist():
            result.flagged.append({"check": "length", "kind": "over_max_length", **sp.row(i),
                                   "tokens": int(sp.lengths[i])})
    return result
