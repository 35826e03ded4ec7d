"""Licence ids read loosely, shared by the recipe (the model's licence against its data's) and the audit.

`CC BY-NC 4.0`, `cc-by-nc-4.0` and `CC-BY-NC-4.0` are one licence. The terms that bind what is derived from the
data are recognised by name: non-commercial (or research-only), share-alike, no-derivatives.
"""

from __future__ import annotations

import re

NON_COMMERCIAL = re.compile(r"(^|[-_ ])NC([-_ ]|$)|NON[-_ ]?COMMERCIAL|RESEARCH[-_ ]?ONLY|ACADEMIC|RESEARCH[-_ ]USE|"
                            r"EDUCATIONAL[-_ ]ONLY|PERSONAL[-_ ]USE", re.IGNORECASE)
SHARE_ALIKE = re.compile(r"(^|[-_ ])SA([-_ ]|$)|SHARE[-_ ]?ALIKE|GPL", re.IGNORECASE)
NO_DERIVATIVES = re.compile(r"(^|[-_ ])ND([-_ ]|$)|NO[-_ ]?DERIV", re.IGNORECASE)
UNKNOWN = re.compile(r"^(UNKNOWN|NONE|N/?A|TBD|\?+|OTHER|PROPRIETARY)$", re.IGNORECASE)
# Hugging Face model-card licence ids for the Creative Commons non-commercial licences
HUB_CC_NC = re.compile(r"^cc-by-nc(-sa|-nd)?-[1-4]\.0$")


def canonical(license_id: str) -> str:
    """`CC BY-NC 4.0` -> `CC-BY-NC-4.0`: upper case, runs of spaces and underscores as one dash."""
    return re.sub(r"[\s_]+", "-", license_id.strip()).upper()


def is_non_commercial(license_id: str | None) -> bool:
    return bool(license_id) and bool(NON_COMMERCIAL.search(canonical(license_id)))


def model_licence_for(data_licences: dict[str, str | None]) -> tuple[str, str]:
    """(`card.license` for `auto`, why): the first non-commercial data licence carries over to the weights (as its
    hub id when it has one, else `other`); without one, apache-2.0, the built-in base models' licence."""
    for split, lic in data_licences.items():
        if is_non_commercial(lic):
            hub = canonical(lic).lower()
            chosen = hub if HUB_CC_NC.match(hub) else "other"
            return chosen, f"data.{split} is licensed {lic}, whose non-commercial terms bind the fine-tuned weights"
    return "apache-2.0", "no data licence restricts the weights; apache-2.0 is the built-in base models' licence"


def binding_terms(data_licences: dict[str, str | None]) -> dict[str, str]:
    """{split: licence} of the data whose non-commercial terms bind the weights."""
    return {split: lic for split, lic in data_licences.items() if lic and is_non_commercial(lic)}


def model_licence_note(card_licence: str, data_licences: dict[str, str | None]) -> str:
    """What the card says beside the model's licence id: where non-commercial data terms carry over, which data
    files they come from (the hub id `other` alone says nothing about the terms)."""
    bound = binding_terms(data_licences)
    if not bound:
        return card_licence
    files = ", ".join(f"data.{split} ({lic})" for split, lic in bound.items())
    return f"{card_licence}: non-commercial use only, carrying the terms of {files}"


def hub_licence_name(card_licence: str, data_licences: dict[str, str | None]) -> str | None:
    """`license_name` for a card licensed `other` (the hub asks for one): the binding data licence's id."""
    if card_licence != "other":
        return None
    bound = binding_terms(data_licences)
    return canonical(next(iter(bound.values()))).lower() if bound else None
