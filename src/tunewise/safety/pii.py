"""Personal data in text: e-mail addresses, phone numbers, payment card numbers (Luhn-checked), IBANs
(mod-97-checked), IP addresses and SSN-like numbers. Each match is validated where a checksum exists, so a
16-digit order number that fails Luhn is not a card. Redaction replaces each match by a typed placeholder.

Shared ground: the data audit (its PII check and `audit.redact_pii`) and serving (redaction of requests, replies
and the prediction log) use these same detectors, so what the audit flags in training data is what the server
redacts at run time.

Patterns are tried in a fixed order (e-mail, IBAN, card, SSN, IP, phone) and a later pattern never claims
characters an earlier one already matched: a card number is not also reported as a phone number.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PII_KINDS = ("email", "iban", "card", "ssn", "ip", "phone")
PLACEHOLDER = {"email": "[EMAIL]", "iban": "[IBAN]", "card": "[CARD]", "ssn": "[SSN]", "ip": "[IP]",
               "phone": "[PHONE]"}
KIND_WORDS = {"email": "an e-mail address", "iban": "an IBAN", "card": "a payment card number (Luhn-valid)",
              "ssn": "an SSN-like number", "ip": "an IP address", "phone": "a phone number"}

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
_IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# a phone number: optional +country code, optional (area), then 2-5 groups of digits joined by space . or -;
# 7 to 15 digits in all and at least one separator, +, or parenthesis (plain digit runs are ids, not phones)
_PHONE = re.compile(r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ .-]\d{2,5}){1,4}(?![\w-]|\.\d)")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1
    except ValueError:
        return False


def _card(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group())
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits)


def _ssn(m: re.Match) -> bool:
    """US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, _, group, serial = m.groups()
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _ipv6(m: re.Match) -> bool:
    text = m.group()
    if text.count(":") < 2 or not any(c.isdigit() or c.lower() in "abcdef" for c in text.replace(":", "")):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_PHONE_CONTEXT = re.compile(r"(phone|tel\b|telephone|call|mobile|cell|fax|number|contact|ring|dial|whatsapp|sms|"
                            r"text me|reach me|extension|ext\b)", re.IGNORECASE)


def _phone(m: re.Match) -> bool:
    text = m.group()
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15 or _DATE.fullmatch(text):
        return False
    groups = re.findall(r"\d+", text)
    marked = text.startswith("+") or "(" in text
    if not marked and len(groups) >= 3 and all(len(g) == 3 for g in groups[1:]) and "-" not in text:
        return False  # 1 000 000 or 12.345.678: a number with thousands separators
    if "." in text and not any(sep in text for sep in " -+()"):
        return digits >= 10 and text.count(".") >= 2  # 555.123.4567, not 3.14159
    if not marked and len(groups) == 2:
        # two groups (555-1234) look like ranges and codes too (700-1000 calories): only with a phone word nearby
        before = m.string[max(0, m.start() - 40):m.start()]
        return bool(_PHONE_CONTEXT.search(before))
    return True


_CHECKS: list[tuple[str, re.Pattern, Callable[[re.Match], bool] | None]] = [
    ("email", _EMAIL, None),
    ("iban", _IBAN, lambda m: iban_valid(m.group())),
    ("card", _CARD, _card),
    ("ssn", _SSN, _ssn),
    ("ip", _IPV4, None),
    ("ip", _IPV6, _ipv6),
    ("phone", _PHONE, _phone),
]
_QUICK = re.compile(r"[@:]|\d{2}")  # no PII pattern can match a text without one of these


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int
    text: str

    @property
    def masked(self) -> str:
        """The match with most characters hidden, safe to show in findings."""
        t = self.text
        if self.kind == "email":
            local, _, domain = t.partition("@")
            return f"{local[:1]}***@{domain}"
        keep = 4 if self.kind in ("card", "iban") else 2
        visible = t[-keep:]
        return re.sub(r"[0-9A-Za-z]", "•", t[:-keep]) + visible


def find_pii(text: str) -> list[Match]:
    """Every validated PII match in the text, in order, non-overlapping."""
    if not _QUICK.search(text):
        return []
    taken: list[tuple[int, int]] = []
    found: list[Match] = []
    for kind, pattern, valid in _CHECKS:
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e in taken):
                continue
            if valid is not None and not valid(m):
                if kind in ("iban", "ssn"):
                    taken.append((m.start(), m.end()))  # shaped like an account or SSN: not a phone number either
                continue
            taken.append((m.start(), m.end()))
            found.append(Match(kind, m.start(), m.end(), m.group()))
    found.sort(key=lambda x: x.start)
    return found


def redact_text(text: str, matches: list[Match] | None = None) -> str:
    """The text with every PII match replaced by its placeholder ([EMAIL], [CARD], ...)."""
    matches = find_pii(text) if matches is None else matches
    out, last = [], 0
    for m in matches:
        out.append(text[last:m.start])
        out.append(PLACEHOLDER[m.kind])
        last = m.end
    out.append(text[last:])
    return "".join(out)


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data found in a text, safe to log and to return to a client: its kind, where it
    was in the original text, the placeholder that replaced it and a masked form (never the value itself)."""

    kind: str          # one of PII_KINDS
    start: int         # character offsets in the original text
    end: int
    placeholder: str   # what replaced it in the redacted text, e.g. "[EMAIL]"
    masked: str        # e.g. "j***@example.com", "•••• •••• •••• 1111"

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "placeholder": self.placeholder,
                "masked": self.masked}


def redact(text: str, *, kinds: Iterable[str] | None = None) -> tuple[str, list[PiiSpan]]:
    """(the text with each PII match replaced by its typed placeholder, the spans found), for serving.

    `kinds` limits redaction to some kinds (default: all of PII_KINDS); matches of other kinds stay in the text
    and are not returned. An unknown kind is a ValueError, so a misspelt policy never redacts nothing silently.
    """
    wanted = set(PII_KINDS if kinds is None else kinds)
    unknown = wanted - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known kinds: {', '.join(PII_KINDS)}")
    matches = [m for m in find_pii(text) if m.kind in wanted]
    spans = [PiiSpan(m.kind, m.start, m.end, PLACEHOLDER[m.kind], m.masked) for m in matches]
    return redact_text(text, matches), spans
