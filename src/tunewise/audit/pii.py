"""The audit's view of the PII detectors, which live in the shared `tunewise.safety.pii` (serving redacts with
the same ones). Here `redact(text)` returns the redacted string, as the audit's redacted copies need."""

from tunewise.safety.pii import (KIND_WORDS, PII_KINDS, PLACEHOLDER, Match, find_pii, iban_valid, luhn_valid,
                                 redact_text)

redact = redact_text  # the audit's name: text in, redacted text out (serving's `safety.pii.redact` also gives spans)

__all__ = ["KIND_WORDS", "PII_KINDS", "PLACEHOLDER", "Match", "find_pii", "iban_valid", "luhn_valid", "redact"]
