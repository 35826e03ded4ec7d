"""API keys: `tunewise keys add NAME` prints a new key once and stores only its sha256.

Keys are random (256 bits from `secrets`), so one unsalted sha256 is as strong as a password hash here and lets a
request's key be found with one dictionary lookup. The keys file is JSON, mode 0600:

    $TUNEWISE_KEYS_FILE, else $XDG_CONFIG_HOME/tunewise/keys.json, else ~/.config/tunewise/keys.json
    {"keys": [{"name": "alice", "sha256": "<hex>", "created": "2025-01-01T12:00:00Z", "prefix": "tw-AbCd"}]}

Containers pass plain keys in TUNEWISE_API_KEYS instead (comma-separated; `NAME=KEY` names one, a bare key is
named `env-<first 8 hex of its sha256>`). The server rereads the file when it changes, so `keys add` and
`keys remove` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import TunewiseError

KEYS_FILE_ENV = "TUNEWISE_KEYS_FILE"
API_KEYS_ENV = "TUNEWISE_API_KEYS"
KEY_PREFIX = "tw-"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class KeysError(TunewiseError):
    """The keys file is damaged, or a key name is invalid or unknown."""


def keys_file() -> Path:
    """Where `tunewise keys` stores key hashes (see the module docstring)."""
    if os.environ.get(KEYS_FILE_ENV):
        return Path(os.environ[KEYS_FILE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tunewise" / "keys.json"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    name: str
    sha256: str
    created: str
    prefix: str


def read_keys(path: Path | None = None) -> list[StoredKey]:
    path = path or keys_file()
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return [StoredKey(k["name"], k["sha256"], k["created"], k["prefix"]) for k in doc["keys"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeysError(f"{path}: not a tunewise keys file ({type(exc).__name__}: {exc}); fix it or remove it and "
                        f"add the keys again with `tunewise keys add NAME`") from None


def _write_keys(keys: list[StoredKey], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"keys": [k.__dict__ for k in keys]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def add_key(name: str, path: Path | None = None) -> str:
    """Make a key called `name`, store its hash, and return the key (the only time it exists in plain)."""
    path = path or keys_file()
    if not NAME_PATTERN.match(name):
        raise KeysError(f"key name {name!r} is not allowed: use 1-64 letters, digits, _ . @ - (starting with a "
                        f"letter or digit)")
    keys = read_keys(path)
    if any(k.name == name for k in keys):
        raise KeysError(f"a key called {name!r} already exists in {path}; remove it first "
                        f"(`tunewise keys remove {name}`) or choose another name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    keys.append(StoredKey(name, digest(key), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), key[:7]))
    _write_keys(keys, path)
    return key


def remove_key(name: str, path: Path | None = None) -> None:
    path = path or keys_file()
    keys = read_keys(path)
    if not any(k.name == name for k in keys):
        known = ", ".join(k.name for k in keys) or "none"
        raise KeysError(f"no key called {name!r} in {path} (keys: {known})")
    _write_keys([k for k in keys if k.name != name], path)


def env_keys(value: str | None = None) -> dict[str, str]:
    """TUNEWISE_API_KEYS as {sha256: name}."""
    value = os.environ.get(API_KEYS_ENV, "") if value is None else value
    out: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, key = item.partition("=")
        if not sep:
            name, key = "", item
        if not key:
            raise KeysError(f"{API_KEYS_ENV}: the entry for {name!r} has no key after '='")
        out[digest(key)] = name or f"env-{digest(key)[:8]}"
    return out


class KeyRing:
    """The keys a server accepts: the keys file (reread when it changes) and TUNEWISE_API_KEYS."""

    def __init__(self, path: Path | None = None, env_value: str | None = None):
        self.path = path or keys_file()
        self._env = env_keys(env_value)
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, str] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._file = {k.sha256: k.name for k in read_keys(self.path)} if stamp else {}
            self._stamp = stamp

    def __len__(self) -> int:
        self._reload()
        return len(self._file) + len(self._env)

    def name_for(self, key: str) -> str | None:
        """The name of a presented key, or None. Looked up by its sha256, so the comparison leaks nothing."""
        try:
            self._reload()
        except KeysError:
            pass  # a half-edited file: keep the keys read before
        h = digest(key)
        return self._env.get(h) or self._file.get(h)
