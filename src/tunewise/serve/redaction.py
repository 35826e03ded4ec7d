"""PII redaction by policy, per endpoint (`serve.redaction.<endpoint>` in the recipe), with the data audit's own
detectors (tunewise.safety.pii). Three places a text can be redacted:

    model_input   what the model sees            keep | redact
    response      generated text to the client   keep | redact
    log_input / log_output   what the log keeps  plain | redact | hash ("sha256:<hex>") | omit (null)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tunewise.recipe import RedactionPolicy, ServeRedaction


@dataclass(frozen=True)
class Redacted:
    text: str                 # the text after redaction (unchanged when nothing was found)
    kinds: list[str]          # PII kinds found, in order
    spans: list[dict]         # safety.pii.PiiSpan.to_json() of each: kind, start, end, placeholder, masked


class Redactor:
    def __init__(self, config: ServeRedaction, metrics=None):  # noqa: ANN001
        self.config, self.metrics = config, metrics

    def policy(self, endpoint: str) -> RedactionPolicy:
        return getattr(self.config, endpoint)

    def scan(self, endpoint: str, text: str) -> Redacted:
        """Find PII in `text` (the kinds the endpoint's policy names) and count it in the metrics."""
        from tunewise.safety.pii import redact

        redacted, spans = redact(text, kinds=self.policy(endpoint).kinds)
        if self.metrics is not None:
            for s in spans:
                self.metrics.pii_found.labels(endpoint=endpoint, kind=s.kind).inc()
        return Redacted(redacted, [s.kind for s in spans], [s.to_json() for s in spans])

    def model_input(self, endpoint: str, text: str, found: Redacted | None = None) -> str:
        """What the model sees, per `model_input`."""
        if self.policy(endpoint).model_input == "keep":
            return text
        return (found or self.scan(endpoint, text)).text

    def response(self, endpoint: str, text: str) -> str:
        """Generated text for the client, per `response` (counts what it finds)."""
        if self.policy(endpoint).response == "keep":
            return text
        return self.scan(endpoint, text).text

    def for_log(self, endpoint: str, text: str | None, side: str = "input", found: Redacted | None = None) -> str | None:
        """How the log stores `text`: side "input" follows `log_input`, "output" follows `log_output`."""
        if text is None:
            return None
        policy = self.policy(endpoint)
        how = policy.log_input if side == "input" else policy.log_output
        if how == "plain":
            return text
        if how == "omit":
            return None
        if how == "hash":
            return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        from tunewise.safety.pii import redact

        return found.text if found is not None else redact(text, kinds=policy.kinds)[0]
