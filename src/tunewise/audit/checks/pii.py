"""Check `pii`: rows holding e-mail addresses, phone numbers, payment cards, IBANs, IP addresses or SSN-like
numbers (found by the streaming pass with the shared detectors of tunewise.safety.pii), one finding per kind.
Blocking when the file the rows came from does not declare `contains_personal_data: true`, else a warning.
Examples show masked values only."""

from __future__ import annotations

from collections import Counter

from tunewise.audit.findings import EXAMPLES, CheckResult, Finding, plural
from tunewise.audit.scan import Scan
from tunewise.safety.pii import KIND_WORDS, PII_KINDS


def check(scan: Scan) -> CheckResult:
    result = CheckResult(status={"pii": "ran"})
    summary = scan.data_summary
    source_of = {sp.name: summary.source_slot(sp.name) for sp in scan.splits}  # carved splits: train's file
    declared = {sp.name: summary.source_of(sp.name).contains_personal_data for sp in scan.splits}
    for kind in PII_KINDS:  # a pass over the rows with PII (on disk) per kind
        if not any(sp.pii_by_kind.get(kind) for sp in scan.splits):
            continue
        per_split: Counter = Counter()
        matches, examples = 0, []
        for sp in scan.splits:
            for local, ms in sp.pii_rows():
                values = list(dict.fromkeys(masked for k, masked in ms if k == kind))
                if not values:
                    continue
                per_split[sp.name] += 1
                matches += sum(1 for k, _ in ms if k == kind)
                row = sp.row(local)
                if len(examples) < EXAMPLES:
                    examples.append({**row, "detail": ", ".join(values)})
                result.flagged.append({"check": "pii", "kind": kind, **row, "values": values})
        count = sum(per_split.values())
        undeclared = sorted({source_of[name] for name in per_split if declared[name] is not True})
        declared_words = ("; " + ", ".join(f"data.{s} declares contains_personal_data: "
                                           f"{_yaml_bool(summary.files[s].contains_personal_data)}"
                                           for s in undeclared)) if undeclared else ""
        result.findings.append(Finding(
            "pii", kind, "blocking" if undeclared else "warning", count,
            f"{plural(count, 'row')} with {KIND_WORDS[kind]} ("
            + ", ".join(f"{s} {c:,}" for s, c in per_split.items()) + ")" + declared_words,
            "remove or redact these values (audit.redact_pii=true writes redacted copies to audit/redacted/); if the "
            "data may hold personal data and you have a legal basis, declare `contains_personal_data: true` on the "
            "file (the finding then becomes a warning)",
            examples=examples, details={"per_split": dict(per_split), "matches": matches}))
    return result


def _yaml_bool(v: bool | None) -> str:
    return "null (not declared)" if v is None else str(v).lower()
