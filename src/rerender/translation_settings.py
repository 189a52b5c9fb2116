"""Settings of Rerender's key-frame translation (`model.*` of `conf/experiment/rerender.yaml`), checked on
construction so a bad value fails before any model is loaded. Paper / official names are in the YAML comments."""

from __future__ import annotations

from dataclasses import dataclass, field

from src.rerender.pixel_fusion import VARIANTS
from src.rerender.step_windows import StepWindows

__all__ = ["TranslationSettings"]

PIXEL_FUSION = (*VARIANTS, "off")


@dataclass(frozen=True)
class TranslationSettings:
    prompt: str = ""
    added_prompt: str = ""  # official a_prompt, appended as "prompt, added_prompt"
    negative_prompt: str = ""  # official n_prompt
    num_steps: int = 20
    guidance_scale: float = 7.5
    eta: float = 0.0
    denoising_strength: float | None = None  # SDEdit; None = start from pure noise
    control_scale: float = 1.0
    windows: StepWindows = field(default_factory=StepWindows)
    loose_cfattn: bool = False
    pixel_fusion: str = "official"
    mask_strength: float = 0.5
    inner_strength: float = 0.9
    smooth_boundary: bool = True
    fidelity_strength: float = 1.0  # lambda of E*
    fidelity_threshold: float = 0.25
    style_update_freq: int = 1
    color_preserve: bool = True
    seed: int = 0
    store_dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"model.num_steps must be >= 1, got {self.num_steps}")
        if self.denoising_strength is not None and not 0 < self.denoising_strength <= 1:
            raise ValueError(
                f"model.denoising_strength must be null (pure noise) or in (0, 1], got {self.denoising_strength}"
            )
        if self.pixel_fusion not in PIXEL_FUSION:
            raise ValueError(f"model.pixel_fusion must be one of {PIXEL_FUSION}, got {self.pixel_fusion!r}")
        if self.style_update_freq < 1:
            raise ValueError(f"model.style_update_freq must be >= 1, got {self.style_update_freq}")
        if self.store_dtype not in ("float16", "bfloat16", "float32"):
            raise ValueError(
                f"model.store_dtype must be float16, bfloat16 or float32, got {self.store_dtype!r}"
            )

    @property
    def full_prompt(self) -> str:
        return f"{self.prompt}, {self.added_prompt}" if self.added_prompt else self.prompt

    def start_step(self) -> int:
        """First step run: SDEdit re-noises the encoded frame at int(steps * (1 - strength)) (official index,
        without its float round-off: strength 0.9 of 20 steps starts at 2, not 1); 0 without SDEdit."""
        if self.denoising_strength is None:
            return 0
        return min(int(round(self.num_steps * (1 - self.denoising_strength), 6)), self.num_steps - 1)


SAMPLING_KEYS = {"num_steps": "num_steps", "guidance_scale": "guidance_scale", "eta": "eta"}


def settings_from_config(
    model_cfg, prompt: str, seed: int, sampling_overrides: dict | None = None
) -> TranslationSettings:
    """`model.*` of the rerender experiment (+ `sample.sampling` overrides of steps, guidance scale and eta)."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(model_cfg, resolve=True)
    values.pop("_target_", None)
    for weights in ("sd", "controlnet", "control_map"):  # where the weights are: src.rerender.sd_loading's part
        values.pop(weights, None)
    sampling = {**values.pop("sampling", {}), **(sampling_overrides or {})}
    unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
    if unknown:
        raise ValueError(
            f"sample.sampling / model.sampling {unknown} do not apply to Rerender's key frames; it takes num_steps, "
            "guidance_scale and eta"
        )
    windows = StepWindows(**{name: tuple(v) for name, v in values.pop("windows", {}).items()})
    return TranslationSettings(
        prompt=str(prompt or ""), seed=int(seed), windows=windows, **sampling, **values
    )
