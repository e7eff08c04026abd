"""``ralif embed --output``: written atomically (a temporary file beside it, then renamed), the summary
names the exact file written (``.npz`` added to a bare name), and a destination that cannot be
written is refused before the images are scanned and encoded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import make_images

import ralif.commands.embed as embed
from ralif.cli import main


@pytest.fixture()
def setup(tmp_path: Path) -> list[str]:
    paths = make_images(tmp_path / "imgs", per_class=2, classes=("a", "b"))
    feats = np.arange(len(paths) * 3, dtype=np.float32).reshape(len(paths), 3)
    np.save(tmp_path / "emb.npy", feats)
    # Precomputed rows (matched by position): no model to build or run.
    return ["embed", "--images", str(tmp_path / "imgs"), "--encoder", f"precomputed:{tmp_path / 'emb.npy'}",
            "--cache", str(tmp_path / "cache"), "--device", "cpu", "--num-workers", "0"]


def test_output_without_suffix_is_named_in_the_summary(setup, tmp_path, capsys):
    assert main([*setup, "--output", str(tmp_path / "out" / "feats")]) == 0
    summary = json.loads(capsys.readouterr().out)
    written = tmp_path / "out" / "feats.npz"
    assert summary["output"] == str(written)
    with np.load(written) as saved:
        assert saved["features"].shape == (4, 3) and len(saved["paths"]) == len(saved["hashes"]) == 4
    assert main([*setup, "--output", str(tmp_path / "exact.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(tmp_path / "exact.npz")
    assert main(setup) == 0
    assert json.loads(capsys.readouterr().out)["output"] is None


def test_output_is_written_to_a_temporary_file_and_renamed(setup, tmp_path, capsys, monkeypatch):
    target = tmp_path / "feats.npz"
    target.write_bytes(b"the previous export")
    real_savez = np.savez

    def failing_savez(file, **arrays):
        # Killed half-way through writing the archive.
        if isinstance(file, (str, os.PathLike)):
            Path(file).write_bytes(b"torn")
        else:
            file.write(b"torn")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embed.np, "savez", failing_savez)
    assert main([*setup, "--output", str(target)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert target.read_bytes() == b"the previous export"   # untouched: the temporary took the failure
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no temporary left
    monkeypatch.setattr(embed.np, "savez", real_savez)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((str(a), str(b))), real_replace(a, b))[1])
    assert main([*setup, "--output", str(target)]) == 0
    capsys.readouterr()
    assert [Path(b) for _, b in replaced] == [target]
    tmp = Path(replaced[0][0])
    assert tmp.parent == tmp_path and tmp.name.startswith(".feats.npz.")


@pytest.mark.parametrize("bad", ["folder", "folder.npz", "file/feats.npz"])
def test_a_bad_destination_is_refused_before_extraction(setup, tmp_path, capsys, monkeypatch, bad):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "file").write_text("x")

    def refuse(*args, **kwargs):
        raise AssertionError("images were scanned or encoded before --output was checked")

    monkeypatch.setattr("ralif.images.scan_images", refuse)
    monkeypatch.setattr("ralif.encoders.build_encoder", refuse)
    assert main([*setup, "--output", str(tmp_path / bad)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ralif embed: error: ")
    assert ("is a folder" in lines[0]) if bad != "file/feats.npz" else ("is a file, not a folder" in lines[0])
    assert not (tmp_path / "folder.npz" / "x").exists() and not (tmp_path / "folder" / ".npz").exists()
