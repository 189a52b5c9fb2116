"""Rerender's key-frame constraints as hooks of the shared loop, on SD's 20-step DDIM grid: each one edits the
latent or x0 exactly at its official step indices; shape fusion with zero flow and no occlusion returns the anchor's
x0; AdaIN gives the anchor's channel statistics; the pixel-fusion variants follow their formulas; SD's grid is
LDM's (1, 51, ..., 951)."""

from __future__ import annotations

import torch

from src.models.sampling import Guidance, SamplingHook, denoise_loop
from src.rerender.adain import channel_stats
from src.rerender.constraint_hooks import AdaINHook, AnchorX0, CrossFrameStepHook, ShapeFusionHook
from src.rerender.controlled_unet import sd_ddim_schedule
from src.rerender.cross_frame_attention import CrossFrameStore
from src.rerender.pixel_fusion import PixelFusionHook, flat_region
from src.rerender.step_windows import StepWindows
from tests.tiny_sd import SCHEDULER_CONFIG

SHAPE = (1, 4, 1, 6, 8)


class Probe(SamplingHook):
    """Runs `inner` and records the step indices where it changed the latent (before_step) or x0 (on_x0)."""

    def __init__(self, inner):
        self.inner, self.edited, self.outputs = inner, [], {}

    def before_step(self, state, x):
        out = self.inner.before_step(state, x)
        if not torch.equal(out, x):
            self.edited.append(state.index)
        return out

    def on_x0(self, state, x0):
        out = self.inner.on_x0(state, x0)
        if not torch.equal(out, x0):
            self.edited.append(state.index)
        self.outputs[state.index] = out
        return out


def scaled(factor):
    return lambda x, t, frames: factor * x


def test_sd_grid_is_ldm_ddim():
    schedule = sd_ddim_schedule(SCHEDULER_CONFIG, 20)
    assert schedule.timesteps == list(range(951, 0, -50)) and schedule.prev_timesteps[-1] is None
    assert schedule.prediction_type == "epsilon"


def test_each_constraint_fires_exactly_in_its_official_window_for_20_steps():
    schedule, windows = sd_ddim_schedule(SCHEDULER_CONFIG, 20), StepWindows()
    g = torch.Generator().manual_seed(0)
    anchor = AnchorX0()
    denoise_loop(scaled(0.3), torch.randn(SHAPE, generator=g) * 2 + 1, schedule, hooks=[anchor])
    assert sorted(anchor.x0) == list(range(20))

    store = CrossFrameStore()
    cross_steps = []

    class SeeStore(SamplingHook):
        def before_step(self, state, x):
            if store.active:
                cross_steps.append(state.index)
            return x

    adain = Probe(AdaINHook(anchor, windows))
    shape = Probe(ShapeFusionHook(anchor, windows, torch.zeros(1, 2, 6, 8), torch.ones(1, 1, 6, 8)))
    target, mask = torch.randn(1, 4, 6, 8, generator=g), torch.ones(1, 1, 6, 8)
    pixel = Probe(PixelFusionHook(windows, target, mask, generator=torch.Generator().manual_seed(1)))
    hooks = [CrossFrameStepHook(store, windows), SeeStore(), pixel, adain, shape]
    denoise_loop(scaled(0.7), torch.randn(SHAPE, generator=g), schedule, Guidance(), hooks=hooks)
    assert cross_steps == list(range(20))
    assert shape.edited == [0, 1, 2]
    assert pixel.edited == [11, 12, 13, 14, 15]
    assert adain.edited == [16, 17, 18, 19]
    for i in shape.edited:  # zero flow, no occlusion: the anchor's x0 at the same step
        torch.testing.assert_close(shape.outputs[i], anchor.x0[i], rtol=0, atol=0)
    for i in adain.edited:  # the anchor's channel statistics at the same step
        for ours, ref in zip(channel_stats(adain.outputs[i]), channel_stats(anchor.x0[i])):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    # the official AdaIN default (1, 1) never fires
    off = Probe(AdaINHook(anchor, StepWindows(adain=(1.0, 1.0))))
    denoise_loop(scaled(0.7), torch.randn(SHAPE, generator=g), schedule, hooks=[off])
    assert off.edited == []


def test_pixel_fusion_variants_follow_their_formulas():
    schedule, windows = sd_ddim_schedule(SCHEDULER_CONFIG, 20), StepWindows()
    state = schedule.states()[12]
    g = torch.Generator().manual_seed(0)
    target, x, direction = (torch.randn(SHAPE[:2] + SHAPE[3:], generator=g) for _ in range(3))
    x, direction = x[:, :, None], direction[:, :, None]
    state.direction = direction
    mask = torch.ones(1, 1, 6, 8)
    mask[..., :, :3] = 0
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(5))
    reference = (state.alpha_bar**0.5 * target + (1 - state.alpha_bar) ** 0.5 * noise)[:, :, None]

    paper = PixelFusionHook(windows, target, mask, "paper", generator=torch.Generator().manual_seed(5))
    m = mask[:, :, None]
    torch.testing.assert_close(paper.before_step(state, x), m * reference + (1 - m) * x)

    official = PixelFusionHook(
        windows, target, mask, "official", 0.5, 0.9, False, torch.Generator().manual_seed(5)
    )
    w = 0.5 * m
    r = torch.maximum(1 - w, 0.9 * (1 - w**2).sqrt())
    torch.testing.assert_close(
        official.before_step(state, x), w * reference + (1 - w) * (x - direction) + r * direction
    )
    # smooth boundary: where the mask is not flat (columns 2, 3 at the edge) r falls back to 1 - w
    flat = flat_region(mask)
    assert flat[0, 0, 0].tolist() == [1, 1, 0, 0, 1, 1, 1, 1]
    smooth = PixelFusionHook(
        windows, target, mask, "official", 0.5, 0.9, True, torch.Generator().manual_seed(5)
    )
    r_smooth = (1 - w) * (1 - flat[:, :, None]) + r * flat[:, :, None]
    torch.testing.assert_close(smooth.rescale, r_smooth)
