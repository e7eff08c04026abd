"""Weights downloads against a local HTTP server standing in for the hub and torchvision's host.

Nothing here reaches the internet: the server listens on 127.0.0.1 and the endpoints are set with
HF_ENDPOINT and RALIF_TORCH_MODELS_URL. It answers like the Hugging Face hub (HEAD with
X-Repo-Commit / X-Linked-Etag / X-Linked-Size and a redirect to a blob URL) and honours Range.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from ralif import weights
from ralif.cli import main as cli_main
from ralif.encoders import OpenClipEncoder, TorchvisionResNet18Encoder
from ralif.weights import (
    ChecksumMismatch,
    DownloadCancelled,
    WeightsSource,
    WeightsUnavailable,
    download,
    local_file,
    openclip_source,
    partial_bytes,
    resnet18_source,
    source_for_spec,
)

TINY = "ralif-test-tiny-vit-dl"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
COMMIT = "c" * 40


class FakeHosts:
    """Files by URL path, plus knobs to break the transfer."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hub: dict[str, str] = {}           # "/repo/resolve/main/name" -> blob path
        self.fail_after: int | None = None      # close the connection after this many body bytes, once
        self.ignore_range = False
        self.requests: list[tuple[str, str, str | None]] = []
        self.seconds_per_mb = 0.0               # slow the body down, so a page can show its progress

    def add_hub_file(self, repo: str, name: str, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.files[f"/cdn/{sha}"] = data
        self.hub[f"/{repo}/resolve/main/{name}"] = f"/cdn/{sha}"
        return sha


def _handler(hosts: FakeHosts) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _answer(self, body: bool) -> None:
            hosts.requests.append((self.command, self.path, self.headers.get("Range")))
            if self.path in hosts.hub:
                blob = hosts.hub[self.path]
                data = hosts.files[blob]
                self.send_response(302)
                self.send_header("Location", blob)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = hosts.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
            if match and not hosts.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            payload = data[start:]
            if hosts.fail_after is not None:
                payload, hosts.fail_after = payload[:hosts.fail_after], None
                self.close_connection = True
            if not hosts.seconds_per_mb:
                self.wfile.write(payload)
                return
            step = 1 << 17
            for i in range(0, len(payload), step):
                self.wfile.write(payload[i:i + step])
                self.wfile.flush()
                time.sleep(hosts.seconds_per_mb * step / 1e6)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


@pytest.fixture()
def hosts(tmp_path, monkeypatch):
    fake = FakeHosts()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setenv("RALIF_TORCH_MODELS_URL", base + "/models")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(11)
    return open_clip.create_model(TINY)


def safetensors_bytes(model: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def register_tag(monkeypatch, repo: str) -> None:
    from open_clip import pretrained as oc_pretrained

    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY,
                        {"testtag": oc_pretrained._pcfg(hf_hub=f"{repo}/", quick_gelu=False)})


def _blob_source(repo: str = "example/blob") -> WeightsSource:
    return WeightsSource("test blob", "test", hf_repo=repo, hf_files=("open_clip_model.safetensors",))


def _check_progress(events, total: int) -> None:
    done = [e.done for e in events]
    assert done == sorted(done), "bytes done must never go back"
    assert events[-1].done == events[-1].total == total
    assert all(e.bytes_per_s >= 0 for e in events)


def test_open_clip_tag_download_is_found_offline_afterwards(hosts, tiny_model, monkeypatch, tmp_path):
    repo = "example/tiny-clip"
    data = safetensors_bytes(tiny_model)
    sha = hosts.add_hub_file(repo, "open_clip_model.safetensors", data)
    register_tag(monkeypatch, repo)
    source = openclip_source(TINY, "testtag")
    assert source.hf_files == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    assert local_file(source) is None
    events = []
    path = download(source, progress=events.append)
    _check_progress(events, len(data))
    assert events[-1].text().endswith("MB/s") and " of " in events[-1].text()
    # The hub's own layout, so open_clip and huggingface_hub find the file.
    repo_dir = tmp_path / "hub" / "models--example--tiny-clip"
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert (repo_dir / "blobs" / sha).read_bytes() == data
    assert path == repo_dir / "snapshots" / COMMIT / "open_clip_model.safetensors" and path.read_bytes() == data
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(repo, "open_clip_model.safetensors", cache_dir=str(tmp_path / "hub")) == str(path)
    assert not list((repo_dir / "blobs").glob("*.partial"))
    # Offline from now on: the encoder loads the downloaded weights from the cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n_requests = len(hosts.requests)
    enc = OpenClipEncoder(TINY, pretrained="testtag", device="cpu")
    assert enc.id == f"open_clip:{TINY}:testtag"
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(tiny_model.visual.eval()(image), dim=-1)
    assert torch.allclose(enc.encode(image), expected, atol=1e-5)
    assert download(source) == path and len(hosts.requests) == n_requests   # already here: no request


def test_the_bin_file_is_used_when_there_is_no_safetensors(hosts, tiny_model, monkeypatch):
    buf = io.BytesIO()
    torch.save(tiny_model.state_dict(), buf)
    hosts.add_hub_file("example/bin-only", "open_clip_pytorch_model.bin", buf.getvalue())
    register_tag(monkeypatch, "example/bin-only")
    path = download(openclip_source(TINY, "testtag"))
    assert path.name == "open_clip_pytorch_model.bin" and path.read_bytes() == buf.getvalue()
    assert [r[1].rsplit("/", 1)[-1] for r in hosts.requests if r[0] == "HEAD"] == [
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def test_an_interrupted_download_resumes_where_it_stopped(hosts, tmp_path):
    data = np.random.default_rng(0).bytes(1_500_000)
    hosts.add_hub_file("example/blob", "open_clip_model.safetensors", data)
    source = _blob_source()
    hosts.fail_after = 600_000
    with pytest.raises(WeightsUnavailable, match="run it again to resume") as info:
        download(source)
    assert not info.value.offline
    assert partial_bytes(source) == 600_000 and local_file(source) is None
    events = []
    path = download(source, progress=events.append)
    assert path.read_bytes() == data
    ranges = [r[2] for r in hosts.requests if r[0] == "GET"]
    assert ranges == [None, "bytes=600000-"]
    assert events[0].done == events[0].resumed_from == 600_000
    _check_progress(events, len(data))
    assert partial_bytes(source) == 0


def test_a_server_that_ignores_range_restarts_cleanly(hosts):
    data = np.random.default_rng(1).bytes(700_000)
    hosts.add_hub_file("example/blob", "open_clip_model.safetensors", data)
    source = _blob_source()
    hosts.fail_after = 300_000
    with pytest.raises(WeightsUnavailable):
        download(source)
    hosts.ignore_range = True
    assert download(source).read_bytes() == data


def test_cancel_keeps_the_partial_file(hosts):
    data = np.random.default_rng(2).bytes(1_200_000)
    hosts.add_hub_file("example/blob", "open_clip_model.safetensors", data)
    source = _blob_source()
    with pytest.raises(DownloadCancelled, match="resumes there"):
        download(source, cancel=lambda: True)
    assert 0 < partial_bytes(source) < len(data)
    assert download(source).read_bytes() == data


def test_resnet18_download_is_hash_checked_and_found_by_the_encoder(hosts, monkeypatch, tmp_path):
    from torchvision.models import resnet18

    # The published file's name carries its sha256 prefix: random bytes under that name are refused.
    real = resnet18_source()
    assert real.sha256_prefix == "f37072fd" and real.dest.endswith("checkpoints/resnet18-f37072fd.pth")
    hosts.files["/models/resnet18-f37072fd.pth"] = b"not the weights" * 1000
    with pytest.raises(ChecksumMismatch, match="not the published file"):
        download(real)
    assert not Path(real.dest).exists() and partial_bytes(real) == 0

    # A random-weight file whose name carries its own hash stands in for the real one.
    torch.manual_seed(3)
    ref = resnet18(weights=None).eval()
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    data = buf.getvalue()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    hosts.files[f"/models/{name}"] = data
    monkeypatch.setattr(weights, "RESNET18_URL", f"https://download.pytorch.org/models/{name}")
    with pytest.raises(RuntimeError, match="ralif weights download resnet18:imagenet"):
        TorchvisionResNet18Encoder("imagenet", image_size=32, device="cpu")
    events = []
    path = download(resnet18_source(), progress=events.append)
    _check_progress(events, len(data))
    assert path == tmp_path / "torch" / "hub" / "checkpoints" / name
    enc = TorchvisionResNet18Encoder("imagenet", image_size=32, device="cpu")
    batch = torch.rand(2, 3, 32, 32)
    ref.fc = torch.nn.Identity()
    with torch.no_grad():
        assert torch.allclose(enc.encode(batch), ref(batch), atol=1e-5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_a_clear_message_with_fixes(hosts, monkeypatch):
    source = _blob_source()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as info:
        download(source)
    assert time.perf_counter() - start < 10
    err = info.value
    assert err.offline and len(err.fixes) == 3
    assert "127.0.0.1 cannot be reached" in str(err) and "may be offline" in str(err)
    assert "another encoder" not in err.fixes[0] and "precomputed embeddings" in err.fixes[0]
    assert "path of a weights file" in err.fixes[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE") as info:
        download(source)
    assert info.value.offline
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("RALIF_TORCH_MODELS_URL", f"http://127.0.0.1:{closed_port()}/models")
    with pytest.raises(WeightsUnavailable, match="cannot be reached"):
        download(resnet18_source())


def test_specs_map_to_their_downloads(tmp_path):
    assert source_for_spec("clip:ViT-B-16:openai").hf_repo == "timm/vit_base_patch16_clip_224.openai"
    assert source_for_spec("resnet18:imagenet").url.endswith("resnet18-f37072fd.pth")
    assert source_for_spec("resnet18-32:imagenet").spec == "resnet18:imagenet"
    (tmp_path / "w.pt").write_bytes(b"x")
    for spec in ("clip:ViT-B-16:none", f"clip:ViT-B-16:{tmp_path / 'w.pt'}", "resnet18:none",
                 "precomputed:x.npz", "pixels:8"):
        assert source_for_spec(spec) is None
    with pytest.raises(ValueError, match="not an open_clip tag"):
        source_for_spec("clip:ViT-B-16:nope")


def test_weights_command_downloads_with_the_same_code(hosts, tiny_model, monkeypatch, capsys):
    hosts.add_hub_file("example/cli", "open_clip_model.safetensors", safetensors_bytes(tiny_model))
    register_tag(monkeypatch, "example/cli")
    assert cli_main(["weights", "download", f"clip:{TINY}:testtag"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"].endswith("open_clip_model.safetensors") and out["present"] is True
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    hosts.add_hub_file("example/other", "open_clip_model.safetensors", b"x")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY,
                        {"other": open_clip.pretrained._pcfg(hf_hub="example/other/", quick_gelu=False)})
    assert cli_main(["weights", "download", f"clip:{TINY}:other"]) == 1
    assert "cannot be reached" in capsys.readouterr().err
