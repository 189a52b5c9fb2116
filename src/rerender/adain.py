"""AdaIN colour alignment of Rerender's key frames: the predicted x0 latent `b c h w` is instance-normalised
per channel and given the anchor frame's per-channel mean and standard deviation at the same step, so later
key frames keep the anchor's colours. A plain function; the denoising loop's hook calls it in its window."""

from __future__ import annotations

from torch import Tensor

__all__ = ["adain", "channel_stats"]


def channel_stats(x: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and standard deviation `b c 1 1` (biased, as instance norm)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = (x.var(dim=(-2, -1), keepdim=True, unbiased=False) + eps).sqrt()
    return mean, std


def adain(x: Tensor, ref_mean: Tensor, ref_std: Tensor, eps: float = 1e-5) -> Tensor:
    """`x` with each channel's statistics replaced by (ref_mean, ref_std); float32 math, `x`'s dtype back."""
    mean, std = channel_stats(x.float(), eps)
    return (((x.float() - mean) / std) * ref_std.float() + ref_mean.float()).to(x.dtype)
