"""A ``ralif project round`` killed (SIGKILL) or interrupted (Ctrl-C) mid-round: ``project info``
reads the round as failed, with a reason, instead of running forever.

The child is the real command line in a process of its own; its round is held inside the
computation (after the claim) until the test signals it, so nothing depends on how long a round
takes. After SIGKILL the dead child may be a zombie or already collected: either way ``info`` must
see it gone, so the test polls with a deadline instead of guessing which happens first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import DEMO, ROOT, wait_until

from ralif.cli import main as cli_main
from ralif.project import Project
from ralif.project.store import DB_NAME, release

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RALIF_THREADS": "1"}
# Generous: only a broken build waits this long; a passing run returns at the first poll that sees it.
DEADLINE_S = 120.0

# Runs `ralif project round FOLDER` with the round's computation replaced by one that says it has
# started (a marker file) and then waits to be killed.
_CHILD = """
import sys, time
from pathlib import Path
import ralif.project.rounds as rounds

def held(*args, **kwargs):
    Path(sys.argv[2]).write_text("in the round")
    time.sleep(3600)

rounds.compute_round = held
from ralif.cli import main
sys.exit(main(["project", "round", sys.argv[1]]))
"""


def _start_held_round(tmp_path: Path) -> tuple[Path, subprocess.Popen[str]]:
    folder = tmp_path / "demo"
    Project.create_demo(folder, assets=DEMO, run_first_round=False)
    release(folder / DB_NAME)
    marker = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(marker)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def started() -> bool:
        if child.poll() is not None:
            raise AssertionError(f"the round ended before it was held: {child.communicate()}")
        return marker.is_file()

    wait_until(started, timeout=DEADLINE_S, what="the child's round to start")
    return folder, child


def _info(folder: Path, capsys) -> dict:
    assert cli_main(["project", "info", str(folder)]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_reads_a_killed_round_as_failed(tmp_path: Path, capsys) -> None:
    folder, child = _start_held_round(tmp_path)
    try:
        assert _info(folder, capsys)["progress"]["round_status"] == "running"   # alive: left alone
        os.kill(child.pid, signal.SIGKILL)

        def failed() -> dict | None:
            info = _info(folder, capsys)
            return info if info["progress"]["round_status"] == "failed" else None

        info = wait_until(failed, timeout=DEADLINE_S, what="info to read the killed round as failed")
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert info["rounds"][-1]["status"] == "failed"
    assert info["rounds"][-1]["error"]                           # with a reason
    assert Project.open(folder).progress().round_status == "failed"


def test_ctrl_c_records_a_readable_reason(tmp_path: Path, capsys) -> None:
    folder, child = _start_held_round(tmp_path)
    try:
        os.kill(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=DEADLINE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted (Ctrl-C)" in err and f"ralif project round {folder}" in err
    last = _info(folder, capsys)["rounds"][-1]
    assert last["status"] == "failed"
    assert last["error"].startswith("interrupted (Ctrl-C)")

