"""Transparent prompt-injection rules: a few regular expressions, in English and German, that catch the classic
payloads whatever the model says. Each rule carries its pattern and why it exists, and the guard's card lists
them with how often each fired on the held-out split (benign and injection rows apart), so a reviewer can see
what every rule costs in false positives.

They are deliberately few and narrow: the fine-tuned classifier carries the general case; a rule is here only
when the phrase has almost no benign reading (asking a model to discard its instructions, to reveal its prompt,
or to become someone else from now on). The guard flags a text when the model's score reaches the threshold OR
a rule fires, and the threshold is chosen with the rules' false positives already counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str       # reported in GuardVerdict.rules and in the card
    language: str   # "en", "de" or "any"
    pattern: str    # a Python regular expression, matched case-insensitively anywhere in the text
    why: str        # the attack it catches, in one sentence

    @property
    def regex(self) -> re.Pattern:
        return _compiled(self.pattern)


_CACHE: dict[str, re.Pattern] = {}


def _compiled(pattern: str) -> re.Pattern:
    if pattern not in _CACHE:
        _CACHE[pattern] = re.compile(pattern, re.IGNORECASE | re.UNICODE)
    return _CACHE[pattern]


# the things an instruction-override tells the model to drop, and the words that say "the ones before"
_EN_WHAT = r"(?:instructions?|prompts?|orders|directions|directives|rules|guidelines|tasks|assignments|commands|context)"
_EN_BEFORE = r"(?:previous|prior|preceding|above|earlier|former|foregoing|original|initial|provided|given)"
_DE_WHAT = (r"(?:anweisungen|instruktionen|aufgaben|aufträge|befehle|angaben|informationen|vorgaben|regeln|"
            r"ausführungen|prompts?)")
_DE_BEFORE = r"(?:vorherigen|bisherigen|vorangehenden|vorangegangenen|obigen|früheren|vorigen|ursprünglichen|gegebenen)"

RULES: tuple[Rule, ...] = (
    Rule("ignore_instructions", "en",
         rf"\b(?:ignore|disregard|forget|drop|skip|abandon|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|my\s+|of\s+)*"
         rf"(?:{_EN_BEFORE}\s+)?(?:\w+\s+)?{_EN_WHAT}\b"
         r"|\b(?:ignore|disregard)\s+(?:all\s+|everything\s+)?(?:of\s+)?(?:the\s+)?(?:above|previous|preceding)"
         r"(?=\s*(?:[.,;:!?]|and\b|$))",
         "The classic override: tells the model to discard its instructions (\"ignore all previous instructions\", "
         "\"ignore the above and say ...\")."),
    Rule("forget_everything", "en",
         r"\bforget\s+(?:about\s+)?(?:everything|all(?:\s+(?:that|of\s+that))?)\s*(?:\w+\s+){0,3}?"
         r"(?:before|above|previously|so\s+far|you\s+(?:know|were\s+told)|we\s+discussed|i\s+said)\b"
         r"|\bforget\s+(?:about\s+)?everything\b",
         "Wipes the conversation so far before a new, hostile task (\"forget everything before that\")."),
    Rule("new_instructions", "en",
         r"\b(?:now\s+(?:focus|concentrate)\s+on\s+your\s+new\s+task|new\s+(?:instructions|tasks)\s+follow|"
         r"your\s+(?:new\s+)?instructions\s+are\s+now|change\s+your\s+instructions|from\s+now\s+on,?\s+you\s+"
         r"(?:are|will|must))\b",
         "Announces replacement instructions that take over from the system prompt."),
    Rule("prompt_exfiltration", "en",
         r"\b(?:(?:show|print|reveal|display|output|repeat|tell|give|spell)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?"
         r"(?:your|the)\s+(?:full\s+|entire\s+|whole\s+|initial\s+|original\s+|hidden\s+|system\s+)*"
         r"(?:prompt(?:\s+texts?)?|instructions|system\s+message)|what\s+(?:are|were)\s+your\s+(?:instructions|rules)|"
         r"what\s+(?:was|is)\s+written\s+(?:at\s+the\s+beginning|above|before))",
         "Asks the model to leak its system prompt or hidden instructions."),
    Rule("role_override", "en",
         r"\b(?:(?:you\s+are\s+now|now\s+you\s+are)\s+(?!(?:able|ready|done|finished|going|logged|signed|set|all|"
         r"connected|registered|subscribed|eligible|in|on|at|here|back)\b)\w+|now\s+you\s+act\s+as|"
         r"pretend\s+(?:that\s+)?you\s+are|"
         r"you\s+are\s+no\s+longer|stay\s+(?:fully\s+)?in\s+(?:your\s+)?(?:role|character)|"
         r"\b(?:dan|developer|jailbreak|god)\s+mode)\b",
         "Replaces the assistant's role with one that is told to drop its rules (\"you are now DAN\")."),
    Rule("ignore_instructions_de", "de",
         rf"\b(?:ignorier\w*|vergiss|vergessen\s+sie|missachte\w*|übergehe\w*)\s+(?:\w+\s+){{0,2}}?"
         rf"(?:{_DE_BEFORE}\s+)?{_DE_WHAT}\b|\b{_DE_WHAT}\s+(?:\w+\s+)?ignorieren\b|"
         rf"\babweichend\s+(?:zu|von)\s+(?:den\s+)?{_DE_BEFORE}\s+{_DE_WHAT}",
         "Die klassische Übersteuerung auf Deutsch: \"Ignoriere alle vorherigen Anweisungen\"."),
    Rule("forget_everything_de", "de",
         r"\bvergiss\s+alles\b|\bvergessen\s+sie\s+alles\b|\balle\s+(?:vorherigen|bisherigen)\s+informationen\s*"
         r"(?:,\s*die\s+sie\s+erhalten\s+haben,\s*)?sind\s+(?:irrelevant|nicht)",
         "Löscht das bisherige Gespräch vor einer neuen Aufgabe (\"Vergiss alles davor\")."),
    Rule("new_instructions_de", "de",
         r"\b(?:konzentriere\s+dich\s+(?:jetzt\s+|nun\s+)?auf\s+deine\s+neue\s+aufgabe|"
         r"(?:nun|jetzt)\s+folgen\s+(?:neue|weitere)\s+(?:anweisungen|aufgaben)|deine\s+neuen?\s+anweisungen\s+(?:sind|lauten))\b",
         "Kündigt Ersatzanweisungen an, die den Systemprompt ablösen."),
    Rule("prompt_exfiltration_de", "de",
         r"\b(?:(?:zeige?|gib|verrate|nenne|wiederhole)\s+(?:mir\s+)?(?:alle\s+)?(?:deine[nrs]?|ihre[nrs]?|den|die)\s+"
         r"(?:gesamten?\s+|vollständigen?\s+|ursprünglichen?\s+)?(?:prompt-?texte?|systemprompt|system-prompt|anweisungen|"
         r"instruktionen)|was\s+steht\s+(?:am\s+anfang|oben|weiter\s+oben))",
         "Fordert den Systemprompt oder die verborgenen Anweisungen an."),
    Rule("role_override_de", "de",
         r"\b(?:(?:jetzt|nun|ab\s+jetzt|ab\s+sofort)\s+bist\s+du\s+(?!(?:fertig|dran|bereit)\b)\w+|"
         r"stell\s+dir\s+vor,?\s+du\s+bist|tu\s+so,?\s+als\s+(?:ob\s+du|wärst\s+du)|du\s+bist\s+kein(?:e|er)?\s+"
         r"\w+(?:\s+\w+)?\s+sondern|bleib(?:e|en)?\s+(?:immer\s+|voll\w*\s+)?in\s+(?:deiner|ihrer|ihren)\s+rollen?)\b",
         "Ersetzt die Rolle des Assistenten durch eine, die seine Regeln ablegt (\"Jetzt bist du ...\")."),
    Rule("machine_impersonation", "en",
         r"\bact\s+as\s+(?:an?\s+|the\s+)?(?:\w+\s+)?(?:terminal|interpreter|console|shell|command\s+line)\b",
         "Asks the model to play a terminal or interpreter that 'executes' what follows (\"act as a Python "
         "interpreter. Execute: ...\"), a common way to make it print attacker-chosen text."),
    Rule("ignore_instructions_other", "any",
         # Spanish, French, Italian, Portuguese, Dutch, Croatian/Serbian/Bosnian, Polish, Russian/Ukrainian: the same
         # override translated, the language-switch attack the source data is built to resist. Imperative forms
         # only ("olvida", not "olvidé"), so "I forgot everything" does not fire.
         r"\b(?:olvid(?:a|e|en|ad|ar)|ignor(?:a|e|en|ad|ar))\s+(?:todo|todas\s+las\s+(?:instrucciones|indicaciones|"
         r"reglas)|las\s+instrucciones)\b"
         r"|(?<!j')\b(?:oublie[zr]?|ignore[zr])\s+(?:tout\b|toutes\s+(?:les\s+)?(?:instructions|consignes|règles)|"
         r"(?:les|vos|tes)\s+(?:instructions|consignes))"
         r"|\b(?:dimentica|dimenticate|ignora|ignorate)\s+(?:tutto\b|tutte\s+le\s+(?:istruzioni|regole)|"
         r"le\s+istruzioni)"
         r"|\b(?:esqueça|esqueca|esquece|ignore)\s+(?:tudo\b|todas\s+as\s+(?:instruções|instrucoes|regras)|"
         r"as\s+instruções)"
         r"|\b(?:vergeet|negeer)\s+(?:alles\b|alle\s+(?:vorige\s+|eerdere\s+)?(?:instructies|regels|opdrachten)|"
         r"de\s+(?:vorige\s+)?instructies)"
         r"|\b(?:zaboravi(?:te)?|ignoriraj(?:te)?|ignoriši(?:te)?)\s+(?:sve\b|sve\s+(?:prethodne\s+)?"
         r"(?:instrukcije|upute|naredbe))"
         r"|\b(?:zapomnij|zignoruj|ignoruj)\s+(?:o\s+)?(?:wszystko\b|wszystkie\s+(?:poprzednie\s+)?"
         r"(?:instrukcje|polecenia))"
         r"|(?:забудь(?:те)?|игнорируй(?:те)?|проигнорируй(?:те)?)\s+(?:вс[её]\b|все\s+(?:предыдущие\s+)?"
         r"(?:инструкции|указания|правила|команды)|(?:предыдущие\s+)?инструкции)",
         "The override in other languages (\"Olvida todas las instrucciones\", \"Oubliez toutes les instructions\", "
         "\"Zaboravi sve instrukcije\", \"Забудьте все инструкции\"): a switch of language must not slip past."),
)


def matching_rules(text: str, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """The names of the rules that fire on `text`, in RULES order."""
    return [rule.name for rule in rules if rule.regex.search(text)]


# Language guess for the guard's per-language report: the data carry no language field, and the guard's data are
# mostly English with about 30% German. Function words decide; a text with neither kind is "other".
_DE_WORDS = frozenset("der die das und ist nicht ich du sie wir ein eine einen einem einer zu mit für auf den dem "
                      "des von im wie was warum wer bitte kann können möchte würde gibt es sind auch nach bei "
                      "über oder aber wenn dass mir mich dir dich ihr ihnen welche welcher vergiss schreibe".split())
_EN_WORDS = frozenset("the and is not i you we a an to with for on of in how what why who please can could would "
                      "like there are also after at about or but if that me my your which do does it this be "
                      "forget write".split())
_WORD = re.compile(r"[a-zäöüß]+", re.IGNORECASE)


def guess_language(text: str) -> str:
    """"de", "en" or "other", from function words (umlauts and ß count for German). A heuristic for reporting,
    not a language identifier: a text mixing both languages gets the one with more function words."""
    words = [w.lower() for w in _WORD.findall(text)]
    de = sum(w in _DE_WORDS for w in words) + sum(ch in "äöüßÄÖÜ" for ch in text)
    en = sum(w in _EN_WORDS for w in words)
    if de == en == 0:
        return "other"
    return "de" if de > en else "en"
