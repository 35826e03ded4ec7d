"""Licence and provenance of each data file against the recipe's `intended_use`.

The licence id is read loosely (`CC BY-NC 4.0`, `cc-by-nc-4.0` and `CC-BY-NC-4.0` are one licence). A
non-commercial or research-only licence under `intended_use: commercial` is blocking; under `internal` it is a
warning (internal use at a company is usually commercial use in the licence's sense); under `unspecified` it is a
warning that asks for the intended use. A missing licence takes `audit.missing_license`. Share-alike and
no-derivatives terms are reported as information, since they bind what is derived from the data.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.artifacts.data import SourceFile
from tunewise.licences import NO_DERIVATIVES, NON_COMMERCIAL, SHARE_ALIKE, UNKNOWN, canonical


@dataclass
class LicenceVerdict:
    severity: str | None  # None: nothing to report
    kind: str
    message: str
    action: str


def judge(split: str, facts: SourceFile, intended_use: str, missing_license: str) -> list[LicenceVerdict]:
    """Verdicts on one data file's licence (facts: the data stage's summary.files[split])."""
    where = f"data.{split} ({facts.path})"
    lic = facts.license
    out: list[LicenceVerdict] = []
    if lic is None or not str(lic).strip() or UNKNOWN.match(str(lic).strip()):
        out.append(LicenceVerdict(
            missing_license, "missing",
            f"{where} declares no licence" + (f" (`{lic}`)" if lic else ""),
            f"find the data's licence and set `data.{split}.license` (an SPDX id such as CC-BY-4.0); without it "
            f"nobody can tell whether the model may be used as intended"))
        return out
    lic_c = canonical(str(lic))
    if NON_COMMERCIAL.search(lic_c):
        if intended_use == "commercial":
            out.append(LicenceVerdict(
                "blocking", "non_commercial",
                f"{where} is licensed {lic}, which forbids commercial use, but the recipe's intended_use is "
                "commercial",
                "replace this data with data whose licence allows commercial use, get a commercial licence from "
                "the rights holder, or set `intended_use=research` if the model will not be used commercially"))
        elif intended_use == "internal":
            out.append(LicenceVerdict(
                "warning", "non_commercial",
                f"{where} is licensed {lic} (non-commercial or research only) and intended_use is internal",
                "internal use inside a company usually counts as commercial under non-commercial licences: "
                "confirm the use is allowed, or replace the data"))
        elif intended_use == "unspecified":
            out.append(LicenceVerdict(
                "warning", "non_commercial",
                f"{where} is licensed {lic} (non-commercial or research only) and the recipe does not state its "
                f"intended_use",
                "set `intended_use` (research, internal or commercial) so the audit can check the licence; "
                "commercial use of this data would not be allowed"))
        else:
            out.append(LicenceVerdict(
                "info", "non_commercial", f"{where} is licensed {lic}; allowed for intended_use {intended_use}",
                "keep the model out of commercial use, and carry the licence's terms with it"))
    if NO_DERIVATIVES.search(lic_c):
        out.append(LicenceVerdict(
            "warning", "no_derivatives", f"{where} is licensed {lic}, which forbids sharing adapted material",
            "check whether training on the data and sharing the model is allowed under its terms"))
    if SHARE_ALIKE.search(lic_c):
        out.append(LicenceVerdict(
            "info", "share_alike", f"{where} is licensed {lic} (share-alike)",
            "adapted material must carry the same licence: check whether that covers the model or its outputs"))
    return out


def declarations(split: str, facts: SourceFile) -> list[LicenceVerdict]:
    """Verdicts on a file's `source` and `contains_personal_data` declarations (check `provenance`)."""
    where = f"data.{split} ({facts.path})"
    out = []
    if not facts.source:
        out.append(LicenceVerdict("warning", "missing_source", f"{where} does not say where the data came from",
                                  f"set `data.{split}.source` (URL, repository, team or generator script)"))
    if facts.contains_personal_data is None:
        out.append(LicenceVerdict("warning", "personal_data_undeclared",
                                  f"{where} does not declare whether it contains personal data",
                                  f"set `data.{split}.contains_personal_data` to true or false"))
    elif facts.contains_personal_data:
        out.append(LicenceVerdict("info", "personal_data_declared", f"{where} declares that it contains personal data",
                                  "make sure there is a legal basis to process it and that the model card says so"))
    return out
