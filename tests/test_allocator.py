"""The `tunewise` command starts itself on tcmalloc (or jemalloc) when one is installed: in bench/causal_sft.py it
trained faster in less memory than glibc's malloc. The swap needs a relaunch (an allocator is chosen when a process
starts), so these tests run the command's real entry point in a subprocess and ask the process what it runs on."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import subprocess_env

from tunewise.hardware import find_allocator

# the command's own entry point (`tunewise models`, which needs no run), then the allocator the process ended up on
ENTRY_THEN_ALLOCATOR = ("import sys; from tunewise.cli import entry; sys.argv = ['tunewise', 'models']; entry(); "
                        "from tunewise.hardware import allocator_in_use; print('allocator:', allocator_in_use())")


def run_entry(code: str = ENTRY_THEN_ALLOCATOR, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` in the suite's environment without any allocator setting of this shell, plus `env`."""
    full = {k: v for k, v in subprocess_env().items() if not k.startswith("TUNEWISE_ALLOCATOR") and k != "LD_PRELOAD"}
    return subprocess.run([sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(find_allocator() is None, reason="neither tcmalloc nor jemalloc is installed "
                    "(scripts/system_deps.sh installs libtcmalloc-minimal4 where apt-get can run)")
def test_the_command_relaunches_itself_on_the_installed_allocator_and_system_keeps_glibc():
    name, _ = find_allocator()
    proc = run_entry()
    assert proc.returncode == 0, proc.stderr
    assert "smollm2" in proc.stdout  # the command itself ran, once, after the relaunch
    assert proc.stdout.count("smollm2:") == 1
    assert f"allocator: {name}" in proc.stdout

    plain = run_entry(TUNEWISE_ALLOCATOR="system")
    assert plain.returncode == 0, plain.stderr
    assert "allocator: glibc" in plain.stdout


def test_an_unknown_TUNEWISE_ALLOCATOR_is_named_without_a_traceback():
    proc = run_entry(TUNEWISE_ALLOCATOR="mimalloc")
    assert proc.returncode == 2
    assert "TUNEWISE_ALLOCATOR='mimalloc'" in proc.stderr and "auto, tcmalloc, jemalloc, system" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_allocator_the_user_preloaded_is_kept():
    """LD_PRELOAD naming jemalloc already: no second malloc is stacked on top of it."""
    from tunewise.hardware import allocator_preload_env

    assert allocator_preload_env({"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}) is None
    assert allocator_preload_env({"TUNEWISE_ALLOCATOR": "system"}) is None


def test_main_called_inside_a_process_never_replaces_it():
    """`tunewise.cli.main` in a test or notebook runs the command in place: only `entry` may relaunch."""
    code = ("import os, sys; from tunewise.cli import main; pid = os.getpid(); sys.argv = ['tunewise', 'models']; "
            "main(); print('same process' if os.getpid() == pid and 'TUNEWISE_ALLOCATOR_RELAUNCHED' not in os.environ "
            "else 'relaunched')")
    proc = run_entry(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("smollm2:") == 1 and "same process" in proc.stdout
