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
    for kind in PII_KINDS:
        hits = [(sp, local, [m for m in ms if m.kind == kind]) for sp in scan.splits for local, ms in sp.pii]
        hits = [(sp, local, ms) for sp, local, ms in hits if ms]
        if not hits:
            continue
        per_split = Counter(sp.name for sp, _, _ in hits)
        undeclared = sorted({source_of[sp.name] for sp, _, _ in hits if declared[sp.name] is not True})
        declared_words = ("; " + ", ".join(f"data.{s} declares contains_personal_data: "
                                           f"{_yaml_bool(summary.files[s].contains_personal_data)}"
                                           for s in undeclared)) if undeclared else ""
        result.findings.append(Finding(
            "pii", kind, "blocking" if undeclared else "warning", len(hits),
            f"{plural(len(hits), 'row')} with {KIND_WORDS[kind]} ("
            + ", ".join(f"{s} {c:,}" for s, c in per_split.items()) + ")" + declared_words,
            "remove or redact these values (audit.redact_pii=true writes redacted copies to audit/redacted/); if the "
            "data may hold personal data and you have a legal basis, declare `contains_personal_data: true` on the "
            "file (the finding then becomes a warning)",
            examples=[{**sp.row(local), "detail": ", ".join(dict.fromkeys(m.masked for m in ms))}
                      for sp, local, ms in hits[:EXAMPLES]],
            details={"per_split": dict(per_split), "matches": sum(len(ms) for _, _, ms in hits)}))
        for sp, local, ms in hits:
            result.flagged.append({"check": "pii", "kind": kind, **sp.row(local),
                                   "values": list(dict.fromkeys(m.masked for m in ms))})
    return result


def _yaml_bool(v: bool | None) -> str:
    return "null (not declared)" if v is None else str(v).lower()
