"""The encoder and model choice (new-project form and a project's settings), weights downloads with
progress in the page, and the message with its fixes when the weights cannot be had.

A choice says whether its weights are on this machine, how large a download is and what will
happen (:mod:`ralif.encoder_catalog`). Downloads run in the page's script run, chunk by chunk,
so the bar shows bytes of total and speed; a run cut short (the tab closed, another button
pressed) leaves the partial file, and the next download resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from ralif import encoder_catalog as catalog
from ralif.encoder_catalog import EncoderChoice
from ralif.models.advice import SCRATCH_MIN_LABELS, duration, scratch_advice
from ralif.project import Project, ProjectError
from ralif.ui import common, round_panel
from ralif.ui.text import code, counted, lit
from ralif.weights import DownloadProgress, WeightsSource, WeightsUnavailable, download

KEYS = ("clip", "resnet18-imagenet-frozen", "resnet18-imagenet-finetune", "resnet18-scratch", "precomputed",
        "checkpoint", "spec")
TITLES = {
    "clip": "CLIP (frozen) + linear head",
    "resnet18-imagenet-frozen": "ResNet18 ImageNet, frozen + linear head",
    "resnet18-imagenet-finetune": "ResNet18 ImageNet, fine-tuned every round",
    "resnet18-scratch": "ResNet18 from scratch",
    "precomputed": "Precomputed embeddings file",
    "checkpoint": "Local checkpoint file",
    "spec": "Another encoder (spec)",
}
PAGE_FIXES = ("In this page: choose another encoder above (one whose weights are on this machine, or "
              "one that needs none), or choose \"Local checkpoint file\" and give the path of a weights "
              "file you have.")
# Said only where a project exists already (its settings), never on the new-project form.
KEPT = " Nothing else changes: labels and images are kept as they are."
ARCHS = {"resnet18": "ResNet18 state dict", "clip": "open_clip model"}
_UPDATE_S = 0.15        # at most this often a progress message goes to the browser
# The inputs of the choice (their keys after the form's prefix), and what the settings panel's were
# last set from.
_INPUTS = ("encoder", "clip_model", "clip_tag", "emb_path", "ckpt_arch", "ckpt_model", "ckpt_path", "encoder_spec",
           "spec_model")
_SETTINGS_OF = "ralif_settings_encoder_of"


@dataclasses.dataclass(frozen=True)
class Current:
    """A project's encoder settings as the choice that gives them, with what that choice's inputs
    hold (so the panel opens on what the project uses)."""

    key: str
    clip: tuple[str, str] | None = None     # CLIP model and open_clip tag
    path: str = ""                          # the embeddings or checkpoint file
    arch: str = "resnet18"                  # the checkpoint's network
    spec: str = ""                          # "Another encoder (spec)"
    model: str = "clip-linear"


def current_choice(model: str, spec: str, resnet: Mapping[str, Any] | None = None) -> Current:
    """The choice among ``KEYS`` that gives a project's ``model``, encoder ``spec`` and ``resnet``
    settings; "Another encoder (spec)" for a spec no named choice gives."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if model == "resnet18":
        if str((resnet or {}).get("variant") or "cifar") == "imagenet":
            return Current("resnet18-imagenet-finetune")
        if spec == catalog.resnet18_scratch_choice(has_gpu=False).spec:
            return Current("resnet18-scratch")
        return Current("spec", spec=spec, model=model)
    if kind == "precomputed":
        return Current("precomputed", path=rest)
    if kind in ("clip", "open_clip", "openclip"):
        name, _, weights = rest.partition(":")
        if common.is_weights_file(weights):
            return Current("checkpoint", clip=(name, ""), path=weights, arch="clip")
        tag = weights or catalog.DEFAULT_CLIP[1]
        if name in catalog.clip_models() and tag in catalog.clip_tags(name):
            return Current("clip", clip=(name, tag))
        return Current("spec", spec=spec, model=model)  # e.g. random weights: the CLIP choice lists none
    if spec == catalog.resnet18_frozen_choice().spec:
        return Current("resnet18-imagenet-frozen")
    if kind == "resnet18" and common.is_weights_file(rest):
        return Current("checkpoint", path=rest, arch="resnet18")
    return Current("spec", spec=spec, model=model)


def _index(options: list[str], wanted: str | None, fallback: str) -> int:
    for value in (wanted, fallback):
        if value in options:
            return options.index(value)
    return 0


def _default_key() -> str:
    """The recommended choice, worked out once per session (it looks up the weights caches)."""
    key = "ralif_encoder_default"
    if key not in st.session_state:
        choices = catalog.encoder_choices()
        st.session_state[key] = catalog.recommended(choices).key
    return str(st.session_state[key])


