"""Which pipeline `python -m src.sample` runs for an experiment, and the inputs each one needs.

Keyed by the experiment's `model._target_`. Each pipeline declares its required inputs so the config check can
name a missing one before anything is built (no per-system special cases in the checker). Kept free of heavy
imports: the config check reads it before torch is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PIPELINES", "Pipeline", "RequiredInput"]


@dataclass(frozen=True)
class RequiredInput:
    """At least one of `keys` must be set (not null), and with `exclusive` at most one; `expected` and `example` go
    into the error message."""

    keys: tuple[str, ...]
    expected: str
    example: str
    exclusive: bool = False


@dataclass(frozen=True)
class Pipeline:
    """`module` has `run(cfg) -> records` (each record has the "video" it wrote)."""

    module: str
    inputs: tuple[RequiredInput, ...] = ()


PIPELINES = {
    "src.trainers.animate_anyone.AnimateAnyoneModule": Pipeline(
        "src.inference.animate_anyone",
        (
            RequiredInput(("sample.reference",), "the character's image file", "character.png"),
            RequiredInput(
                ("sample.pose_video", "sample.driving_video"),
                "a skeleton video (or sample.driving_video=RAW.mp4, whose poses are extracted first)",
                "dance_dwpose.mp4",
                exclusive=True,
            ),
        ),
    ),
    "src.trainers.dynamicrafter.DynamiCrafterModule": Pipeline(
        "src.inference.dynamicrafter",
        (
            RequiredInput(
                ("sample.image", "sample.images"), "an image file (or sample.images=FOLDER)", "cat.png", exclusive=True
            ),
        ),
    ),
    "src.rerender.keyframe_translation.KeyframeTranslator": Pipeline(
        "src.inference.rerender",
        (
            RequiredInput(
                ("sample.video", "rerender.demo"), "an mp4 or a folder of frames (0000.png, ...)", "input.mp4"
            ),
        ),
    ),
}
