"""Rerender blending: the FFT screened-Poisson solve equals a dense least-squares solve; the
histogram-preserving blend keeps the reference's statistics; the selection weighs errors by distance."""

import pytest
import torch

from src.rerender.blending import histogram_preserving_blend, screened_poisson, select_by_error


def dense_screened_poisson(data: torch.Tensor, source: torch.Tensor, weight: float) -> torch.Tensor:
    """Least squares over explicit forward-difference rows (independent of the FFT diagonalisation)."""
    h, w = data.shape
    n = h * w
    rows, rhs = [], []
    src = source.flatten()
    for y in range(h):
        for x in range(w):
            i = y * w + x
            for j in ([i + 1] if x + 1 < w else []) + ([i + w] if y + 1 < h else []):
                row = torch.zeros(n, dtype=torch.float64)
                row[j], row[i] = 1.0, -1.0
                rows.append(row)
                rhs.append(src[j] - src[i])
    eye = torch.eye(n, dtype=torch.float64) * weight**0.5
    a = torch.cat([torch.stack(rows), eye])
    b = torch.cat([torch.stack(rhs), data.flatten() * weight**0.5])
    return torch.linalg.lstsq(a, b[:, None]).solution.view(h, w)


def test_screened_poisson_matches_a_dense_solve_and_keeps_a_consistent_image():
    torch.manual_seed(0)
    data, source = torch.rand(1, 5, 7, dtype=torch.float64), torch.rand(1, 5, 7, dtype=torch.float64)
    solved = screened_poisson(data, source, 0.5)
    assert torch.allclose(solved[0], dense_screened_poisson(data[0], source[0], 0.5), atol=1e-9)
    image = torch.rand(3, 6, 9, dtype=torch.float64)
    assert torch.allclose(screened_poisson(image, image, 0.2), image, atol=1e-9)


def test_histogram_preserving_blend_has_the_reference_statistics_and_no_contrast_loss():
    torch.manual_seed(1)
    a, b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    reference = 0.3 + 0.2 * torch.rand(3, 32, 32)
    out = histogram_preserving_blend(a, b, 0.5, reference)
    assert torch.allclose(out.mean(dim=(1, 2)), reference.mean(dim=(1, 2)), atol=1e-3)
    assert torch.allclose(out.std(dim=(1, 2)), reference.std(dim=(1, 2)), rtol=0.06)  # unit variance holds for uncorrelated inputs
    linear = 0.5 * a + 0.5 * b
    assert linear.std() < 0.8 * a.std()  # what the variance-preserving rescale avoids


def test_selection_penalises_the_far_source():
    err_fw, err_bw = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])
    assert select_by_error(err_fw, err_bw, 0.5).tolist() == [True, True]
    assert select_by_error(err_fw, err_bw, 0.9).tolist() == [False, False]  # near the later key
    assert select_by_error(err_fw, err_bw, 0.1).tolist() == [True, True]


def test_temporal_filter_damps_flicker_and_keeps_key_frames():
    from src.rerender.flow import PairFlows
    from src.rerender.temporal_filter import temporal_filter

    torch.manual_seed(2)
    t, h, w = 7, 8, 10
    still = torch.full((t, 3, h, w), 0.5) + 0.1 * torch.randn(t, 3, h, w)  # a still scene with flicker
    zero = torch.zeros(t - 1, 2, h, w)
    visible = torch.ones(t - 1, 1, h, w, dtype=torch.bool)
    pairs = PairFlows(zero, zero, visible, visible)
    out = temporal_filter(still, pairs, [0, 6], 0.7)
    assert torch.equal(out[0], still[0]) and torch.equal(out[6], still[6])
    assert (out[1:] - out[:-1]).pow(2).mean() < 0.5 * (still[1:] - still[:-1]).pow(2).mean()
    assert torch.equal(temporal_filter(still, pairs, [0], 0.0), still)


def test_temporal_filter_does_not_jump_onto_the_next_key():
    """A still scene whose propagation ramps from one key's colour to the next (a bidirectional blend): a
    recursive pass lags, so the old equal average of a forward and a backward pass jumped by 0.18 onto each
    key; the zero-lag passes mixed by position keep every step within 1.2x the ramp's own 0.1."""
    from src.rerender.flow import PairFlows
    from src.rerender.temporal_filter import sweep_weights, temporal_filter

    t, h, w = 11, 4, 4
    ramp = (torch.arange(t, dtype=torch.float32) / (t - 1))[:, None, None, None].expand(t, 3, h, w).clone()
    zero = torch.zeros(t - 1, 2, h, w)
    visible = torch.ones(t - 1, 1, h, w, dtype=torch.bool)
    out = temporal_filter(ramp, PairFlows(zero, zero, visible, visible), [0, 10], 0.7)
    assert (out[1:] - out[:-1]).abs().max() < 0.12
    assert sweep_weights(7, [2, 5]).tolist() == pytest.approx([1.0, 1.0, 0.0, 1 / 3, 2 / 3, 0.0, 0.0])
