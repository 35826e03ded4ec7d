"""Safety checks shared by the audit, serving and monitoring (shared ground: any stage may import it).

- `safety.pii`: the personal-data detectors (e-mail, IBAN, card, SSN, IP, phone) and `redact(text)`.
- `safety.rules`: the transparent prompt-injection rules, English and German, each with its pattern and why.
- `safety.guard`: `InjectionGuard.load(guard_run_dir)` and `guard.screen(texts) -> list[GuardVerdict]`: a
  fine-tuned MiniLM classifier (a tunewise run of examples/injection-guard.yaml) at the threshold chosen on its
  validation split, combined with the rules.

Nothing here imports torch or transformers at module level; the guard loads its model when asked to.
"""
