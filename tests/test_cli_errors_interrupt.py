"""Ctrl-C in any command: one ``interrupted`` line and exit code 130, not a stack trace, after the
command's own cleanup has run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ralif.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_keyboard_interrupt_is_one_line_and_exit_130(monkeypatch, capsys):
    import ralif.commands.strategies as strategies

    cleaned: list[bool] = []

    def interrupted(args):
        try:
            raise KeyboardInterrupt
        finally:
            cleaned.append(True)

    monkeypatch.setattr(strategies, "run", interrupted)
    try:
        code = main(["strategies"])
    except KeyboardInterrupt:   # escaping main would stop the whole test run
        pytest.fail("KeyboardInterrupt escaped cli.main")
    assert code == 130
    assert capsys.readouterr().err == "ralif strategies: interrupted\n"
    assert cleaned == [True]


def test_sigint_to_a_running_command(tmp_path):
    # A real SIGINT to a real process: the command sleeps in its work, with a `finally` to clean up.
    marker, cleaned = tmp_path / "started", tmp_path / "cleaned"
    # Python's own Ctrl-C handler, even where this test run was started with SIGINT ignored (a
    # background job), which the child would inherit.
    code = f"""
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
import ralif.commands.strategies as strategies
from ralif.cli import main

def run(args):
    # The marker is written inside the try: a SIGINT that follows it at once still meets the finally.
    try:
        Path({str(marker)!r}).write_text("x")
        time.sleep(60)
    finally:
        Path({str(cleaned)!r}).write_text("x")

strategies.run = run
raise SystemExit(main(["strategies"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err == "ralif strategies: interrupted\n"
    assert cleaned.exists()
