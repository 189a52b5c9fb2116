"""Which (reference, pose video) pairs one Animate Anyone `python -m src.sample` run animates, and where each goes.

Outputs: `<out>/videos/<name>.mp4` and `<out>/side_by_side/<name>.mp4` (pose | animation). The videos folder holds
nothing else, so it is what `python -m src.evaluate` folder mode takes as eval.generated_dir: it pairs files with
real clips by name. `sample.name=pose` (default) names each animation by its pose video's stem, which is the real
clip's key (extract_poses and make_shards keep names); `reference_pose` names it `<reference>_<pose>` (several
characters on one motion). `sample.pose_videos=DIR` animates every `*.mp4` in DIR; `sample.reference` may then be
a folder holding `<pose name>.png|jpg|jpeg|webp` per pose video (each test clip's own first frame, for scoring).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

NAMINGS = ("pose", "reference_pose")
VIDEOS_DIR = "videos"
SIDE_BY_SIDE_DIR = "side_by_side"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Job:
    """One animation: `reference` is None when the reference folder has no image for this pose video."""

    name: str
    reference: Path | None
    pose_video: Path


def pose_video_paths(sample: DictConfig) -> list[Path]:
    """sample.pose_videos (every *.mp4 directly in it, sorted) or the one sample.pose_video."""
    if sample.get("pose_videos") is None:
        return [Path(sample.pose_video)]
    folder = Path(sample.pose_videos)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"sample.pose_videos={folder}: no such folder (a folder of skeleton videos, e.g. the <videos>_dwpose "
            "folder written by python -m src.data.extract_poses)."
        )
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".mp4")
    if not paths:
        raise FileNotFoundError(f"sample.pose_videos={folder} holds no .mp4 files.")
    return paths


def reference_for(reference: Path, key: str) -> Path | None:
    """The reference image of pose video `key`: `reference` itself, or `<reference>/<key>.<image suffix>` when it
    is a folder (None when that folder has no such image)."""
    if not reference.is_dir():
        return reference
    return next(
        (reference / f"{key}{s}" for s in IMAGE_SUFFIXES if (reference / f"{key}{s}").is_file()), None
    )


def output_name(naming: str, reference: Path, pose_video: Path) -> str:
    if naming not in NAMINGS:
        raise ValueError(
            f"sample.name={naming!r} is not one of {NAMINGS} (pose: named as the real clip, for scoring)."
        )
    return pose_video.stem if naming == "pose" else f"{reference.stem}_{pose_video.stem}"


def plan_jobs(sample: DictConfig, pose_videos: list[Path]) -> list[Job]:
    """A Job per pose video, named by sample.name."""
    reference = Path(sample.reference)
    jobs = []
    for pose in pose_videos:
        image = reference_for(reference, pose.stem)
        jobs.append(Job(output_name(sample.get("name") or "pose", image or reference, pose), image, pose))
    return jobs


def output_paths(out: Path, name: str) -> tuple[Path, Path]:
    """(the animation, its side-by-side with the pose)."""
    return out / VIDEOS_DIR / f"{name}.mp4", out / SIDE_BY_SIDE_DIR / f"{name}.mp4"
