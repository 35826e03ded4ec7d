"""The text views of a data/ record that the audit and the monitor look at."""

from __future__ import annotations


class TextSides(tuple):
    """(prompt, target, whole) texts of one data/ record: what the audit and the monitor look at."""

    __slots__ = ()

    def __new__(cls, prompt: str, target: str, whole: str):
        return super().__new__(cls, (prompt, target, whole))

    prompt = property(lambda self: self[0])
    target = property(lambda self: self[1])
    whole = property(lambda self: self[2])