def _clip_inputs(prefix: str, current: tuple[str, str] | None = None) -> tuple[str, str]:
    models = catalog.clip_models()
    wanted = current or (None, None)
    c1, c2 = st.columns(2)
    model = str(c1.selectbox("CLIP model", models, index=_index(models, wanted[0], catalog.DEFAULT_CLIP[0]),
                             key=f"{prefix}_clip_model"))
    tags = catalog.clip_tags(model) or [catalog.DEFAULT_CLIP[1]]
    tag = c2.selectbox("Pretrained weights (open_clip tag)", tags,
                       index=_index(tags, wanted[1], catalog.DEFAULT_CLIP[1]), key=f"{prefix}_clip_tag")
    return str(model), str(tag)


def scratch_choice(labels: int | None, pool: int | None = None, *, gpu: bool | None = None) -> EncoderChoice:
    """ResNet18 from scratch, its cost said once, for the epochs a round really trains.

    The catalog's entry quotes the paper's 200 epochs at the labels of the source ("one round takes
    about 9 s" with none) beside a flat "rounds will take hours": both about one round, neither
    true of the project's rounds, which train ``DEFAULT_RESNET``'s epochs over every label so far
    and so grow as the user labels. Here both figures come from one estimate
    (:func:`ralif.models.advice.scratch_advice`), now and at the labels such a network needs."""
    from ralif.models.resnet import TrainConfig
    from ralif.project.rounds import DEFAULT_RESNET

    if gpu is None:
        import torch

        gpu = bool(torch.cuda.is_available())
    choice = catalog.resnet18_scratch_choice(labels, has_gpu=gpu)
    epochs = int(TrainConfig.from_dict({**DEFAULT_RESNET, **choice.resnet}).epochs or 1)

    def cpu_round(n: int) -> float:
        return float(scratch_advice(n, pool=pool, epochs=epochs, gpu=gpu).round_seconds_cpu or 0.0)

    enough = max(SCRATCH_MIN_LABELS, labels or 0)
    few = labels is None or labels < SCRATCH_MIN_LABELS
    parts = [f"ResNet18 from scratch learns everything from your labels: it needs about "
             f"{SCRATCH_MIN_LABELS:,} labeled images before its guesses mean anything, and a GPU."]
    if labels is not None and few:
        parts.append(f"With {counted(labels, 'label')} it will make confident but wrong guesses.")
    cost = (f"Each round trains the network anew, {epochs} epochs over every label so far"
            + (", then computes features for the whole pool" if pool else "")
            + ", so rounds slow down as you label. On a CPU a round takes ")
    if labels is not None and 2 <= labels < enough:
        cost += f"{duration(cpu_round(labels))} at {counted(labels, 'label')} and "
    cost += f"{duration(cpu_round(enough))} at {counted(enough, 'label')}; "
    cost += ("this machine has a CUDA GPU, which is much faster." if gpu else "this machine has no GPU.")
    parts.append(cost)
    if few:
        parts.append("Choose a pretrained encoder (CLIP, or ResNet18 ImageNet with a linear head) instead: "
                     "it gives useful guesses from a few labels per class and runs a round in seconds.")
    warnings = []
    if labels is not None and few:
        warnings.append(f"{counted(labels, 'label')} {'is' if labels == 1 else 'are'} far below the "
                        f"{SCRATCH_MIN_LABELS:,} a from-scratch network needs: choose a pretrained encoder")
    if not gpu:
        warnings.append(f"no GPU found: at {counted(enough, 'label')} a round takes "
                        f"{duration(cpu_round(enough))} on this machine's CPU")
    return dataclasses.replace(choice, what_happens=" ".join(parts),
                               warning="; ".join(warnings) + "." if warnings else None)


