"""Rerender-A-Video pieces as plain modules: optical flow, key-frame choice, guided PatchMatch propagation,
temporal blending, the baselines and the demo. Frames are `t 3 h w` float in [0, 1] unless a docstring says
otherwise; flows are `n 2 h w` (x, y) in pixels, from frame a to frame b: a(x) ~ b(x + flow(x))."""
