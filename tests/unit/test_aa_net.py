"""AnimateAnyoneNet: pose injection, stages, trainable sets, checkpointing, against direct UNet calls."""

from __future__ import annotations

import pytest
import torch

from src.models.animate_anyone import AnimateAnyoneNet, PoseInjectedConv2d, build_tiny_unet
from src.models.motion import build_motion_adapter
from src.models.pose_guider import PoseGuider
from src.models.reference_attention import unused_reference_parameter_names

B, T, C, S = (
    2,
    3,
    4,
    8,
)  # batch, frames, latent channels, latent size; pose images are 2x larger (factor-2 guider)


def _net(injection: str = "conv_in", seed: int = 0) -> AnimateAnyoneNet:
    torch.manual_seed(seed)
    guider = PoseGuider(
        block_channels=(8, 16),
        out_channels=32 if injection == "conv_in" else C,
        injection=injection,
        init="default" if injection == "conv_in" else "gaussian",
    )
    return AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider)


def _inputs(frames: int = T, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "noisy_latents": torch.randn(B, C, frames, S, S, generator=g),
        "timesteps": torch.tensor([5, 900]),
        "clip_embeds": torch.randn(B, 1, 32, generator=g),
        "reference_latents": torch.randn(B, C, S, S, generator=g),
        "pose": torch.rand(B, 3, frames, 2 * S, 2 * S, generator=g),
    }


