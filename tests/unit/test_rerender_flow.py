"""Rerender flow interface: DIS recovers a known shift, chained flows add up, the warp modes agree."""

import numpy as np
import pytest
import torch

from src.rerender.flow import DisFlow, PairFlows, build_flow, chain_to_key, compose_flows, pair_flows, warp


def smooth_image(h: int, w: int, shift_x: float = 0.0) -> torch.Tensor:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs = xs + shift_x
    img = np.stack([0.5 + 0.4 * np.sin(xs / 5.0) * np.cos(ys / 7.0), 0.5 + 0.4 * np.sin((xs + ys) / 6.0),
                    0.5 + 0.4 * np.cos(xs / 4.0 - ys / 9.0)])  # fmt: skip
    return torch.from_numpy(img).float()


def test_dis_recovers_a_translation_in_the_interior():
    a, b = smooth_image(64, 80), smooth_image(64, 80, shift_x=-3.0)  # b(x) = a(x - 3): content moved right by 3
    flow = DisFlow("medium")(a[None], b[None])
    assert flow.shape == (1, 2, 64, 80)
    inner = flow[0, :, 12:-12, 12:-12]
    assert abs(float(inner[0].median()) - 3.0) < 0.3 and abs(float(inner[1].median())) < 0.3


def test_compose_adds_constant_flows_and_tracks_what_leaves_the_frame():
    h, w = 10, 12
    f1 = torch.zeros(1, 2, h, w)
    f1[:, 0] = 2.0
    f2 = torch.zeros(1, 2, h, w)
    f2[:, 1] = -1.0
    ones = torch.ones(1, 1, h, w, dtype=torch.bool)
    total, valid = compose_flows(f1, f2, ones, ones)
    assert torch.allclose(total[:, 0], torch.full((1, h, w), 2.0))
    assert torch.allclose(total[:, 1, :, : w - 2], torch.full((1, h, w - 2), -1.0))  # where x + 2 is in frame
    assert not valid[0, 0, :, -2:].any() and valid[0, 0, :, : w - 2].all()  # x + 2 leaves the frame
    occluded_b = ones.clone()
    occluded_b[0, 0, 4, 7] = False  # a pixel of b hidden in c: the a-pixel that lands on it is invalid
    _, valid = compose_flows(f1, f2, ones, occluded_b)
    assert not valid[0, 0, 4, 5] and int((~valid[0, 0, :, : w - 2]).sum()) == 1


def test_nearest_and_bilinear_warps_agree_on_integer_flow():
    img = torch.rand(1, 3, 9, 11)
    flow = torch.zeros(1, 2, 9, 11)
    flow[:, 0], flow[:, 1] = 1.0, 2.0
    near, bil = warp(img, flow, "nearest"), warp(img, flow)
    assert torch.allclose(near[..., :-2, :-1], img[..., 2:, 1:]) and torch.allclose(bil[..., :-2, :-1], img[..., 2:, 1:])
    with pytest.raises(ValueError, match="warp mode"):
        warp(img, flow, "cubic")


def test_pair_flows_and_chains_to_a_key():
    frames = torch.stack([smooth_image(48, 64, shift_x=-1.0 * t) for t in range(4)])  # moves right 1 px/frame
    pairs = pair_flows(frames, DisFlow("fast"), batch=2)
    assert isinstance(pairs, PairFlows) and pairs.forward.shape == (3, 2, 48, 64)
    chained = list(chain_to_key(pairs, 0, [1, 2, 3]))
    _, to_key, valid = chained[-1]
    assert abs(float(to_key[0, 0, 10:-10, 10:-10].median()) + 3.0) < 0.5  # frame 3 -> frame 0: 3 px left
    assert valid[0, 0, 10:-10, 10:-10].float().mean() > 0.9
    with pytest.raises(ValueError, match="one frame at a time"):
        list(chain_to_key(pairs, 0, [2, 3]))


def test_build_flow_names_the_missing_raft_file_and_rejects_unknown_names(tmp_path):
    with pytest.raises(Exception, match="rerender.flow.raft_checkpoint"):
        build_flow("raft", raft_checkpoint=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="'raft' or 'dis'"):
        build_flow("gmflow")


def test_raft_provider_loads_a_local_checkpoint_strictly_and_gives_flow_pairs(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    flow = build_flow("raft", raft_checkpoint=path, raft_variant="raft_small", num_flow_updates=2)
    pairs = pair_flows(torch.stack([smooth_image(24, 40), smooth_image(24, 40, -1.0)]), flow)
    assert pairs.forward.shape == (1, 2, 24, 40) and pairs.forward_valid.dtype == torch.bool
    with pytest.raises(ValueError, match="not a torchvision raft_large checkpoint"):
        build_flow("raft", raft_checkpoint=path, raft_variant="raft_large")
