"""``ralif project round``: a batch waiting to be labeled, --oracle-submit, and the reason a
round interrupted with Ctrl-C records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DEMO, make_images

from ralif.cli import main as cli_main
from ralif.project import Project
from ralif.project.rounds import failure_reason, run_next_round


def _statuses(folder: Path) -> list[tuple[int, str]]:
    return [(r["number"], r["status"]) for r in Project.open(folder).rounds()]


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("ralif project: error: "), err
    return lines[0]


def test_oracle_submit_answers_the_waiting_batch_first(demo_project: Project, capsys) -> None:
    folder = demo_project.folder
    assert demo_project.pending_round() == 1          # the demo's first batch waits
    assert cli_main(["project", "round", str(folder), "--oracle-submit", "2"]) == 0
    assert [r["round"] for r in json.loads(capsys.readouterr().out)] == [2, 3]
    assert _statuses(folder) == [(1, "submitted"), (2, "submitted"), (3, "ready")]
    # Run again: round 3's batch waits now, and is answered first too.
    assert cli_main(["project", "round", str(folder), "--oracle-submit", "1"]) == 0
    assert [r["round"] for r in json.loads(capsys.readouterr().out)] == [4]
    assert _statuses(folder)[-2:] == [(3, "submitted"), (4, "ready")]
    assert Project.open(folder).progress().labeled == 3 * 20


def test_oracle_submit_runs_a_queued_round_first(tmp_path: Path, capsys) -> None:
    folder = Project.create_demo(tmp_path / "demo", assets=DEMO, run_first_round=False).folder
    assert cli_main(["project", "round", str(folder), "--oracle-submit", "1"]) == 0
    assert [r["round"] for r in json.loads(capsys.readouterr().out)] == [1, 2]
    assert _statuses(folder) == [(1, "submitted"), (2, "ready")]


def test_a_waiting_batch_without_oracle_submit_says_how_to_go_on(demo_project: Project, capsys) -> None:
    folder = demo_project.folder
    assert cli_main(["project", "round", str(folder)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "round 1's batch" in line and "waiting to be labeled" in line
    assert "ralif app" in line                                     # label it in the app
    assert f"ralif project round {folder} --oracle-submit 1" in line   # the demo has true labels
    assert "submit it first" not in line
    assert _statuses(folder) == [(1, "ready")]                    # nothing changed


def _no_truth_project(tmp_path: Path) -> Project:
    make_images(tmp_path / "src", per_class=4)
    project = Project.create(tmp_path / "p", tmp_path / "src", encoder="pixels:2", known_labels="ignore",
                             batch_size=3)
    project.run_round()
    return project


def test_oracle_submit_without_true_labels_is_refused_with_what_to_do(tmp_path: Path, capsys) -> None:
    project = _no_truth_project(tmp_path)
    assert cli_main(["project", "round", str(project.folder), "--oracle-submit", "1"]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "--known-labels truth" in line and "ralif app" in line
    assert "set_oracle" not in line
    # Without the option: the app only; the oracle is not offered where it cannot answer.
    assert cli_main(["project", "round", str(project.folder)]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "ralif app" in line and "--oracle-submit" not in line
    assert _statuses(project.folder) == [(1, "ready")]


def test_oracle_submit_answers_where_the_app_switch_is_off(demo_project: Project, capsys) -> None:
    demo_project.set_oracle(False)
    assert cli_main(["project", "round", str(demo_project.folder), "--oracle-submit", "1"]) == 0
    reopened = Project.open(demo_project.folder)
    assert reopened.progress().labeled == 20
    assert reopened.settings["simulated_oracle"] is False      # the app's switch is left as it was


def test_round_help_tells_what_a_waiting_batch_needs(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["project", "round", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "A batch waiting to be labeled is labeled in the app" in text
    assert "a batch already waiting is answered first" in text


def test_an_interrupted_round_records_a_readable_reason(demo_project_no_round: Project) -> None:
    def ctrl_c(phase: str, progress: dict | None = None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_next_round(demo_project_no_round, ctrl_c)
    last = demo_project_no_round.rounds()[-1]
    assert last["status"] == "failed"
    assert last["error"].startswith("interrupted (Ctrl-C)")


def test_a_failure_without_a_message_reads_as_its_kind() -> None:
    assert failure_reason(KeyboardInterrupt()).startswith("interrupted (Ctrl-C)")
    assert failure_reason(RuntimeError()) == "RuntimeError"
    assert failure_reason(RuntimeError("disk on fire")) == "RuntimeError: disk on fire"
