"""The key-frame translator on tiny random SD components: on a still video, every later key frame reproduces the
anchor's output (cross-frame features, x0 and AdaIN statistics are looked up at the right step and layer; any
off-by-one would change the result), while a moving video gives different key frames; bad inputs are named."""

from __future__ import annotations

import pytest
import torch

from src.rerender.demo import demo_video
from src.rerender.flow import DisFlow
from src.rerender.keyframe_translation import KeyframeTranslator
from src.rerender.translation_settings import TranslationSettings
from tests.tiny_sd import tiny_components


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_components(tmp_path_factory.mktemp("tiny_sd"))


def test_a_still_video_translates_every_key_frame_to_the_anchor_output(parts):
    frames, _ = demo_video(3, 5, 64, 64)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    still = video[:1].repeat(5, 1, 1, 1)
    settings = TranslationSettings(
        prompt="a cat", num_steps=20, denoising_strength=0.75, pixel_fusion="off", store_dtype="float32"
    )
    translator = KeyframeTranslator(parts, settings, DisFlow())
    out = translator.translate(still, [0, 2, 4], still[[0, 2, 4]])
    assert translator.start == 5 and out[0].shape == (3, 64, 64)
    for k in (2, 4):
        torch.testing.assert_close(out[k], out[0], rtol=0, atol=1e-4)
    moving = translator.translate(video, [0, 2, 4], video[[0, 2, 4]])
    assert (moving[4] - moving[0]).abs().mean() > 5e-4
    with pytest.raises(ValueError, match="divisible by 32"):
        translator.translate(video[:, :, :48], [0, 2], video[[0, 2], :, :48])
    with pytest.raises(ValueError, match="one per key frame"):
        translator.translate(video, [0, 2], video[[0]])


def test_colour_matching_takes_the_reference_palette_and_keeps_the_lightness():
    from skimage import color

    from src.rerender.colour_correction import match_colours

    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 16, 16, generator=g) * 0.5 + 0.25
    reference = torch.rand(3, 16, 16, generator=g) * torch.tensor([0.9, 0.2, 0.4])[:, None, None]
    matched = match_colours(image, reference)

    def lab(x):
        return torch.from_numpy(color.rgb2lab(x.permute(1, 2, 0).numpy()))

    # lightness kept (up to the clip into RGB), chroma means moved to the reference's
    assert (lab(matched)[..., 0] - lab(image)[..., 0]).abs().mean() < 2.0
    for c in (1, 2):
        assert abs(lab(matched)[..., c].mean() - lab(reference)[..., c].mean()) < 0.5 * abs(
            lab(image)[..., c].mean() - lab(reference)[..., c].mean()
        )


def test_the_paper_variants_and_options_run_through(parts):
    """Paper pixel fusion, colour matching, loose cross-frame attention, pure-noise start: all reachable."""
    frames, _ = demo_video(3, 3, 64, 64)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    settings = TranslationSettings(
        num_steps=10, pixel_fusion="paper", color_preserve=False, loose_cfattn=True, guidance_scale=1.0
    )
    translator = KeyframeTranslator(parts, settings, DisFlow())
    out = translator.translate(video, [0, 2], video[[0, 2]])
    assert translator.start == 0 and len(translator.layers) == 2
    assert out[2].shape == (3, 64, 64) and 0 <= out[2].min() and out[2].max() <= 1
