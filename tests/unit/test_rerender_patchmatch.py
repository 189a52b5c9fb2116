"""Guided PatchMatch: reproduces a known style on a shifted target, finds the shift, and leaves pixels
outside the active mask on their initial field."""

import torch

from src.rerender.patchmatch import PatchMatchSettings, synthesize

FAST = PatchMatchSettings(search_vote_iters=4, patchmatch_iters=4)


def textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(3, h // 2, w // 2, generator=g)
    return torch.nn.functional.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).pow(2).mean()))


def test_synthesis_transfers_the_style_of_a_shifted_source():
    source = textured(40, 48)
    style = (1 - source).flip(0)  # a style the guides do not contain
    target = torch.roll(source, shifts=(3, -5), dims=(1, 2))
    out, nnf, err = synthesize(source, target, style, torch.ones(3), FAST, None, torch.Generator().manual_seed(1))
    truth = torch.roll(style, shifts=(3, -5), dims=(1, 2))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert psnr(out[inner], truth[inner]) > 30 > psnr(style[inner], truth[inner])
    ys, xs = torch.meshgrid(torch.arange(40), torch.arange(48), indexing="ij")
    found = ((nnf[..., 0] - ys == -3) & (nnf[..., 1] - xs == 5))[8:-8, 8:-8]
    assert found.float().mean() > 0.9 and err.shape == (40, 48)


def test_inactive_pixels_keep_the_initial_field():
    source = textured(24, 32, seed=2)
    target = torch.roll(source, shifts=(0, 2), dims=(1, 2))
    offsets = torch.zeros(2, 24, 32)  # a wrong initial field: identity
    active = torch.zeros(24, 32, dtype=torch.bool)
    active[:, :16] = True
    _, nnf, _ = synthesize(source, target, source, torch.ones(3), FAST, offsets, torch.Generator().manual_seed(0), active)
    ys, xs = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    assert torch.equal(nnf[:, 16:, 1], xs[:, 16:]) and torch.equal(nnf[:, 16:, 0], ys[:, 16:])
    assert ((nnf[4:-4, 4:12, 1] - xs[4:-4, 4:12]) == -2).float().mean() > 0.9
