"""``ralif benchmark selection`` refuses arguments it cannot run with in the options' own words; the
top-level ``--help`` is plain text; every option of every command has help text."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from ralif.cli import build_parser, main


@pytest.fixture()
def no_benchmark(monkeypatch):
    def refuse(**kwargs):
        raise AssertionError("the benchmark ran with arguments that should have been refused")

    monkeypatch.setattr("ralif.benchmarking.selection_benchmark", refuse)


@pytest.mark.parametrize(("args", "message"), [
    (["--pool", "50"], "--pool 50 is too small for 1000 labeled samples (the default labeled set, max(--budget, "
                       "10 x 10 classes)) plus a batch of --budget 1000: the pool needs at least 2000 rows"),
    (["--pool", "0"], "--pool must be at least 2, not 0"),
    (["--pool", "-5"], "--pool must be at least 2, not -5"),
    (["--pool", "100", "--budget", "10", "--labeled", "95"], "--pool 100 is too small for 95 labeled samples "
                                                             "(--labeled) plus a batch of --budget 10"),
    (["--budget", "0"], "--budget must be at least 1, not 0"),
    (["--dim", "0"], "--dim must be at least 1, not 0"),
    (["--classes", "1"], "--classes must be at least 2, not 1"),
    (["--labeled", "0"], "--labeled must be at least 1, not 0"),
    (["--seed", "-1"], "--seed must be at least 0, not -1"),
    (["--naive", "-2"], "--naive must be at least 0, not -2"),
])
def test_benchmark_arguments_are_checked(capsys, no_benchmark, args, message):
    assert main(["benchmark", "selection", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ralif benchmark: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_benchmark_checks_a_features_file_by_its_rows(tmp_path, capsys, no_benchmark):
    path = tmp_path / "f.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.standard_normal((60, 4)), y_train=np.arange(60) % 3,
             x_test=rng.standard_normal((9, 4)), y_test=np.arange(9) % 3)
    assert main(["benchmark", "selection", "--features", str(path), "--budget", "40"]) == 1
    assert (f"the 60 training rows of {path} is too small for 40 labeled samples (the default labeled set, "
            f"max(--budget, 10 x 3 classes)) plus a batch of --budget 40") in capsys.readouterr().err


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "python -m ralif COMMAND" in out


def _options_without_help(parser: argparse.ArgumentParser, name: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{name} {sub_name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_has_help():
    assert _options_without_help(build_parser(), "ralif") == []
