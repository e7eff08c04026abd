"""``ralif simulate``: every argument that can be checked is refused before any work, with one clear line.

"Before any work" is checked by making the first fit fail: a refused run never reaches it, and never
leaves an output folder behind.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from ralif.cli import main
from ralif.features import FeatureSplits, load_feature_splits
from ralif.learners import LinearProbeLearner
from ralif.pools import PoolRecipe, build_pool
from ralif.simulation import SimulationConfig, simulate

FAST = ["--initial", "6", "--budget", "3", "--cycles", "2", "--seeds", "1", "--quiet",
        "--strategies", "random,uncertainty"]


def _blobs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, 4)) * 3
    y = np.arange(n) % k
    return (centers[y] + rng.standard_normal((n, 4))).astype(np.float32), y


@pytest.fixture()
def feats(tmp_path):
    x_tr, y_tr = _blobs(60, 3, 0)
    x_te, y_te = _blobs(30, 3, 1)
    path = tmp_path / "small.npz"
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, classes=np.array(["cat", "dog", "cow"]))
    return path


@pytest.fixture()
def no_fit(monkeypatch):
    """Fail the test if any model is fitted: the run had to be refused before any work."""
    def boom(*_a, **_k):
        raise AssertionError("a model was fitted before the arguments were refused")

    monkeypatch.setattr(LinearProbeLearner, "fit", boom)


def _refused(capsys, argv: list[str]) -> str:
    rc = main(["simulate", *argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


# 1. Too few cycles: the same message the report would give, but before any fit.

def test_one_cycle_is_refused_before_any_fit(feats, tmp_path, capsys, no_fit):
    argv = ["--features", str(feats), *FAST, "--out", str(tmp_path / "o")]
    argv[argv.index("--cycles") + 1] = "1"
    err = _refused(capsys, argv)
    assert "--cycles must be at least 2" in err
    assert "curves need cycle 0 plus at least 2 active-learning cycles" in err
    assert not (tmp_path / "o").exists()


def test_library_refuses_one_cycle_before_any_fit(feats, no_fit):
    with pytest.raises(ValueError, match="curves need cycle 0 plus at least 2"):
        simulate(load_feature_splits(feats), SimulationConfig(initial=6, budget=3, cycles=1, seeds=[0]))


# 2. A single class: features file, --pool-classes, image folder.

def test_a_features_file_of_one_class_is_refused(tmp_path, capsys, no_fit):
    x, _ = _blobs(40, 2, 0)
    path = tmp_path / "one.npz"
    np.savez(path, x_train=x, y_train=np.zeros(40, int), x_test=x[:10], y_test=np.zeros(10, int))
    err = _refused(capsys, ["--features", str(path), *FAST, "--out", str(tmp_path / "o")])
    assert "one class ('0')" in err and "at least 2 classes" in err
    assert not (tmp_path / "o").exists()


def test_library_refuses_a_single_class(no_fit):
    x, _ = _blobs(40, 2, 0)
    data = FeatureSplits(x, np.zeros(40, np.int64), x[:10], np.zeros(10, np.int64), ["a"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        simulate(data, SimulationConfig(initial=6, budget=3, cycles=2, seeds=[0]))


def test_one_pool_class_is_refused(feats, tmp_path, capsys, no_fit):
    err = _refused(capsys, ["--features", str(feats), "--pool-classes", "cat", *FAST, "--out", str(tmp_path / "o")])
    assert "--pool-classes keeps one class ('cat')" in err and "at least 2 classes" in err


def test_an_image_folder_of_one_class_is_refused_before_embedding(tmp_path, capsys, monkeypatch):
    import ralif.encoders

    def no_encoder(*_a, **_k):
        raise AssertionError("the encoder was built before the folder was refused")

    monkeypatch.setattr(ralif.encoders, "build_encoder", no_encoder)
    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / "imgs" / split / "cat" / f"{i}.png")
    err = _refused(capsys, ["--images", str(tmp_path / "imgs"), *FAST, "--out", str(tmp_path / "o")])
    assert "images of one class ('cat')" in err and "at least 2 class folders" in err
    assert not (tmp_path / "o").exists()


# 3. A class listed twice.

def test_a_pool_class_listed_twice_is_named(feats, tmp_path, capsys, no_fit):
    err = _refused(capsys, ["--features", str(feats), "--pool-classes", "cat,dog,cat", *FAST,
                            "--out", str(tmp_path / "o")])
    assert "--pool-classes lists 'cat' twice" in err and "no pool samples" not in err
    with pytest.raises(ValueError, match="list 'cat' twice"):
        build_pool(load_feature_splits(feats), PoolRecipe(classes=("cat", "cat")))


# 4. --out checked first.

def test_out_naming_a_file_is_refused_at_once(feats, tmp_path, capsys, no_fit):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    err = _refused(capsys, ["--features", str(feats), *FAST, "--out", str(afile)])
    assert f"--out {afile} is a file, not a folder" in err
    err = _refused(capsys, ["--features", str(feats), *FAST, "--out", str(afile / "sub")])
    assert f"is inside {afile}, which is a file" in err
    assert afile.read_text() == "keep me"


def test_out_that_cannot_be_written_is_refused_and_not_left_behind(feats, tmp_path, capsys, monkeypatch, no_fit):
    import ralif.commands.simulate as cmd

    def denied(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cmd.tempfile, "TemporaryFile", denied)
    out = tmp_path / "new" / "out"
    err = _refused(capsys, ["--features", str(feats), *FAST, "--out", str(out)])
    assert f"cannot write in the --out folder {out}: Permission denied" in err
    assert not (tmp_path / "new").exists()


def test_out_made_for_a_run_that_fails_on_its_data_is_removed(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("x\n")
    _refused(capsys, ["--features", str(bad), *FAST, "--out", str(tmp_path / "a" / "b")])
    assert not (tmp_path / "a").exists()


# 5. Not an .npz: said so, and no advice to unpickle.

@pytest.mark.parametrize("kind", ["text", "npy", "truncated", "empty"])
def test_a_file_that_is_not_an_npz_is_named_without_pickle_advice(tmp_path, feats, kind):
    path = tmp_path / "g.npz"
    if kind == "text":
        path.write_text("x\n")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "truncated":
        path.write_bytes(feats.read_bytes()[:200])
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_feature_splits(path)
    text = str(info.value)
    assert "not a NumPy .npz archive" in text or "damaged or truncated" in text, text
    assert "pickle" not in text.lower()


def test_cli_says_not_an_npz(tmp_path, capsys, no_fit):
    path = tmp_path / "g.npz"
    path.write_text("x\n")
    err = _refused(capsys, ["--features", str(path), *FAST, "--out", str(tmp_path / "o")])
    assert "is not a NumPy .npz archive" in err and "pickle" not in err.lower()


# 6. Strategies, pool size and --model with --features.

def test_an_empty_strategy_list_is_refused(feats, tmp_path, capsys, no_fit):
    argv = ["--features", str(feats), *FAST, "--out", str(tmp_path / "o")]
    argv[argv.index("--strategies") + 1] = ""
    assert "--strategies is empty" in _refused(capsys, argv)


def test_help_says_random_always_runs_and_duplicates_run_once(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Random is always run as the reference" in text
    assert "a strategy listed twice runs once" in text


def test_a_pool_size_below_one_per_class_is_refused(feats, tmp_path, capsys, no_fit):
    err = _refused(capsys, ["--features", str(feats), "--pool-size", "2", *FAST, "--out", str(tmp_path / "o")])
    assert "pool size 2 is below one sample per class" in err and "3 classes" in err


def test_a_pool_too_small_for_the_budget_says_what_was_asked(tmp_path, capsys, no_fit):
    # Class sizes 50, 2, 2: --pool-size 5 keeps floor(50·5/54) = 4, then 1 and 1, so 6 rows.
    x, _ = _blobs(54, 3, 0)
    y = np.array([0] * 50 + [1, 1, 2, 2])
    path = tmp_path / "skew.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:9], y_test=np.arange(9) % 3)
    err = _refused(capsys, ["--features", str(path), "--pool-size", "5", *FAST, "--out", str(tmp_path / "o")])
    assert "exceed the pool of 6 samples (--pool-size 5 was asked" in err
    assert "keeping at least one sample" in err


def test_model_resnet18_with_features_is_refused(feats, tmp_path, capsys, no_fit):
    err = _refused(capsys, ["--features", str(feats), "--model", "resnet18", *FAST, "--out", str(tmp_path / "o")])
    assert "--model resnet18" in err and "needs --images" in err
    err = _refused(capsys, ["--features", str(feats), "--encoder", "clip:x:none", *FAST, "--out", str(tmp_path / "o")])
    assert "--encoder applies to --images only" in err


def test_pool_options_with_images_are_refused(tmp_path, capsys):
    err = _refused(capsys, ["--images", str(tmp_path), "--pool-size", "10", *FAST, "--out", str(tmp_path / "o")])
    assert "--pool-size derives a pool from --features only" in err


# 7. Device.

def test_an_unknown_device_is_named_plainly(feats, tmp_path, capsys, no_fit):
    err = _refused(capsys, ["--features", str(feats), "--device", "foo", *FAST, "--out", str(tmp_path / "o")])
    assert "unknown device 'foo' (cpu, cuda, cuda:N, mps)" in err
    assert "ipu" not in err and "privateuseone" not in err


# 9. The file `ralif embed --output` writes.

def test_embed_output_says_what_it_lacks(tmp_path, capsys, no_fit):
    path = tmp_path / "emb.npz"
    np.savez(path, features=np.zeros((4, 3), np.float32), paths=np.array(["a.png"] * 4),
             hashes=np.array(["h"] * 4))
    err = _refused(capsys, ["--features", str(path), *FAST, "--out", str(tmp_path / "o")])
    assert "ralif embed --output" in err
    assert "no labels (y_train, y_test) and no train/test split" in err
    assert "x_train, y_train, x_test, y_test" in err and "simulate --images" in err


def test_a_quantised_file_without_labels_names_them(tmp_path):
    path = tmp_path / "q.npz"
    u8 = np.zeros((4, 2), np.uint8)
    np.savez(path, emb_train_uint8=u8, emb_test_uint8=u8, quant_scale=np.float32(1), quant_zero_point=np.int32(0))
    with pytest.raises(ValueError, match="lacks y_train, y_test"):
        load_feature_splits(path)


def test_a_zip_without_arrays_names_the_missing_keys(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hi")
    with pytest.raises(ValueError, match="lacks x_train, y_train, x_test, y_test"):
        load_feature_splits(path)


# A run that passes every check still works and writes its reports.

def test_a_valid_run_still_writes_its_results(feats, tmp_path, capsys):
    out = tmp_path / "new" / "o"
    assert main(["simulate", "--features", str(feats), *FAST, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["strategies"]) == {"random", "uncertainty"} and "partial" not in res
    assert not list(out.glob(".ralif-write-check-*"))
