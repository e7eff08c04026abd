"""``ralif app``: the command line it runs, and the app answering HTTP 200 on the chosen port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ralif.commands import app as app_command
from ralif.ui.launch import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_command_is_local_headless_with_xsrf() -> None:
    script = app_command.app_script()
    assert script is not None and script.name == "app.py"
    cmd = app_command.command(script, 9123)
    joined = " ".join(cmd)
    assert "--server.port 9123" in joined and "--server.address 127.0.0.1" in joined
    assert "--server.headless true" in joined and "--server.enableXsrfProtection true" in joined
    assert "--client.showErrorDetails none" in joined


def test_ralif_app_answers_on_its_port(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RALIF_PROJECTS", None)
    proc = subprocess.Popen([sys.executable, "-m", "ralif", "app", str(tmp_path / "projects"), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != 200:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(0.3)
        assert status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(15)
    # SIGTERM to `ralif app` stops the server itself: nothing is left answering on the port.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).close()
            time.sleep(0.3)
        except OSError:
            break
    else:
        raise AssertionError("the app server still answers after `ralif app` was terminated")


def test_bad_port_is_refused(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ralif", "app", "--port", "0"], check=False,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 2 and "--port" in out.stderr
