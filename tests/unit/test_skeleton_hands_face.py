"""The one OpenPose drawing with DWPose's hands and face, pinned on known keypoints (pixels at joints, bones and
dots, in the reference colours and sizes at 512 px)."""

from __future__ import annotations

import matplotlib.colors
import numpy as np

from src.data.skeleton import HAND_EDGE_COLOURS, draw_openpose_video


def test_hands_and_face_are_drawn_in_dwpose_colours_over_the_body() -> None:
    body = np.full((1, 18, 3), np.nan)
    body[0, 1] = [256, 100, 1.0]  # neck
    body[0, 2] = [200, 100, 1.0]  # right shoulder: one limb, red
    hands = np.zeros((1, 2, 21, 3))  # score 0: not drawn
    hands[0, 0, 0] = [100, 300, 0.9]  # left wrist
    hands[0, 0, 1] = [100, 360, 0.9]  # thumb base: bone 0, HSV(0) = red
    hands[0, 0, 5] = [160, 300, 0.9]  # index base: bone 4, HSV(4/20)
    face = np.zeros((1, 68, 3))
    face[0, 0] = [400, 400, 0.9]
    face[0, 1] = [420, 400, 0.2]  # low score: not drawn
    image = draw_openpose_video(body, 512, 512, hands=hands, faces=face)[0]
    plain = draw_openpose_video(body, 512, 512)[0]

    np.testing.assert_array_equal(image[100, 228], plain[100, 228])  # the body is drawn as before
    np.testing.assert_array_equal(image[300, 100], [0, 0, 255])  # hand joints: blue dots, radius 4
    np.testing.assert_array_equal(image[304, 100], [0, 0, 255])
    np.testing.assert_array_equal(image[330, 100], [255, 0, 0])  # bone 0 between its joints
    np.testing.assert_array_equal(image[330, 101], [255, 0, 0])  # 2 px thick
    assert not image[330, 103].any()
    hsv4 = np.round(matplotlib.colors.hsv_to_rgb([4 / 20, 1.0, 1.0]) * 255)
    np.testing.assert_array_equal(image[300, 130], hsv4)
    np.testing.assert_array_equal(HAND_EDGE_COLOURS[4], hsv4)
    np.testing.assert_array_equal(image[400, 400], [255, 255, 255])  # face: white dots, radius 3
    np.testing.assert_array_equal(image[400, 403], [255, 255, 255])
    assert not image[400, 405].any() and not image[400, 420].any()
    assert not image[:6, :6].any()  # the score-0 hand points at (0, 0) are not drawn
    assert (
        image.any(axis=-1).sum() - plain.any(axis=-1).sum() < 2 * 60 * 4 + 3 * 50 + 2 * 30
    )  # lines + dots only
