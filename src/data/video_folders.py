"""The layout of raw video folders: the .mp4 files under a root, and the `<root>_dwpose` sibling for their poses.

Separate from make_shards so pose extraction (and its worker processes) does not import webdataset and torch.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_SUFFIXES = (".mp4",)


def default_pose_dir(videos: str | Path) -> Path:
    """`<videos>_dwpose`, the sibling folder DWPose extraction scripts write."""
    videos = Path(videos).resolve()
    return videos.with_name(videos.name + "_dwpose")


def find_videos(root: str | Path) -> list[Path]:
    """All .mp4 files under `root`, as sorted paths relative to it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist; pass --videos DIR with .mp4 files")
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
