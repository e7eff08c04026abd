"""Pretrained weights: where they live, whether they are here, and a resumable, checked download.

Files go where the loading code already looks, so that once downloaded they are found offline:

* open_clip tags: the Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``) in the hub's own layout (``models--ORG--NAME/blobs``, ``snapshots``,
  ``refs/main``), the ``.safetensors`` file preferred as open_clip prefers it;
* torchvision ResNet18 (ImageNet): torch's hub ``checkpoints/`` folder (``TORCH_HOME``).

A download writes ``<file>.partial`` and continues it with an HTTP Range request when it is run
again; the file is hash-checked where a hash is known (the sha256 prefix in torchvision's file name,
the sha256 the hub sends as the ETag of large files) and only then moved into place. ``progress``
receives a :class:`DownloadProgress` after every chunk. The servers can be replaced, for mirrors and
tests: ``HF_ENDPOINT`` (as for the hub client) and ``RALIF_TORCH_MODELS_URL``, or ``endpoint=``.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

HF_ENDPOINT = "https://huggingface.co"
TORCH_MODELS_URL = "https://download.pytorch.org/models"
RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
RESNET18_MB = 44.661          # torchvision's ResNet18_Weights.IMAGENET1K_V1 "_file_size"
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 18
_TIMEOUT_S = 20.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")     # torch.hub's convention
_SHA256 = re.compile(r"^[a-f0-9]{64}$")
_HF_WEIGHTS = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS = "open_clip_model.safetensors"


class WeightsUnavailable(RuntimeError):
    """Weights that cannot be had now; ``fixes`` lists what the user can do instead."""

    def __init__(self, message: str, fixes: list[str] | None = None, offline: bool = False) -> None:
        self.fixes = list(fixes or [])
        self.offline = offline
        self.message = message      # without the fixes, for a page that lists them itself
        text = message + ("" if not self.fixes else " Fixes: " + " ".join(
            f"({i}) {f}" for i, f in enumerate(self.fixes, 1)))
        super().__init__(text)


class ChecksumMismatch(WeightsUnavailable):
    """The downloaded bytes are not the published file; nothing was kept."""


class DownloadCancelled(RuntimeError):
    """``cancel()`` returned true; the partial file is kept for a later resume."""


@dataclass(frozen=True)
class DownloadProgress:
    done: int                       # bytes on disk, a resumed part included
    total: int | None               # None while the server has not said
    bytes_per_s: float              # over this run (resumed bytes not counted)
    resumed_from: int = 0

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    def text(self) -> str:
        """``"123.4 of 598.5 MB, 12.3 MB/s"``."""
        of = f" of {self.total / 1e6:.1f}" if self.total else ""
        return f"{self.done / 1e6:.1f}{of} MB, {self.bytes_per_s / 1e6:.1f} MB/s"


ProgressFn = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class WeightsSource:
    """One downloadable weights file. ``hf_repo`` + ``hf_files`` (tried in order) for the hub,
    else ``url``; ``dest`` is where a URL download lands."""

    title: str
    spec: str
    hf_repo: str | None = None
    hf_files: tuple[str, ...] = ()
    url: str | None = None
    dest: str | None = None
    sha256_prefix: str | None = None
    size_bytes: int | None = None


# ----------------------------------------------------------------------------- locations


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_checkpoints_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resnet18_checkpoint_path() -> Path:
    """Where torchvision keeps (and ralif looks for) the ImageNet ResNet18 file."""
    return torch_checkpoints_dir() / os.path.basename(RESNET18_URL)


def hub_offline() -> bool:
    return any((os.environ.get(v) or "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or HF_ENDPOINT).rstrip("/")


def _hf_repo_dir(repo: str) -> Path:
    return hf_hub_cache_dir() / ("models--" + repo.replace("/", "--"))


def hf_cached_file(repo: str, filename: str) -> Path | None:
    """The cached file of ``repo`` at ``refs/main``, as the hub client resolves it offline."""
    root = _hf_repo_dir(repo)
    try:
        commit = (root / "refs" / "main").read_text().strip()
    except OSError:
        return None
    path = root / "snapshots" / commit / filename
    return path if path.is_file() else None


# ----------------------------------------------------------------------------- sources


def _safe_alternatives(filename: str) -> list[str]:
    # open_clip's own order: a .safetensors twin first, when one may exist.
    if filename == _HF_WEIGHTS:
        return [_HF_SAFE_WEIGHTS, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def openclip_source(model_name: str, tag: str) -> WeightsSource:
    """The hub file behind an open_clip pretrained tag (``ValueError`` for an unknown tag)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"'{tag}' is not an open_clip tag for {model_name} (tags: {', '.join(tags) or 'none'})")
    hub = cfg.get("hf_hub", "")
    spec = f"clip:{model_name}:{tag}"
    if hub:
        repo, filename = os.path.split(hub)
        return WeightsSource(f"open_clip {model_name} ({tag})", spec, hf_repo=repo,
                             hf_files=tuple(_safe_alternatives(filename or _HF_WEIGHTS)))
    url = cfg.get("url", "")
    if not url:
        raise ValueError(f"open_clip tag {tag!r} of {model_name} names no file to download")
    # Tags without a hub copy use open_clip's legacy cache, as open_clip.download_pretrained_from_url.
    dest = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
    return WeightsSource(f"open_clip {model_name} ({tag})", spec, url=url, dest=dest)


