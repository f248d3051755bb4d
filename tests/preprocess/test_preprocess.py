"""Preprocessing: geometry round trips for every mode, real pixels in the right
places, channels and colour order, and pass-through without a copy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edged.numerics.quantize import PixelQuantizer
from edged.numerics.tensors import TensorInfo
from edged.preprocess import Geometry, Preprocessor, box_in_pixels, plan_geometry

sizes = st.tuples(st.integers(8, 1200), st.integers(8, 1200))
modes = st.sampled_from(["stretch", "letterbox", "crop"])


@settings(max_examples=300, deadline=None)
@given(frame=sizes, model=sizes, mode=modes,
       x=st.floats(0, 1), y=st.floats(0, 1))
def test_geometry_round_trips(frame: tuple[int, int], model: tuple[int, int], mode: str,
                              x: float, y: float) -> None:
    geo, _ = plan_geometry(frame, model, mode)  # type: ignore[arg-type]
    fx, fy = geo.to_frame(x, y, normalized=True)
    bx, by = geo.to_model(fx, fy, normalized=True)
    assert bx == pytest.approx(x, abs=1e-9) and by == pytest.approx(y, abs=1e-9)
    px, py = geo.to_frame(x * model[1], y * model[0])
    assert (px, py) == pytest.approx((fx, fy))
    pts = geo.points_to_frame(np.array([[x, y], [0.0, 0.0]]), normalized=True)
    assert pts[0] == pytest.approx([fx, fy])


@settings(max_examples=300, deadline=None)
@given(frame=sizes, model=sizes, mode=modes)
def test_what_the_model_sees_maps_onto_the_frame(frame: tuple[int, int],
                                                 model: tuple[int, int], mode: str) -> None:
    fh, fw = frame
    geo, window = plan_geometry(frame, model, mode)  # type: ignore[arg-type]
    x0, y0, x1, y1 = geo.content
    # The content window's corners are the frame window's corners.
    assert geo.to_frame(x0, y0) == pytest.approx(window[:2])
    assert geo.to_frame(x1, y1) == pytest.approx(window[2:])
    assert 0 <= window[0] < window[2] <= fw and 0 <= window[1] < window[3] <= fh
    if mode == "stretch":
        assert window == (0, 0, fw, fh) and geo.content == (0, 0, model[1], model[0])
    if mode == "letterbox":  # whole frame visible, padding on one axis only
        assert window == (0, 0, fw, fh)
        assert x0 == 0 or y0 == 0
        # A box over the whole input clips to the whole frame.
        assert geo.box_to_frame(0, 0, 1, 1, normalized=True) == pytest.approx((0, 0, fw, fh))
    if mode == "crop":  # model fully covered, centred window
        assert geo.content == (0, 0, model[1], model[0])
        assert abs((window[0] + window[2]) - fw) <= 1 and abs((window[1] + window[3]) - fh) <= 1


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_a_marker_lands_where_the_geometry_says(mode: str) -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[300:340, 400:440] = 255  # a white square centred at (420, 320)
    prep = Preprocessor((224, 224), 3, mode=mode)  # type: ignore[arg-type]
    out = prep(frame)
    geo = prep.geometry
    assert geo is not None
    ys, xs = np.nonzero(out[..., 0] > 127)
    cx, cy = geo.to_frame(xs.mean() + 0.5, ys.mean() + 0.5)
    assert (cx, cy) == pytest.approx((420, 320), abs=2.5)


def test_letterbox_pads_with_the_pad_value_in_model_colour_order() -> None:
    frame = np.full((100, 200, 3), 7, np.uint8)
    rgb = Preprocessor((64, 64), 3, mode="letterbox", pad_value=(10, 20, 30))(frame)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[32, 32]) == (7, 7, 7)
    assert tuple(rgb[63, 0]) == (10, 20, 30)
    prep = Preprocessor((64, 64), 3, mode="letterbox", pad_value=(10, 20, 30), color_order="bgr")
    bgr = prep(frame)
    assert tuple(bgr[0, 0]) == (30, 20, 10)
    assert prep.geometry is not None and prep.geometry.content == (0, 16, 64, 48)
    # The padding survives later frames (painted once, never overwritten).
    bgr = prep(np.full((100, 200, 3), 200, np.uint8))
    assert tuple(bgr[0, 0]) == (30, 20, 10) and tuple(bgr[32, 32]) == (200, 200, 200)


def test_bgr_model_gets_channels_reversed() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rgb = Preprocessor((60, 80), 3)(frame).copy()
    bgr = Preprocessor((60, 80), 3, color_order="bgr")(frame)
    assert np.array_equal(bgr, rgb[..., ::-1])
    same = Preprocessor((120, 160), 3, color_order="bgr")(frame)
    assert np.array_equal(same, frame[..., ::-1])


def test_grayscale_model_from_rgb_and_from_grey_frames() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)
    out = Preprocessor((28, 28), 1)(frame)
    assert out.shape == (28, 28, 1) and out.flags.c_contiguous
    expected = cv2.cvtColor(cv2.resize(frame, (28, 28), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_RGB2GRAY)
    assert np.array_equal(out[..., 0], expected)
    grey = frame[..., 0].copy()
    out = Preprocessor((28, 28), 1, mode="letterbox")(grey)
    assert out.shape == (28, 28, 1)
    assert np.array_equal(out[..., 0], cv2.resize(grey, (28, 28), interpolation=cv2.INTER_AREA))
    # A grey frame for a colour model is replicated into three channels.
    out3 = Preprocessor((28, 28), 3)(grey)
    assert out3.shape == (28, 28, 3) and np.array_equal(out3[..., 0], out3[..., 2])


def test_passthrough_returns_the_frame_itself() -> None:
    frame = np.zeros((224, 224, 3), np.uint8)
    frame.flags.writeable = False  # frames from sources are read-only
    prep = Preprocessor((224, 224), 3, frame_size=(224, 224))
    assert prep(frame) is frame
    assert prep.plan(frame.shape).passthrough
    grey = np.zeros((28, 28), np.uint8)
    out = Preprocessor((28, 28), 1)(grey)
    assert out.shape == (28, 28, 1) and np.shares_memory(out, grey)
    # Not contiguous: copied once into the buffer, still exact.
    view = np.zeros((224, 448, 3), np.uint8)[:, ::2]
    assert np.array_equal(prep(view), view) and prep(view) is not view


def test_output_buffer_is_reused_and_a_new_frame_size_replans_once() -> None:
    prep = Preprocessor((32, 32), 3, mode="crop", frame_size=(480, 640))
    a = prep(np.zeros((480, 640, 3), np.uint8))
    b = prep(np.ones((480, 640, 3), np.uint8))
    assert a is b and b[0, 0, 0] == 1
    geo = prep.geometry
    c = prep(np.ones((240, 240, 3), np.uint8))
    assert prep.geometry != geo and c.shape == (32, 32, 3)
    plan = prep._plan
    prep(np.ones((240, 240, 3), np.uint8))
    assert prep._plan is plan


def test_interpolation_area_down_linear_up() -> None:
    prep = Preprocessor((224, 224), 3)
    assert prep.plan((400, 300, 3)).interpolation == cv2.INTER_LINEAR  # within 2x
    assert prep.plan((400, 300, 3)).halvings == ()
    assert prep.plan((100, 100, 3)).interpolation == cv2.INTER_LINEAR  # enlarging
    assert Preprocessor((224, 224), 3, interpolation="nearest").plan(
        (480, 640, 3)).interpolation == cv2.INTER_NEAREST


@pytest.mark.parametrize(("frame", "halvings", "last"), [
    ((480, 640), [(240, 320)], cv2.INTER_LINEAR),
    ((720, 1280), [(360, 640), (360, 320)], cv2.INTER_LINEAR),
    ((1080, 1920), [(540, 960), (270, 480), (270, 240)], cv2.INTER_LINEAR),
    ((1232, 1640), [(616, 820), (308, 410)], cv2.INTER_LINEAR),  # Pi camera v2 binned
    ((1081, 1920), [(1081, 960), (1081, 480), (1081, 240)], cv2.INTER_AREA),  # odd: exact
])
def test_camera_frames_are_halved_by_averaging_then_linear(
        frame: tuple[int, int], halvings: list[tuple[int, int]], last: int) -> None:
    """A frame more than twice the input is halved (2x2 averages) until within 2x."""
    prep = Preprocessor((224, 224), 3)
    plan = prep.plan((*frame, 3))
    assert [b.shape[:2] for b in plan.halvings] == halvings
    assert plan.interpolation == last
    assert not Preprocessor((224, 224), 3, interpolation="area").plan((*frame, 3)).halvings


def test_halving_then_linear_stays_close_to_the_exact_average() -> None:
    """On a smooth scene the fast path is within a few levels of one INTER_AREA step;
    on a fine pattern it does not alias the way linear alone does."""
    yy, xx = np.mgrid[0:1080, 0:1920]
    smooth = np.stack([(xx / 8) % 256, (yy / 5) % 256, ((xx + yy) / 12) % 256], -1)
    smooth = np.ascontiguousarray(smooth.astype(np.uint8))
    stripes = np.ascontiguousarray(np.repeat(((xx % 2) * 255).astype(np.uint8)[..., None], 3, -1))
    exact = Preprocessor((224, 224), 3, interpolation="area")
    fast = Preprocessor((224, 224), 3)
    linear = Preprocessor((224, 224), 3, interpolation="linear")
    diff = np.abs(fast(smooth).astype(int) - exact(smooth).astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())
    # One-pixel stripes average to mid-grey: exactly, with whole 2x2 boxes (one
    # INTER_AREA step at 8.57x mixes partial pixels: 119-136); linear alone aliases.
    assert np.abs(fast(stripes).astype(float) - 127.5).max() <= 1
    assert np.abs(exact(stripes).astype(float) - 127.5).max() <= 10
    assert np.abs(linear(stripes).astype(float) - 127.5).max() > 100


@pytest.mark.parametrize("frame", [(720, 1280), (1080, 1920), (1081, 1920), (360, 640)])
def test_halvings_are_pair_averages_as_inter_area_makes_them(frame: tuple[int, int]) -> None:
    """The halvings run as bilinear at exactly 2x (OpenCV's INTER_AREA is slow where one
    side alone is halved): the same pixel-pair averages, to a level of rounding."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (*frame, 3), dtype=np.uint8)
    plan = Preprocessor((224, 224), 3).plan(pixels.shape)
    src = pixels
    for buffer in plan.halvings:
        averaged = cv2.resize(src, (buffer.shape[1], buffer.shape[0]),
                              interpolation=cv2.INTER_AREA)
        fast = cv2.resize(src, (buffer.shape[1], buffer.shape[0]),
                          interpolation=cv2.INTER_LINEAR)
        assert np.abs(fast.astype(int) - averaged.astype(int)).max() <= 1
        src = averaged
    got = Preprocessor((224, 224), 3)(pixels)
    want = cv2.resize(src, (224, 224), interpolation=plan.interpolation)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_output_feeds_the_pixel_quantizer() -> None:
    t = TensorInfo(0, "input", (1, 224, 224, 3), np.dtype(np.int8), (1 / 255,), (-128,))
    prep = Preprocessor.for_input(t, mode="letterbox", pad_value=0)
    quantizer = PixelQuantizer(t)
    out = prep(np.full((480, 640, 3), 200, np.uint8))
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3) and out.flags.c_contiguous
    q = quantizer(out, np.empty(t.shape, np.int8))
    assert q[0, 112, 112, 0] == 200 - 128 and q[0, 0, 0, 0] == -128


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "fit"}, "preprocess.mode must be one of stretch, letterbox, crop, got 'fit'"),
    ({"channels": 4}, "model input has 4 channels; edged feeds 1 (grey) or 3"),
    ({"color_order": "rgba"}, "preprocess.color_order must be 'rgb' or 'bgr', got 'rgba'"),
    ({"pad_value": 300}, "preprocess.pad_value must be 0..255 or three of them, got 300"),
    ({"interpolation": "cubic"},
     "preprocess.interpolation must be auto, area, linear or nearest, got 'cubic'"),
])
def test_bad_options_are_one_line_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        Preprocessor((8, 8), **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_geometry_is_a_frozen_value() -> None:
    geo = Geometry((10, 10), (5, 5), 2.0, 2.0, 0.0, 0.0, (0, 0, 5, 5))
    with pytest.raises(AttributeError):
        geo.scale_x = 1.0  # type: ignore[misc]
    assert geo.box_to_frame(-1, -1, 9, 9, clip=False) == (-2, -2, 18, 18)
    assert geo.box_to_frame(-1, -1, 9, 9) == (0, 0, 10, 10)


@settings(max_examples=200, deadline=None)
@given(full=st.tuples(st.integers(256, 2000), st.integers(256, 2000)),
       k=st.sampled_from([2, 4, 8]), model=st.tuples(st.integers(32, 320), st.integers(32, 320)),
       mode=modes,
       x=st.floats(0, 1), y=st.floats(0, 1))
def test_a_reduced_frames_geometry_scaled_to_the_full_picture_is_the_full_pictures(
        full: tuple[int, int], k: int, model: tuple[int, int], mode: str, x: float,
        y: float) -> None:
    """A JPEG decoded at 1/k (sizes rounded up, as libjpeg does) maps model points
    onto the full picture's pixels as planning on the full picture itself does, to
    the rounding of the reduced frame's window (2k pixels) and of its size (a model
    pixel: what the model cannot resolve anyway). As edged decodes: never smaller
    than the model's input."""
    reduced = (-(-full[0] // k), -(-full[1] // k))
    assume(reduced[0] >= model[0] and reduced[1] >= model[1])
    small, _ = plan_geometry(reduced, model, mode)  # type: ignore[arg-type]
    whole, _ = plan_geometry(full, model, mode)  # type: ignore[arg-type]
    scaled = small.scaled_to(full)
    assert scaled.frame_size == full and scaled.content == small.content
    # A point on the picture (inside the content window: letterbox padding is no one's).
    x0, y0, x1, y1 = small.content
    mx, my = x0 + x * (x1 - x0), y0 + y * (y1 - y0)
    model_pixel = max(full[0] / model[0], full[1] / model[1])
    assert scaled.to_frame(mx, my) == pytest.approx(
        whole.to_frame(mx, my), abs=2 * k + model_pixel)
    # And a box in the full picture's pixels finds its pixels in the reduced frame.
    box = scaled.box_to_frame(0.1, 0.2, 0.6, 0.9, normalized=True)
    back = box_in_pixels(box, full, reduced)
    assert back == pytest.approx(small.box_to_frame(0.1, 0.2, 0.6, 0.9, normalized=True))
    assert box_in_pixels(box, full, full) == box
