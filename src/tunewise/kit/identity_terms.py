"""Identity-term families (gender, given names, nationality, religion, age): the project's term lists, a whole-word
matcher and case-preserving counterfactual swaps.

Shared ground: the probes stage swaps the terms in test texts to see whether predictions move; the audit's
datacard counts how often each family appears in the training text. The lists are data files in `kit/terms/`,
each with the sources it follows (`source`), its groups and aligned rows: the term in row r of group g is swapped
for the term in row r of another group, so a swap keeps the word's grammar (adjective for adjective, a male name
for a male name).

A text with terms of a family gets one counterfactual variant per cyclic shift of the groups: with two groups
(male, female) that is the classic swap of every term (he <-> she at once); with n groups, n - 1 variants that
together move every term to every other group.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunewise.errors import TunewiseError

TERMS_DIR = Path(__file__).resolve().parent / "terms"
FAMILIES = ("gender", "names", "nationality", "religion", "age")
_ACRONYM = re.compile(r"^[A-Z]{2,}$")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")  # what precedes a word that starts a sentence


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    row: int      # the row of the family's table
    group: int    # the group whose term it is
    acronym: bool = False  # matched a form written in capitals (UK, USA): its case says nothing of the text's


@dataclass
class Family:
    """One term family as its file declares it, compiled for matching."""

    name: str
    title: str
    source: str
    groups: list[str]
    rows: list[list[str]]
    path: Path
    lookup: dict[str, tuple[int, int]] = field(default_factory=dict)  # normalised surface form -> (row, group)
    pattern: re.Pattern | None = None
    context: dict[str, tuple[tuple[int, int], frozenset[str]]] = field(default_factory=dict)  # see `context:`
    written: dict[str, str] = field(default_factory=dict)  # normalised surface form -> as the file writes it

    def matches(self, text: str) -> list[Match]:
        """Every whole-word occurrence of a term, left to right (longest term first where they overlap)."""
        out = []
        for m in self.pattern.finditer(text):
            key = _key(m.group(0))
            row, group = self.lookup[key]
            if key in self.context:  # a term whose counterpart depends on the next word ("her": his or him)
                (alt_row, alt_group), next_words = self.context[key]
                following = re.match(r"\s*([A-Za-z]+)?", text[m.end():]).group(1)
                if following is None or following.lower() in next_words:
                    row, group = alt_row, alt_group
            out.append(Match(m.start(), m.end(), row, group, bool(_ACRONYM.match(self.written[key]))))
        return out

    def groups_in(self, text: str) -> set[int]:
        """The groups whose terms the text mentions."""
        return {m.group for m in self.matches(text)}

    def variants(self, text: str) -> Iterator[tuple[int, str]]:
        """(shift, counterfactual text) for each cyclic shift of the groups that changes the text; none when the
        text has no term of this family. Each term moves to the group `shift` places on, case preserved."""
        found = self.matches(text)
        if not found:
            return
        n = len(self.groups)
        for shift in range(1, n):
            parts, pos = [], 0
            for m in found:
                target = self.rows[m.row][(m.group + shift) % n]
                replacement = target if m.acronym else match_case(text[m.start:m.end], target)
                if text[m.start].isupper() and _SENTENCE_START.search(text[:m.start]):
                    replacement = replacement[:1].upper() + replacement[1:]
                parts += [text[pos:m.start], replacement]
                pos = m.end
            variant = "".join(parts) + text[pos:]
            if variant != text:
                yield shift, variant


def _key(surface: str) -> str:
    """How a matched span is looked up: whitespace collapsed, case folded (the regex already holds acronyms to
    capitals, so "us" never reaches the lookup as "US")."""
    return " ".join(surface.split()).lower()


def _word_pattern(term: str) -> str:
    """A term as a regex: acronyms (USA) match only in capitals, other words in any case; any run of whitespace
    between words."""
    parts = [f"(?-i:{re.escape(w)})" if _ACRONYM.match(w) else re.escape(w) for w in term.split()]
    return r"\s+".join(parts)


def match_case(original: str, replacement: str) -> str:
    """`replacement` in the case of `original`: ALL CAPS, or lower case (a proper noun typed in lower case stays in
    lower case); a Capitalised original keeps a listed proper noun as listed ("China" -> "the United Kingdom") and
    capitalises a common word ("He" -> "She"). Sentence starts are capitalised by the caller."""
    letters = [c for c in original if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if letters and all(c.islower() for c in letters):
        return replacement if any(_ACRONYM.match(w) for w in replacement.split()) else replacement.lower()
    if original[:1].isupper() and not any(c.isupper() for c in replacement):
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _problem(path: Path, message: str) -> TunewiseError:
    return TunewiseError(f"{path}: {message}")


def parse_family(path: Path) -> Family:
    """Read and check one term file; a problem names the file and the key."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _problem(path, f"cannot be read as YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise _problem(path, "must be a YAML mapping with family, title, source, groups and rows")
    for key in ("family", "title", "source", "groups", "rows"):
        if not doc.get(key):
            raise _problem(path, f"`{key}` is missing or empty")
    groups, rows = [str(g) for g in doc["groups"]], doc["rows"]
    if len(groups) < 2:
        raise _problem(path, "`groups` must name at least 2 groups")
    family = Family(str(doc["family"]), str(doc["title"]), " ".join(str(doc["source"]).split()), groups, [], path)
    surfaces: dict[str, tuple[int, int]] = {}
    written: dict[str, str] = {}  # each surface form as the file writes it (acronyms keep their capitals)
    for r, row in enumerate(rows, start=1):
        if not isinstance(row, list) or len(row) != len(groups):
            raise _problem(path, f"rows[{r}] must list one term per group ({len(groups)}: {', '.join(groups)}); "
                                 f"got {row!r}")
        family.rows.append([str(t) for t in row])
        for g, term in enumerate(row):
            surfaces.setdefault(_key(str(term)), (r - 1, g))  # a term in two rows keeps its first row
            written.setdefault(_key(str(term)), str(term))
    for term, aliases in (doc.get("aliases") or {}).items():
        if _key(str(term)) not in surfaces:
            raise _problem(path, f"aliases: `{term}` is not a term of any row")
        for alias in aliases:
            surfaces.setdefault(_key(str(alias)), surfaces[_key(str(term))])
            written.setdefault(_key(str(alias)), str(alias))
    family.lookup = surfaces
    family.written = written
    for term, rule in (doc.get("context") or {}).items():
        known = isinstance(rule, dict) and _key(str(term)) in surfaces and _key(str(rule.get("as", ""))) in surfaces
        if not known:
            raise _problem(path, f"context.{term}: needs a listed term and `as:` naming the term of the row to use "
                                 f"instead (with `next_words:`)")
        alt_row = surfaces[_key(str(rule["as"]))][0]
        family.context[_key(str(term))] = ((alt_row, surfaces[_key(str(term))][1]),
                                           frozenset(str(w).lower() for w in rule.get("next_words") or ()))
    # one alternation per family, longest surface first so "the United States" wins over shorter overlaps
    forms = sorted(written.values(), key=lambda s: (-len(s), s))
    family.pattern = re.compile(r"(?<![\w-])(?:" + "|".join(_word_pattern(s) for s in forms) + r")(?![\w-])",
                                re.IGNORECASE)
    return family


@functools.cache
def load_family(name: str) -> Family:
    """The built-in family `name` (one of FAMILIES)."""
    if name not in FAMILIES:
        raise TunewiseError(f"unknown identity-term family {name!r}; families: {', '.join(FAMILIES)}")
    family = parse_family(TERMS_DIR / f"{name}.yaml")
    if family.name != name:
        raise _problem(family.path, f"declares family {family.name!r}, expected {name!r}")
    return family


def load_families(names: list[str] | tuple[str, ...] = FAMILIES) -> list[Family]:
    return [load_family(n) for n in names]


def mention_counts(texts: list[str], families: list[Family]) -> dict[str, dict[str, int]]:
    """Per family: how many texts mention any of its terms (`any`), and how many mention each group."""
    out = {}
    for fam in families:
        counts = {"any": 0, **{g: 0 for g in fam.groups}}
        for text in texts:
            groups = fam.groups_in(text)
            if groups:
                counts["any"] += 1
                for g in groups:
                    counts[fam.groups[g]] += 1
        out[fam.name] = counts
    return out


__all__ = ["FAMILIES", "Family", "Match", "load_families", "load_family", "match_case", "mention_counts",
           "parse_family"]