def _direct_2d(net: AnimateAnyoneNet, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The denoising UNet called per frame, without any pose features (conv_in features unset)."""
    frames = x["noisy_latents"].shape[2]
    flat = x["noisy_latents"].transpose(1, 2).flatten(0, 1)
    out = net.denoising_unet(
        flat, x["timesteps"].repeat_interleave(frames), x["clip_embeds"].repeat_interleave(frames, 0)
    ).sample
    return out.unflatten(0, (B, frames)).transpose(1, 2)


@pytest.mark.parametrize("injection", ["conv_in", "latent"])
def test_zero_initialised_pose_guider_leaves_unet_output_unchanged(injection: str) -> None:
    net = _net(injection)
    x = _inputs()
    with torch.no_grad():
        features = net.encode_pose(x["pose"])
        assert features.shape == (B, net.pose_guider.out_channels, T, S, S)
        assert features.abs().max() == 0
        got = net.denoise(x["noisy_latents"], x["timesteps"], x["clip_embeds"], features)  # empty bank
        expected = _direct_2d(net, x)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        # once the guider's last conv is non-zero, its features do reach the UNet
        torch.nn.init.normal_(net.pose_guider.conv_out.weight, std=1.0)
        moved = net.denoise(x["noisy_latents"], x["timesteps"], x["clip_embeds"], net.encode_pose(x["pose"]))
    assert (moved - expected).abs().max() > 1e-3
    if injection == "conv_in":
        assert isinstance(net.denoising_unet.conv_in, PoseInjectedConv2d)
        assert net.denoising_unet.conv_in.features is None  # cleared after the call
        assert {"conv_in.weight", "conv_in.bias"} <= set(net.denoising_unet.state_dict())


def test_pose_guider_width_is_checked() -> None:
    with pytest.raises(ValueError, match="out_channels=16"):
        AnimateAnyoneNet(
            build_tiny_unet(S, C, C),
            build_tiny_unet(S, C, C),
            PoseGuider(block_channels=(8, 16), out_channels=16),
        )


def test_reference_changes_output_and_use_reference_false_removes_it() -> None:
    net = _net()
    x = _inputs()
    with torch.no_grad():
        plain = _direct_2d(net, x)
        with_ref = net(**x)
        without = net(**x, use_reference=torch.tensor([True, False]))
    assert len(net.bank) == 0  # forward clears the bank
    assert (with_ref[0] - plain[0]).abs().max() > 1e-3
    torch.testing.assert_close(without[1], plain[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(without[0], with_ref[0], rtol=0, atol=1e-6)


def test_spatial_frames_are_independent_and_match_single_frame_calls() -> None:
    net = _net()
    x = _inputs(frames=3)
    with torch.no_grad():
        out = net(**x)
        for f in range(3):
            single = dict(
                x, noisy_latents=x["noisy_latents"][:, :, f : f + 1], pose=x["pose"][:, :, f : f + 1]
            )
            torch.testing.assert_close(out[:, :, f : f + 1], net(**single), rtol=0, atol=1e-5)


def test_temporal_stage_starts_equal_to_spatial_stage() -> None:
    net = _net()
    x = _inputs(frames=4)
    with torch.no_grad():
        torch.nn.init.normal_(
            net.pose_guider.conv_out.weight, std=0.1
        )  # pose injection must survive inflation
        spatial = net(**x)
        net.enable_temporal(
            build_motion_adapter((32, 64), 1, num_attention_heads=4, max_seq_length=8, norm_num_groups=8)
        )
        assert net.stage == "temporal"
        assert isinstance(net.denoising_unet.conv_in, PoseInjectedConv2d)
        temporal = net(**x)
    torch.testing.assert_close(temporal, spatial, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="motion_max_seq_length=8"):
        net(**_inputs(frames=9))


def _sgd_steps(net: AnimateAnyoneNet, frames: int, steps: int = 3) -> None:
    # Adam with a negligible eps moves every parameter whose gradient is non-zero by about lr, so "changed"
    # means "received a gradient" even where SGD's update would round away against the weight.
    optimizer = torch.optim.Adam(net.trainable_parameters(), lr=1e-3, eps=1e-30)
    for step in range(steps):
        x = _inputs(frames=frames, seed=10 + step)
        loss = net(**x, use_reference=torch.tensor([True, step % 2 == 0])).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _changed(before: dict[str, torch.Tensor], net: AnimateAnyoneNet) -> set[str]:
    return {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}


def test_set_trainable_spatial_marks_and_updates_exactly_the_intended_parameters() -> None:
    net = _net()
    net.set_trainable("spatial")
    unused = {f"reference_unet.{n}" for n in unused_reference_parameter_names(net.reference_unet)}
    names = {n for n, p in net.named_parameters()}
    expected = {n for n in names if n not in unused}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == expected and unused
    assert len(net.trainable_parameters()) == len(expected)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    _sgd_steps(net, frames=1)
    changed = _changed(before, net)
    # With ONE CLIP token, cross-attention's softmax is over a single key (always 1): its output is to_v(context)
    # whatever the query, so attn2.to_q/to_k and norm2 (which only feeds the query) get exactly zero gradient.
    dead_parts = (".attn2.to_q.", ".attn2.to_k.", ".norm2.")
    one_token_dead = {n for n in expected if "transformer_blocks" in n and any(p in n for p in dead_parts)}
    assert one_token_dead
    # (their gradient is zero up to SDPA rounding, so they may or may not move: no claim either way)
    assert changed <= expected, sorted(changed - expected)  # frozen parameters are bit-identical
    assert expected - one_token_dead <= changed, sorted(expected - one_token_dead - changed)


def test_set_trainable_temporal_marks_and_updates_only_motion_modules() -> None:
    net = _net()
    with pytest.raises(RuntimeError, match="enable_temporal"):
        net.set_trainable("temporal")
    net.enable_temporal(
        build_motion_adapter((32, 64), 1, num_attention_heads=4, max_seq_length=8, norm_num_groups=8)
    )
    net.set_trainable("temporal")
    expected = {n for n, _ in net.named_parameters() if "motion_modules" in n}
    assert {n for n, p in net.named_parameters() if p.requires_grad} == expected
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    _sgd_steps(net, frames=4)
    changed = _changed(before, net)
    assert changed == expected, (sorted(expected - changed)[:10], sorted(changed - expected)[:10])


@pytest.mark.parametrize("temporal", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(temporal: bool) -> None:
    grads = []
    for checkpointing in (False, True):
        net = _net(seed=3)
        if temporal:
            torch.manual_seed(4)
            net.enable_temporal(
                build_motion_adapter((32, 64), 1, num_attention_heads=4, max_seq_length=8, norm_num_groups=8),
                zero_proj_out=False,
            )
        torch.nn.init.normal_(net.pose_guider.conv_out.weight, std=0.1)
        net.set_trainable("temporal" if temporal else "spatial")
        if checkpointing:
            net.enable_gradient_checkpointing()
        net.train()
        calls = []
        attn1 = net.denoising_unet.get_submodule(
            net.reference_layers[-1]
        )  # its input needs grad in both stages
        attn1.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        out = net(**_inputs(frames=2), use_reference=torch.tensor([True, False]))
        out.square().mean().backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward, reading the kept bank
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_input_errors_are_explicit() -> None:
    net = _net()
    x = _inputs()
    with pytest.raises(ValueError, match="divisible by 2"):
        net.encode_pose(torch.rand(B, 3, T, 15, 16))
    wrong = torch.zeros(B, 32, T, S // 2, S // 2)
    with pytest.raises(ValueError, match="pose_features"):
        net.denoise(x["noisy_latents"], x["timesteps"], x["clip_embeds"], wrong)
    net.write_reference(x["reference_latents"][:1], x["clip_embeds"][:1])
    with pytest.raises(ValueError, match="written for batch 1"):
        net.denoise(x["noisy_latents"], x["timesteps"], x["clip_embeds"], net.encode_pose(x["pose"]))
    net.clear_reference()
    with pytest.raises(ValueError, match="clip_embeds"):
        net.write_reference(x["reference_latents"], torch.zeros(B, 32))


def test_checkpointing_enabled_before_inflation_carries_over() -> None:
    net = _net()
    net.enable_gradient_checkpointing()
    net.enable_temporal(
        build_motion_adapter((32, 64), 1, num_attention_heads=4, max_seq_length=8, norm_num_groups=8)
    )
    assert net.denoising_unet.is_gradient_checkpointing and net.reference_unet.is_gradient_checkpointing


def test_reference_init_copies_the_denoising_unet_or_keeps_its_own():
    torch.manual_seed(0)
    guider = lambda: PoseGuider(block_channels=(8, 16), out_channels=32)  # noqa: E731
    own = AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider())
    torch.manual_seed(0)
    copied = AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider(), "copy_denoising")
    head = ("conv_in", "conv_norm_out", "conv_out")  # the reference UNet's unused head is dropped
    denoising = {k: v for k, v in copied.denoising_unet.state_dict().items() if not k.startswith(head)}
    reference = copied.reference_unet.state_dict()
    assert set(reference) == set(denoising) | {"conv_in.weight", "conv_in.bias"}
    assert denoising and all(torch.equal(reference[k], v) for k, v in denoising.items())
    last = "up_blocks.1.resnets.0.conv2.weight"
    assert not torch.equal(own.reference_unet.get_parameter(last), own.denoising_unet.get_parameter(last))
    # a copy, not shared storage: training one UNet must not move the other
    assert copied.reference_unet.get_parameter(last).data_ptr() != copied.denoising_unet.get_parameter(last).data_ptr()


def test_reference_unet_has_no_output_head_and_last_up_block_can_be_frozen() -> None:
    """Moore's reference UNet has no conv_norm_out/conv_out; Moore freezes its whole last up block (option)."""
    guider = PoseGuider(block_channels=(8, 16), out_channels=32)
    net = AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider)
    assert not any(k.startswith(("conv_norm_out", "conv_out")) for k in net.reference_unet.state_dict())
    net.set_trainable("spatial")
    last_up = [p for n, p in net.reference_unet.named_parameters() if n.startswith("up_blocks.1.")]
    assert any(p.requires_grad for p in last_up)  # its first transformer blocks feed the bank
    frozen = AnimateAnyoneNet(
        build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider, freeze_reference_last_up_block=True
    )
    frozen.set_trainable("spatial")
    names = [n for n, p in frozen.reference_unet.named_parameters() if not p.requires_grad]
    assert all(n.startswith("up_blocks.1.") for n in names) and len(names) == len(last_up)
    assert all(p.requires_grad for n, p in frozen.reference_unet.named_parameters() if not n.startswith("up_blocks.1."))


