"""``source_for_spec`` / ``ralif weights download`` tell an unknown spec, an unknown open_clip model
and an unknown tag (or resnet18 weights) apart, with the valid choices, instead of saying that a
mistyped spec "needs no download"; every valid spec keeps working. Nothing here downloads."""

from __future__ import annotations

import pytest

from ralif.cli import main
from ralif.weights import source_for_spec


@pytest.mark.parametrize(("spec", "match"), [
    ("bogus", r"unknown encoder spec 'bogus'; use clip:<model>"),
    ("resnet:imagenet", r"unknown encoder spec"),
    ("resnet18-x:none", r"expected resnet18 or resnet18-<size>"),
    ("resnet18:imagnet", r"unknown resnet18 weights 'imagnet'.*did you mean 'imagenet'\?.*imagenet, none"),
    ("resnet18:/no/such/weights.pth", r"resnet18 weights file not found: /no/such/weights.pth"),
    ("clip:NoModel:foo", r"unknown open_clip model 'NoModel'.*models: ViT-B-16, ViT-B-32"),
    ("clip:vit-b-16:openai", r"unknown open_clip model 'vit-b-16'.*did you mean 'ViT-B-16'"),
    ("clip:NoModel:none", r"unknown open_clip model 'NoModel'"),
    ("clip::openai", r"needs an open_clip model name"),
    ("clip:ViT-B-16:opnai",
     r"'opnai' is not an open_clip tag for ViT-B-16.*did you mean 'openai'\?.*tags of ViT-B-16: openai"),
    ("clip:ViT-B-16:/no/such/model.pt", r"checkpoint file not found: /no/such/model.pt"),
])
def test_unknown_specs_models_and_tags_are_told_apart(spec, match):
    with pytest.raises(ValueError, match=match):
        source_for_spec(spec)


def test_valid_specs_keep_working(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    assert source_for_spec("clip:ViT-B-16:openai").hf_repo == "timm/vit_base_patch16_clip_224.openai"
    assert source_for_spec("clip:ViT-B-16").spec == "clip:ViT-B-16:openai"   # the default tag
    assert source_for_spec("open_clip:ViT-B-32:laion2b_s34b_b79k").spec == "clip:ViT-B-32:laion2b_s34b_b79k"
    for spec in ("resnet18:imagenet", "resnet18", "RESNET18-32:ImageNet", "resnet18_32:imagenet1k_v1"):
        assert source_for_spec(spec).spec == "resnet18:imagenet", spec
    for spec in ("clip:ViT-B-16:none", "clip:ViT-B-16:random", f"clip:ViT-B-16:{tmp_path / 'w.pt'}",
                 "resnet18:none", "resnet18-32:random", f"resnet18:{tmp_path / 'w.pt'}", "precomputed:x.npz",
                 "pixels", "pixels:8"):
        assert source_for_spec(spec) is None, spec


def test_weights_download_names_the_mistake(capsys):
    assert main(["weights", "download", "resnet18:imagnet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ralif weights: error: unknown resnet18 weights 'imagnet'") and "needs no download" not in err
    assert main(["weights", "download", "bogus"]) == 1
    assert "unknown encoder spec 'bogus'" in capsys.readouterr().err
    assert main(["weights", "download", "clip:NoModel:foo"]) == 1
    err = capsys.readouterr().err
    assert "unknown open_clip model 'NoModel'" in err and "is not an open_clip tag" not in err
    # A valid spec that has nothing to download still says so.
    assert main(["weights", "download", "resnet18:none"]) == 1
    assert "needs no download" in capsys.readouterr().err