def _build(prefix: str, key: str, labels: int | None, pool: int | None, now: Current | None) -> EncoderChoice:
    # The inputs of the project's own choice open on what it uses; the others on their defaults.
    now = now if now is not None and now.key == key else Current(key)
    if key == "clip":
        return catalog.clip_choice(*_clip_inputs(prefix, now.clip))
    if key == "resnet18-imagenet-frozen":
        return catalog.resnet18_frozen_choice()
    if key == "resnet18-imagenet-finetune":
        return catalog.resnet18_finetune_choice()
    if key == "resnet18-scratch":
        return scratch_choice(labels, pool)
    if key == "precomputed":
        path = st.text_input("Embeddings file (.npz with 'features' and 'paths')", value=now.path,
                             key=f"{prefix}_emb_path", placeholder="/data/embeddings.npz").strip().strip("'\"")
        return catalog.precomputed_choice(path or None)
    if key == "checkpoint":
        c1, c2 = st.columns(2)
        arch = c1.selectbox("Network of the file", list(ARCHS), index=_index(list(ARCHS), now.arch, "resnet18"),
                            key=f"{prefix}_ckpt_arch", format_func=lambda a: ARCHS[a])
        model = catalog.DEFAULT_CLIP[0]
        if arch == "clip":
            models = catalog.clip_models()
            wanted = now.clip[0] if now.clip else None
            picked = c2.selectbox("CLIP model", models, key=f"{prefix}_ckpt_model",
                                  index=models.index(wanted) if wanted in models else None,
                                  placeholder="choose the file's architecture")
            model = str(picked or model)
        path = st.text_input("Weights file", value=now.path, key=f"{prefix}_ckpt_path",
                             placeholder="/data/weights/resnet18.pth").strip().strip("'\"")
        return catalog.checkpoint_choice(path or None, str(arch), str(model))
    c1, c2 = st.columns([3, 1])
    spec = c1.text_input("Encoder spec", value=now.spec, key=f"{prefix}_encoder_spec",
                         placeholder="resnet18-32:none").strip()
    kinds = ["clip-linear", "resnet18"]
    kind = c2.selectbox("Model", kinds, index=_index(kinds, now.model, "clip-linear"), key=f"{prefix}_spec_model")
    return catalog.spec_choice(spec, str(kind))


def pick_encoder(prefix: str, *, labels: int | None = None, pool: int | None = None,
                 current: Current | None = None) -> EncoderChoice | None:
    """The encoder radio with what the selected choice needs and does (``labels``, ``pool``: the
    project's, or the import plan's, for the cost of a from-scratch round); a download button when
    its weights are missing. It opens on ``current`` (a project's own choice), else on the
    recommended one. Returns the choice, or None while it still needs a file path (or the typed
    spec is wrong, which is said in the page)."""
    default = current.key if current is not None else _default_key()
    key = st.radio("Encoder and model", KEYS, index=KEYS.index(default), key=f"{prefix}_encoder",
                   format_func=lambda k: TITLES[k], horizontal=False,
                   help="How images become features, and what is trained on your labels each round.")
    try:
        choice = _build(prefix, str(key), labels, pool, current)
    except (ValueError, ProjectError) as exc:
        st.error(lit(exc))
        return None
    with st.container(border=True):
        state = ("✅ " if choice.weights is not None and choice.weights_present else
                 "⬇️ " if choice.needs_download else "")
        st.markdown(f"**{lit(choice.title)}** · {state}{lit(choice.status_text())}")
        st.caption(lit(choice.what_happens))
        if choice.warning:
            st.warning(lit(choice.warning))
        if choice.needs_download and choice.weights is not None:
            size = choice.size_text()
            resume = " (resumes the part already here)" if choice.resumable_bytes else ""
            clicked = st.button(f"Download the weights now ({size}){resume}" if size else
                                "Download the weights now", key=f"{prefix}_download")
            slot = st.empty()   # the same page shape whether or not a download runs in it
            failed = _failure(prefix, choice.weights.spec)
            if clicked:
                if download_weights(choice.weights, prefix, slot):
                    st.rerun()
            elif failed:
                show_unavailable(failed, prefix)
            if not failed and not clicked:
                st.caption("Otherwise they are downloaded when you confirm, with the same progress bar.")
    if choice.spec is None:
        return None
    return choice


def _failure(prefix: str, spec: str) -> dict[str, Any] | None:
    """The last failed download of ``spec`` in this form, as kept for the page's later runs."""
    failed = st.session_state.get(f"{prefix}_download_error")
    return failed if failed and failed.get("spec") == spec else None