def test_reference_init_copy_needs_matching_unets():
    guider = PoseGuider(block_channels=(8, 16), out_channels=32)
    with pytest.raises(ValueError, match="same configuration"):
        AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, 2 * C), guider, "copy_denoising")
    with pytest.raises(ValueError, match="reference_init"):
        AnimateAnyoneNet(build_tiny_unet(S, C, C), build_tiny_unet(S, C, C), guider, "shared")


def test_unets_with_attention_only_at_some_levels() -> None:
    """SD1.5-like layouts (a level of ResNets only): reference attention and inflation still line up."""
    torch.manual_seed(0)
    unets = [build_tiny_unet(S, C, C, attention_levels=[False, True]) for _ in range(2)]
    assert [type(b).__name__ for b in unets[1].down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D"]
    guider = PoseGuider(block_channels=(8, 16), out_channels=32, zero_output=False)
    net = AnimateAnyoneNet(*unets, guider)
    x = _inputs(frames=2)
    with torch.no_grad():
        with_ref = net(**x)
        without = net(**x, use_reference=torch.tensor([False, False]))
        assert (with_ref - without).abs().max() > 1e-3
        net.enable_temporal(
            build_motion_adapter((32, 64), 1, num_attention_heads=4, max_seq_length=8, norm_num_groups=8)
        )
        torch.testing.assert_close(net(**x), with_ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one per level"):
        build_tiny_unet(S, C, C, attention_levels=[True])
