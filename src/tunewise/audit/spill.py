"""What the audit keeps per row, kept off the heap: strings and JSON lines appended to anonymous temporary files.

The audit must finish on data larger than memory, so nothing it collects per row may be a Python object per row
(a str costs 50+ bytes before its text, a dict hundreds). Row ids and origins, text excerpts, PII matches and the
lines of flagged.jsonl and quarantine.jsonl go to temporary files (unnamed: the kernel removes them when they
close, even after a crash); in memory stays one 8-byte offset per string (`StringStore`) or nothing per line
(`JsonLog`). Reads are `os.pread` calls, so no file is mapped into the address space either.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from typing import Any

_BUFFER = 1 << 20  # bytes read at a time
_PENDING = 1 << 18  # bytes of strings gathered before a write: its bytes objects take about twice that


class StringStore:
    """Append-only strings, read back by position: `store.append(s)`, `store[i]`, `len(store)`."""

    def __init__(self) -> None:
        self._fh = tempfile.TemporaryFile(prefix="tunewise-audit-")
        self._ends = array("q")  # end offset of each string in the file: 8 bytes a string
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def append(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._size += len(data)
        self._ends.append(self._size)
        if self._pending_bytes >= _PENDING:
            self._flush()

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.append(text)

    def _flush(self) -> None:
        if self._pending:
            self._fh.write(b"".join(self._pending))
            self._fh.flush()
            self._pending, self._pending_bytes = [], 0

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        n = len(self._ends)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        self._flush()
        start = self._ends[i - 1] if i else 0
        return os.pread(self._fh.fileno(), self._ends[i] - start, start).decode("utf-8", "surrogatepass")

    def close(self) -> None:
        self._fh.close()


class JsonLog:
    """A list of JSON objects on disk, in order: `append`, `extend`, `len`, iterate (each line parsed back).
    Optionally each line carries an integer key (a global row number) kept beside it, 8 bytes a line."""

    def __init__(self, items: Iterable[dict[str, Any]] = ()) -> None:
        self._fh = tempfile.TemporaryFile(prefix="tunewise-audit-")  # written only at its end, read by pread
        self._n = 0
        self.keys = array("q")
        self.extend(items)

    def append(self, record: Any, key: int = -1) -> None:
        self._fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
        self.keys.append(key)
        self._n += 1

    def extend(self, records: Iterable[Any]) -> None:
        if isinstance(records, JsonLog):
            for key, record in zip(records.keys, records):
                self.append(record, key)
            return
        for record in records:
            self.append(record)

    def __iadd__(self, records: Iterable[Any]) -> "JsonLog":
        self.extend(records)
        return self

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[Any]:
        self._fh.flush()
        fd, offset, rest = self._fh.fileno(), 0, b""
        while True:
            chunk = os.pread(fd, _BUFFER, offset)
            if not chunk:
                break
            offset += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield json.loads(line.decode("utf-8", "surrogatepass"))

    def __getitem__(self, index: slice) -> list[Any]:
        """The first lines (`log[:10]`): only slices from the start, for examples."""
        if not isinstance(index, slice) or index.start not in (None, 0) or index.step not in (None, 1):
            raise TypeError("JsonLog supports only log[:n]")
        stop = self._n if index.stop is None else min(index.stop, self._n)
        out = []
        for i, record in enumerate(self):
            if i >= stop:
                break
            out.append(record)
        return out

    def close(self) -> None:
        self._fh.close()
