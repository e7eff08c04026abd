"""A project's settings: read, validated and changed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralif.project.audits import AUDIT_SHARE_KEY, validate_share
from ralif.project.errors import ProjectError
from ralif.project.store import Store
from ralif.project.validation import (
    DEFAULT_ENCODER,
    MODEL_KINDS,
    validate_batch,
    validate_encoder,
    validate_strategy,
)

if TYPE_CHECKING:
    from ralif.project.lifecycle import RoundBook


class SettingsMixin:
    """Part of :class:`ralif.project.Project`; it uses the project's store."""

    store: Store
    folder: Path
    client: str
    round_book: RoundBook

    # -- settings ----------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        return self.store.settings()

    @property
    def name(self) -> str:
        return str(self.store.get_setting("name", self.folder.name))

    @property
    def model_kind(self) -> str:
        return str(self.store.get_setting("model"))

    @property
    def encoder_spec(self) -> str:
        return str(self.store.get_setting("encoder"))

    @property
    def strategy(self) -> str:
        return str(self.store.get_setting("strategy"))

    @property
    def batch_size(self) -> int:
        return int(self.store.get_setting("batch_size"))

    def update_settings(self, **values: Any) -> None:
        """Change settings for the rounds to come: ``strategy``, ``batch_size``, ``name``,
        ``simulated_oracle``, ``device``, ``l2``, ``resnet`` (dict), ``seed``, ``audit_share`` (the
        share of each batch drawn at random to measure the model, 0 to 0.5), ``model`` and
        ``encoder`` (an encoder spec; the model's default encoder when the model changes without one).

        A new encoder takes effect at the next round: features are looked up in the feature cache
        by encoder id and image content, so they are computed once per encoder and switching back
        computes nothing. Labels, classes and rounds are not touched."""
        allowed = {"strategy", "batch_size", "name", "simulated_oracle", "device", "l2", "resnet", "seed",
                   "threads", "keep_models", "model", "encoder", AUDIT_SHARE_KEY}
        bad = sorted(set(values) - allowed)
        if bad:
            raise ProjectError(
                f"unknown or read-only setting(s): {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")
        if "model" in values:
            if values["model"] not in MODEL_KINDS:
                raise ProjectError(f"model must be one of {', '.join(MODEL_KINDS)}, not {values['model']!r}")
            if "encoder" not in values and values["model"] != self.model_kind:
                values["encoder"] = DEFAULT_ENCODER[values["model"]]
        if "encoder" in values:
            if not isinstance(values["encoder"], str) or not values["encoder"].strip():
                raise ProjectError("encoder must be an encoder spec such as clip:ViT-B-16:openai")
            values["encoder"] = validate_encoder(values["encoder"])
        if "strategy" in values:
            values["strategy"] = validate_strategy(values["strategy"])
        if "batch_size" in values:
            values["batch_size"] = validate_batch(values["batch_size"])
        if "l2" in values and not float(values["l2"]) > 0:
            raise ProjectError("l2 must be positive")
        if "resnet" in values:
            from ralif.models.resnet import TrainConfig
            from ralif.project.rounds import DEFAULT_RESNET

            TrainConfig.from_dict({**DEFAULT_RESNET, **values["resnet"]})
        if "simulated_oracle" in values:
            values["simulated_oracle"] = bool(values["simulated_oracle"])
        if AUDIT_SHARE_KEY in values:
            try:
                values[AUDIT_SHARE_KEY] = validate_share(values[AUDIT_SHARE_KEY])
            except ValueError as exc:
                raise ProjectError(str(exc)) from None
        if "keep_models" in values:
            values["keep_models"] = validate_batch(values["keep_models"])
        self.store.set_settings(values)

    def set_oracle(self, enabled: bool) -> None:
        self.update_settings(simulated_oracle=enabled)