def download_weights(source: WeightsSource, prefix: str, slot: Any = None, shown_above: bool = False) -> bool:
    """Download with a progress bar (bytes of total, speed), in ``slot`` when given; False, with the
    message and its fixes shown (and kept for the next run of the page), when the weights cannot
    be had. ``shown_above``: this run already shows the same failure in the encoder panel, so a
    second failure says so in one line instead of repeating the whole message."""
    bar = (slot or st).progress(0.0, text=f"Downloading {lit(source.title)}: connecting…")
    last = [0.0]

    def update(p: DownloadProgress) -> None:
        now = time.monotonic()
        finished = p.total is not None and p.done >= p.total
        if now - last[0] < _UPDATE_S and not finished:
            return
        last[0] = now
        resumed = f" (resumed at {p.resumed_from / 1e6:.1f} MB)" if p.resumed_from else ""
        bar.progress(p.fraction or 0.0, text=f"Downloading {lit(source.title)}: {lit(p.text())}{resumed}")

    st.session_state.pop(f"{prefix}_download_error", None)
    try:
        path = download(source, progress=update)
    except WeightsUnavailable as exc:
        bar.empty()
        failed = {"spec": source.spec, "message": exc.message, "fixes": exc.fixes, "offline": exc.offline}
        st.session_state[f"{prefix}_download_error"] = failed
        if shown_above:
            st.error("The weights still cannot be downloaded: the message above says why and what to do.")
        else:
            show_unavailable(failed, prefix)
        return False
    bar.progress(1.0, text=f"Downloaded {lit(source.title)} to {code(common.display_path(path))}")
    return True


def show_unavailable(failed: dict[str, Any], prefix: str) -> None:
    """The reason the weights cannot be had, what can be done here, and what can be done elsewhere
    (``prefix``: the form, "settings" for a project that exists)."""
    title = "The weights cannot be downloaded: this machine seems to be offline." if failed.get("offline") \
        else "The weights could not be downloaded."
    st.error(f"**{title}** {lit(failed['message'])}")
    st.info(PAGE_FIXES + (KEPT if prefix == "settings" else ""))
    if failed.get("fixes"):
        st.markdown("Other ways:\n" + "\n".join(f"- {lit(f)}" for f in failed["fixes"]))


def ensure_weights(choice: EncoderChoice, prefix: str) -> bool:
    """Before a choice is used: its weights downloaded (with progress) when they are missing."""
    if not choice.needs_download or choice.weights is None:
        return True
    return download_weights(choice.weights, prefix, shown_above=_failure(prefix, choice.weights.spec) is not None)


def _project_encoder(project: Project) -> tuple[str, str, dict[str, Any]]:
    """The project's model kind, encoder spec and ResNet settings."""
    settings = project.settings
    resnet = settings.get("resnet")
    return str(settings.get("model")), str(settings.get("encoder")), dict(resnet) if isinstance(resnet, dict) else {}


def _follow_project(project: Project, now: tuple[str, str, dict[str, Any]]) -> None:
    """Inputs left from another project, or from before the encoder changed, would open the panel
    on that choice: they are dropped, so it opens on what this project uses now."""
    seen = json.dumps([str(project.folder), *now], sort_keys=True, default=str)
    if st.session_state.get(_SETTINGS_OF) == seen:
        return
    for name in _INPUTS:
        st.session_state.pop(f"settings_{name}", None)
    st.session_state[_SETTINGS_OF] = seen


def encoder_settings(project: Project) -> None:
    """The open project's encoder, changeable: the features are computed again (once, through the
    cache) at the next round and every label stays."""
    now = _project_encoder(project)
    current = current_choice(*now)
    _follow_project(project, now)
    status = project.round_status()
    failed = status.get("status") == "failed"
    # The name quoted: "Encoder and model of One class" read as if the model had one class.
    with st.expander(f"Encoder and model of the project '{lit(project.name)}': "
                     f"{lit(common.encoder_label(now[1], now[0], now[2]))}", expanded=failed):
        if failed:
            st.warning(f"The last round failed: {lit(status.get('error') or 'no reason recorded')}. If the "
                       f"encoder is the cause, choose another one here; the round then runs again with it.")
        st.caption("Switching recomputes the image features at the next round (once: they are cached per "
                   "encoder, so switching back costs nothing) and keeps every label.")
        prog = project.progress()
        choice = pick_encoder("settings", labels=prog.labeled, pool=prog.pool, current=current)
        if st.button("Use this encoder", key="settings_apply", type="primary", disabled=choice is None):
            assert choice is not None
            if not ensure_weights(choice, "settings"):
                return
            try:
                project.update_settings(**choice.create_kwargs())
            except (ProjectError, ValueError) as exc:
                st.error(f"The encoder was not changed: {lit(exc)}")
                return
            labeled = project.progress().labeled
            error = round_panel.start(project) if failed else None
            model, spec, resnet = _project_encoder(project)
            common.flash("success", f"Encoder changed to {lit(common.encoder_label(spec, model, resnet))}; "
                                    f"{'the' if labeled == 1 else 'all'} {counted(labeled, 'label')} "
                                    f"{'is' if labeled == 1 else 'are'} kept. The next round computes the "
                                    f"features with it." + (f" {lit(error)}" if error else ""))
            st.rerun()