def resnet18_source() -> WeightsSource:
    name = os.path.basename(RESNET18_URL)
    match = _HASH_IN_NAME.search(name)
    return WeightsSource("torchvision ResNet18 (ImageNet)", "resnet18:imagenet", url=RESNET18_URL,
                         dest=str(resnet18_checkpoint_path()), sha256_prefix=match.group(1) if match else None,
                         size_bytes=round(RESNET18_MB * 1e6))


_CLIP_KINDS = ("clip", "open_clip", "openclip")
_RANDOM_WEIGHTS = ("none", "random")
_RESNET18_IMAGENET = ("imagenet", "imagenet1k_v1")
_SPEC_FORMS = ("clip:<model>:<tag|none|checkpoint file>, resnet18:<imagenet|none|file>, "
               "resnet18-32:<imagenet|none|file>, precomputed:<file.npz> or pixels[:N]")
_SHOW_CHOICES = 8
# Shown first when an unknown open_clip model is named (the rest follow in open_clip's order).
_COMMON_CLIP_MODELS = ("ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-H-14", "RN50", "convnext_base_w")


def _choices(given: str, valid: list[str], what: str) -> str:
    """``"did you mean 'x'? models: a, b, c, ... (144 in all)"``: the valid choices, briefly."""
    lowered = {v.lower(): v for v in valid}
    close = [lowered[m] for m in difflib.get_close_matches(given.lower(), list(lowered), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    shown = ", ".join(valid[:_SHOW_CHOICES])
    more = f", ... ({len(valid)} in all)" if len(valid) > _SHOW_CHOICES else ""
    return f"{hint}{what}: {shown}{more}" if valid else f"{hint}{what}: none"


def _is_local_file(weights: str) -> bool:
    return os.path.isfile(os.path.expanduser(weights))


def _looks_like_path(weights: str) -> bool:
    return any(sep in weights for sep in ("/", "\\")) or weights.lower().endswith(
        (".pt", ".pth", ".bin", ".ckpt", ".safetensors"))


def source_for_spec(spec: str) -> WeightsSource | None:
    """The download behind an encoder spec, or None when it needs none (random weights, a local
    file, precomputed features, pixels).

    ``ValueError`` for a spec that names nothing: an unknown kind, an unknown open_clip model, a tag
    the model does not have, resnet18 weights that are neither ``imagenet``, ``none`` nor a file, or
    a checkpoint file that does not exist; the message lists the valid choices briefly."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind in _CLIP_KINDS:
        model_name, _, weights = rest.partition(":")
        if not model_name:
            raise ValueError(f"encoder spec {spec!r} needs an open_clip model name, e.g. clip:ViT-B-16:openai")
        import open_clip

        if open_clip.get_model_config(model_name) is None:
            models = open_clip.list_models()
            models = [m for m in _COMMON_CLIP_MODELS if m in models] + [m for m in models
                                                                       if m not in _COMMON_CLIP_MODELS]
            raise ValueError(f"unknown open_clip model {model_name!r} in {spec!r}; "
                             f"{_choices(model_name, models, 'models')}")
        weights = weights or "openai"
        if weights.lower() in _RANDOM_WEIGHTS or _is_local_file(weights):
            return None
        if _looks_like_path(weights):
            raise ValueError(f"checkpoint file not found: {os.path.expanduser(weights)} (encoder spec {spec!r})")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if weights not in tags and not open_clip.get_pretrained_cfg(model_name, weights):
            raise ValueError(f"{weights!r} is not an open_clip tag for {model_name} (nor a checkpoint file); "
                             f"{_choices(weights, [*tags, 'none'], f'tags of {model_name}')}")
        return openclip_source(model_name, weights)
    if kind.startswith("resnet18"):
        size = kind.removeprefix("resnet18").lstrip("-_") or "224"
        if not size.isdigit():
            raise ValueError(f"unknown encoder {kind!r} in {spec!r}: expected resnet18 or resnet18-<size>, "
                             f"e.g. resnet18-32")
        weights = rest or "imagenet"
        if weights.lower() in _RESNET18_IMAGENET:
            return resnet18_source()
        if weights.lower() in _RANDOM_WEIGHTS or _is_local_file(weights):
            return None
        if _looks_like_path(weights):
            raise ValueError(f"resnet18 weights file not found: {os.path.expanduser(weights)} (encoder spec {spec!r})")
        raise ValueError(f"unknown resnet18 weights {weights!r} in {spec!r}; "
                         f"{_choices(weights, ['imagenet', 'none'], 'weights')} or a local state-dict file")
    if kind in ("precomputed", "pixels"):
        return None
    raise ValueError(f"unknown encoder spec {spec!r}; use {_SPEC_FORMS}")


def local_file(source: WeightsSource) -> Path | None:
    """The file already on this machine, or None."""
    if source.hf_repo:
        for name in source.hf_files:
            found = hf_cached_file(source.hf_repo, name)
            if found is not None:
                return found
        return None
    path = Path(source.dest or "")
    return path if source.dest and path.is_file() else None


def partial_bytes(source: WeightsSource) -> int:
    """Bytes of an interrupted download waiting to be resumed (0 if none is known)."""
    if source.dest:
        p = Path(source.dest + PARTIAL_SUFFIX)
        return p.stat().st_size if p.is_file() else 0
    if source.hf_repo:
        blobs = _hf_repo_dir(source.hf_repo) / "blobs"
        return max((p.stat().st_size for p in blobs.glob("*" + PARTIAL_SUFFIX)), default=0)
    return 0


# ----------------------------------------------------------------------------- transfer


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # urllib's signature
        return None


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> urllib.request.Request:
    return urllib.request.Request(url, method=method, headers={"User-Agent": "ralif", **(headers or {})})


def _offline_fixes(source: WeightsSource, target: str) -> list[str]:
    if source.hf_repo is not None and source.dest is None:
        # The hub finds a file only in its own layout (models--ORG--NAME/snapshots/REVISION/...), so
        # a lone file copied into the cache is never seen: the whole repository folder must travel.
        folder = _hf_repo_dir(source.hf_repo)
        elsewhere = (f"on a machine with internet access run `python -m ralif weights download {source.spec}`, "
                     f"then copy its folder {folder.name} (from that machine's Hugging Face cache) to {folder}; "
                     f"or give the downloaded file's path as a local checkpoint")
    else:
        elsewhere = f"download on a machine with internet access and copy the file to {target}"
    return [
        ("choose an encoder whose weights are already on this machine, or one that needs none "
         "(precomputed embeddings, or ResNet18 from scratch)"),
        "give the path of a weights file you have (a local checkpoint)",
        elsewhere,
    ]


def _unreachable(source: WeightsSource, url: str, exc: BaseException) -> WeightsUnavailable:
    host = urlsplit(url).hostname or url
    reason = getattr(exc, "reason", exc)
    target = source.dest or str(hf_hub_cache_dir())
    return WeightsUnavailable(
        f"cannot download the weights of {source.title}: {host} cannot be reached ({reason}); this "
        f"machine may be offline.", _offline_fixes(source, target), offline=True)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One download of a file at a time (two tabs pressing the button): the other is told so."""
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        try:
            import fcntl
        except ImportError:   # no advisory locks on this platform; a race only costs a restart
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise WeightsUnavailable(f"{path.name} is already being downloaded by another process; "
                                     f"wait for it to finish") from exc
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fetch(source: WeightsSource, url: str, partial: Path, expected: int | None,
           progress: ProgressFn | None, cancel: Callable[[], bool] | None, timeout: float) -> int:
    """Download ``url`` into ``partial``, resuming what is there; returns the final size."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.exists() else 0
    if expected is not None and offset > expected:
        partial.unlink()
        offset = 0
    if expected is not None and offset == expected:
        if progress:
            progress(DownloadProgress(offset, expected, 0.0, offset))
        return offset
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(_request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # The server has nothing past our bytes: the partial file is stale; start over.
            partial.unlink()
            return _fetch(source, url, partial, expected, progress, cancel, timeout)
        raise WeightsUnavailable(f"cannot download the weights of {source.title}: {url} answered "
                                 f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(source, url, exc) from exc
    with response:
        if response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                raise WeightsUnavailable(f"{url} resumed at the wrong place "
                                         f"({response.headers.get('Content-Range')!r}); delete {partial}")
            total = int(match.group(2)) if match.group(2) != "*" else expected
            mode = "ab"
        else:
            # A server that ignores Range sends the whole file again.
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected
            mode = "wb"
        resumed, done, start = offset, offset, time.monotonic()
        try:
            with open(partial, mode) as out:
                if progress:
                    progress(DownloadProgress(done, total, 0.0, resumed))
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        elapsed = max(time.monotonic() - start, 1e-6)
                        progress(DownloadProgress(done, total, (done - resumed) / elapsed, resumed))
                    if cancel is not None and cancel():
                        raise DownloadCancelled(f"download of {source.title} cancelled at {done:,} bytes; "
                                                f"starting it again resumes there")
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
            raise WeightsUnavailable(
                f"the download of {source.title} stopped at {done:,}"
                f"{f' of {total:,}' if total else ''} bytes ({exc}); run it again to resume",
                _offline_fixes(source, source.dest or str(hf_hub_cache_dir()))) from exc
    if total is not None and done != total:
        raise WeightsUnavailable(f"the download of {source.title} ended at {done:,} of {total:,} bytes; "
                                 f"run it again to resume")
    return done


def _verify(source: WeightsSource, partial: Path, sha256: str | None) -> None:
    if not sha256:
        return
    digest = hashlib.sha256()
    with open(partial, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    got = digest.hexdigest()
    if not got.startswith(sha256):
        partial.unlink()
        raise ChecksumMismatch(
            f"the downloaded weights of {source.title} are not the published file (sha256 {got[:16]}..., "
            f"expected {sha256[:16]}...); it was deleted. Try again later, or check the mirror "
            f"(HF_ENDPOINT / RALIF_TORCH_MODELS_URL).")


def _download_url(source: WeightsSource, endpoint: str | None, progress: ProgressFn | None,
                  cancel: Callable[[], bool] | None, timeout: float) -> Path:
    assert source.url and source.dest
    base = endpoint or os.environ.get("RALIF_TORCH_MODELS_URL")
    url = f"{base.rstrip('/')}/{os.path.basename(source.url)}" if base else source.url
    dest = Path(source.dest)
    partial = Path(source.dest + PARTIAL_SUFFIX)
    with _exclusive(dest):
        if dest.is_file():
            return dest
        _fetch(source, url, partial, None, progress, cancel, timeout)
        _verify(source, partial, source.sha256_prefix)
        os.replace(partial, dest)
    return dest


def _hf_metadata(source: WeightsSource, base: str, timeout: float) -> tuple[str, str, str, str, int | None]:
    """(file name, download URL, commit, etag, size) of the first of the source's files that exists."""
    opener = urllib.request.build_opener(_NoRedirect)
    last = ""
    for name in source.hf_files:
        url = f"{base}/{source.hf_repo}/resolve/main/{name}"
        try:
            response = opener.open(_request(url, method="HEAD"), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308):
                response = exc
            elif exc.code in (401, 403, 404):
                last = f"HTTP {exc.code} for {name}"
                continue
            else:
                raise WeightsUnavailable(f"cannot download the weights of {source.title}: {url} answered "
                                         f"HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(source, url, exc) from exc
        h = response.headers
        commit = h.get("X-Repo-Commit")
        etag = (h.get("X-Linked-Etag") or h.get("ETag") or "").removeprefix("W/").strip('"')
        size = h.get("X-Linked-Size") or h.get("Content-Length")
        location = urljoin(url, h["Location"]) if h.get("Location") else url
        response.close()
        if not commit or not etag:
            raise WeightsUnavailable(f"{url} did not say which revision it serves (no X-Repo-Commit or "
                                     f"ETag header); is HF_ENDPOINT a Hugging Face hub?")
        return name, location, commit, etag, int(size) if size and size.isdigit() else None
    raise WeightsUnavailable(f"{source.hf_repo} on {base} has none of {', '.join(source.hf_files)} ({last})")


def _link_snapshot(blob: Path, snapshot: Path) -> None:
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        snapshot.unlink()
    try:
        # The hub's own layout: snapshots hold relative links into blobs/.
        snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    except OSError:
        shutil.copyfile(blob, snapshot)


def _download_hf(source: WeightsSource, endpoint: str | None, progress: ProgressFn | None,
                 cancel: Callable[[], bool] | None, timeout: float) -> Path:
    assert source.hf_repo
    name, url, commit, etag, size = _hf_metadata(source, hf_endpoint(endpoint), timeout)
    root = _hf_repo_dir(source.hf_repo)
    blob = root / "blobs" / etag
    with _exclusive(blob):
        if not blob.is_file():
            partial = blob.with_name(etag + PARTIAL_SUFFIX)
            _fetch(source, url, partial, size, progress, cancel, timeout)
            # Large hub files carry their sha256 as the ETag; small ones a git hash, not checked.
            _verify(source, partial, etag if _SHA256.match(etag) else None)
            os.replace(partial, blob)
        _link_snapshot(blob, root / "snapshots" / commit / name)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit / name


def download(source: WeightsSource, *, progress: ProgressFn | None = None, endpoint: str | None = None,
             cancel: Callable[[], bool] | None = None, timeout: float = _TIMEOUT_S) -> Path:
    """Download ``source`` into its cache (nothing is fetched when it is already there); returns the
    local file. Raises :class:`WeightsUnavailable` (with ``fixes``; ``offline`` when the server
    cannot be reached or ``HF_HUB_OFFLINE`` is set), :class:`ChecksumMismatch` or
    :class:`DownloadCancelled`; an interrupted download resumes on the next call."""
    found = local_file(source)
    if found is not None:
        return found
    if hub_offline():
        raise WeightsUnavailable(
            f"the weights of {source.title} are not on this machine and downloads are switched off "
            f"(HF_HUB_OFFLINE is set).", _offline_fixes(source, source.dest or str(hf_hub_cache_dir())),
            offline=True)
    try:
        if source.hf_repo:
            return _download_hf(source, endpoint, progress, cancel, timeout)
        return _download_url(source, endpoint, progress, cancel, timeout)
    except TimeoutError as exc:
        raise _unreachable(source, source.url or hf_endpoint(endpoint), exc) from exc


def download_for_spec(spec: str, **kwargs: object) -> Path | None:
    """:func:`download` for an encoder spec; None when the spec needs no download."""
    source = source_for_spec(spec)
    return None if source is None else download(source, **kwargs)  # type: ignore[arg-type]


def terminal_download_progress(title: str) -> ProgressFn | None:
    """A tqdm bar on stderr when it is a terminal, else None."""
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(desc=title, unit="B", unit_scale=True)

    def update(p: DownloadProgress) -> None:
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.update(p.done - bar.n)
        if p.total and p.done >= p.total:
            bar.close()

    return update
