"""Start a server in a subprocess and wait until it answers /readyz: the one copy of the start-up polling that the
serve-bench stage, bench/serve.py, bench/serve_chat.py and tests/test_serve.py share.

    port = free_port()
    proc, url = launch([sys.executable, "-m", "tunewise", "serve", RUN, "--port", str(port)], port=port,
                       env=env, log=Path("server.log"), timeout=240)
    try:
        ...
    finally:
        stop(proc)

A server that exits while starting, or is not ready by the deadline, raises ServerNotReady with the tail of its
log, so the caller's failure says why (a test shows it in the assertion report, a bench script on stderr).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tunewise.errors import TunewiseError

LOG_TAIL_CHARS = 3000
POLL_INTERVAL_S = 0.2


class ServerNotReady(TunewiseError):
    """A server subprocess exited while starting, or did not answer /readyz with 200 before its deadline."""


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return f"(no log at {log})"


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    """Poll `url`/readyz until it answers 200. Raises ServerNotReady, with the tail of `log`, when `proc` exits
    first or `timeout` seconds pass (the process is left running then: the caller decides, see `launch`)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerNotReady(f"the server exited ({proc.returncode}) while starting; {log}:\n{log_tail(log)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(POLL_INTERVAL_S)
    raise ServerNotReady(f"the server at {url} did not become ready in {timeout:g} s; {log}:\n{log_tail(log)}")


def launch(argv: Sequence[str], *, port: int, env: Mapping[str, str], log: Path,
           timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """Run `argv` (a server listening on 127.0.0.1:`port`) with stdout and stderr to `log`; return once ready.
    A server that never gets ready is stopped before ServerNotReady propagates."""
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url, timeout, log)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a graceful shutdown: the prediction log flushes), then SIGKILL after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
