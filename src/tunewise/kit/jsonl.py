"""Reading a JSON Lines file whose every bad line is an error naming file:line (the loop the stages share).

Lines are split at \\n only: a JSON string may hold U+2028 or U+2029 unescaped (tunewise writes with
ensure_ascii=False), and str.splitlines would break the line there. A line that is not UTF-8 is the same clear
error as one that is not JSON, never a UnicodeDecodeError traceback. The data stage's own reader
(tunewise.data.readers) goes further: it quarantines bad rows instead of stopping at the first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, TunewiseError

UTF8_BOM = b"\xef\xbb\xbf"


def read_jsonl(path: str | Path, *, error: type[TunewiseError] = DataError, what: str = "valid JSON",
               advice: str = "", on_bad_line: Callable[[int, str], None] | None = None) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line number, parsed value) for each non-blank line of `path`, one line in memory at a time.

    A bad line raises `error("{path}:{line}: not {what} ({detail}){advice}")`: `what` names what the line should
    be, `advice` (starting with "; ") says what to do. With `on_bad_line`, a reader that quarantines instead gets
    `on_bad_line(line, "not JSON (...)" or "not UTF-8 (...)")` and the lines after it. The caller checks the
    value's shape itself."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(UTF8_BOM):  # Excel and Notepad write one; it is not data
                raw = raw[len(UTF8_BOM):]
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                detail = f"invalid UTF-8: byte 0x{raw[exc.start]:02X} at byte offset {exc.start} of the line"
                if on_bad_line is not None:
                    on_bad_line(number, f"not UTF-8 ({detail})")
                    continue
                raise error(f"{path}:{number}: not {what} ({detail}){advice}") from None
            except json.JSONDecodeError as exc:
                if on_bad_line is not None:
                    on_bad_line(number, f"not JSON ({exc.msg} at column {exc.colno})")
                    continue
                raise error(f"{path}:{number}: not {what} ({exc.msg} at column {exc.colno}){advice}") from None
            yield number, value


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of `size`, the last one shorter: a stream of records worked a batch at a time
    (itertools.batched, which gives tuples, needs Python 3.12)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
