"""The one decoder: every supported encoding, both message flavours, and every error path."""

from __future__ import annotations

import array
import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from rosbags.typesys import Stores, get_typestore

from prune2drive_ros.errors import DecodeError
from prune2drive_ros.sensors.imaging import (
    compressed_format,
    decode_image,
    encode_jpeg,
    jpeg_size,
)
from prune2drive_ros.sensors.resizing import RESIZE_MODES

TOPIC = "/CAM_FRONT/image_rect"


@dataclass
class StandInImage:
    """Same fields as sensor_msgs/msg/Image, like an rclpy message."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


@dataclass
class StandInCompressed:
    """Same fields as sensor_msgs/msg/CompressedImage."""

    format: str
    data: Any


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth colour image (demosaicing is exact away from edges only on smooth content)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([40 + 2 * xx, 200 - yy, np.full_like(xx, 90) + xx // 4], axis=-1).astype(
        np.uint8
    )


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter whose top-left 2x2 block is ``pattern``."""
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], np.uint8)
    for i, letter in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[letter]]
    return out


def raw_message(pixels: np.ndarray, encoding: str, *, pad: int = 0, bigendian: bool = False):
    """Pack ``pixels`` (H, W[, C]) into a stand-in Image with ``pad`` garbage bytes per row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).view(np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return StandInImage(height, width, encoding, int(bigendian), padded.shape[1], padded.tobytes())


@pytest.mark.parametrize(
    "encoding, build",
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_round_trip(encoding, build, pad):
    rgb = smooth_rgb()
    out = decode_image(
        raw_message(np.ascontiguousarray(build(rgb)), encoding, pad=pad), topic=TOPIC
    )
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_becomes_grey_rgb():
    grey = smooth_rgb()[..., 1]
    out = decode_image(raw_message(grey, "mono8", pad=3), topic=TOPIC)
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_respects_endianness_and_scales_to_8_bit(bigendian):
    values = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    stored = values.astype(">u2" if bigendian else "<u2")
    out = decode_image(raw_message(stored, "mono16", pad=2, bigendian=bigendian), topic=TOPIC)
    np.testing.assert_array_equal(out[..., 0], (values >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_demosaic_back_to_the_mosaiced_image(pattern):
    rgb = smooth_rgb()
    out = decode_image(raw_message(mosaic(rgb, pattern), f"bayer_{pattern}8"), topic=TOPIC)
    interior = (slice(4, -4), slice(4, -4))
    error = np.abs(out[interior].astype(int) - rgb[interior].astype(int))
    assert error.max() <= 3, f"{pattern}: wrong OpenCV Bayer code (max error {error.max()})"


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, lambda b: array.array("B", b), list, lambda b: np.frombuffer(b, np.uint8)],
)
def test_every_data_container_decodes(wrap):
    rgb = smooth_rgb()
    msg = raw_message(rgb, "rgb8")
    msg.data = wrap(msg.data)
    np.testing.assert_array_equal(decode_image(msg, topic=TOPIC), rgb)
    jpeg = StandInCompressed("jpeg", wrap(encode_jpeg(rgb, 95)))
    assert decode_image(jpeg, topic=TOPIC).shape == rgb.shape


def test_real_rosbags_message_classes_decode():
    store = get_typestore(Stores.ROS2_JAZZY)
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="CAM_FRONT"
    )
    rgb = smooth_rgb()
    image_cls = store.types["sensor_msgs/msg/Image"]
    raw = image_cls(
        header=header,
        height=48,
        width=64,
        encoding="bgr8",
        is_bigendian=0,
        step=64 * 3,
        data=np.ascontiguousarray(rgb[..., ::-1]).reshape(-1),
    )
    raw = store.deserialize_cdr(
        store.serialize_cdr(raw, image_cls.__msgtype__), image_cls.__msgtype__
    )
    np.testing.assert_array_equal(decode_image(raw, topic=TOPIC), rgb)
    comp_cls = store.types["sensor_msgs/msg/CompressedImage"]
    png = np.frombuffer(cv2.imencode(".png", rgb[..., ::-1])[1].tobytes(), np.uint8)
    comp = comp_cls(header=header, format="rgb8; png compressed bgr8", data=png)
    comp = store.deserialize_cdr(
        store.serialize_cdr(comp, comp_cls.__msgtype__), comp_cls.__msgtype__
    )
    np.testing.assert_array_equal(decode_image(comp, topic=TOPIC), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "JPEG", "jpg", ""])
def test_jpeg_formats(fmt):
    rgb = smooth_rgb()
    out = decode_image(StandInCompressed(fmt, encode_jpeg(rgb, 95)), topic=TOPIC)
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


def test_png_is_lossless_and_rgb_ordered_png_is_swapped_back():
    rgb = smooth_rgb()
    bgr_png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    np.testing.assert_array_equal(decode_image(StandInCompressed("png", bgr_png), topic=TOPIC), rgb)
    # An encoder handed RGB pixels ("compressed rgb8") stores them channel-swapped.
    rgb_png = cv2.imencode(".png", rgb)[1].tobytes()
    out = decode_image(StandInCompressed("rgb8; png compressed rgb8", rgb_png), topic=TOPIC)
    np.testing.assert_array_equal(out, rgb)


def test_compressed_format_parsing():
    assert compressed_format("rgb8; jpeg compressed bgr8") == ("jpeg", False)
    assert compressed_format("rgb8; jpeg compressed rgb8") == ("jpeg", True)
    assert compressed_format("png") == ("png", False)
    assert compressed_format("bgr8; compressedDepth")[0] == "compressedDepth"


def test_reduced_scale_decode_matches_full_decode_then_resize():
    rgb = cv2.resize(smooth_rgb(), (1600, 900), interpolation=cv2.INTER_LINEAR)
    data = encode_jpeg(rgb, 90)
    assert jpeg_size(data) == (1600, 900)
    msg = StandInCompressed("jpeg", data)
    fast = decode_image(msg, topic=TOPIC, size=(384, 384), resize_mode="fast")
    full = cv2.resize(decode_image(msg, topic=TOPIC), (384, 384), interpolation=cv2.INTER_AREA)
    assert fast.shape == (384, 384, 3) and fast.flags.c_contiguous
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2


@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("size", [(384, 384), (200, 112), (201, 113), (16, 16), (2000, 1000)])
def test_target_size_is_exact(size, mode):
    data = encode_jpeg(cv2.resize(smooth_rgb(), (1600, 900)), 90)
    out = decode_image(StandInCompressed("jpeg", data), topic=TOPIC, size=size, resize_mode=mode)
    assert out.shape == (size[1], size[0], 3) and out.flags.writeable and out.flags.c_contiguous


def expand2square(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """LLaVA's expand2square, written out: pad the short side, paste at (side - short) // 2."""
    height, width = rgb.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, 3), np.uint8)
    out[...] = colour
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = rgb
    return out


@pytest.mark.parametrize("shape", [(900, 1600), (901, 1600), (1600, 900), (384, 384)])
def test_pad_letterboxes_like_llava_expand2square(shape):
    rgb = cv2.resize(smooth_rgb(), (shape[1], shape[0]))
    grey = (127, 127, 127)
    msg = raw_message(rgb, "rgb8")
    padded = decode_image(msg, topic=TOPIC, size=(384, 384), pad=grey, resize_mode="fast")
    expected = cv2.resize(expand2square(rgb, grey), (384, 384), interpolation=cv2.INTER_AREA)
    assert padded.shape == (384, 384, 3)
    assert np.array_equal(padded, expected)


def pil_bicubic(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    side=st.integers(1, 24),
    grey=st.integers(0, 255),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_exact_padding_is_one_bicubic_resize_of_the_padded_image(height, width, side, grey, seed):
    """The exact letterbox filters the image's rows before padding (cheaper); the pixels are
    those of PIL resizing expand2square's square, bit for bit."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    colour = (grey, 255 - grey, grey // 2)
    msg = raw_message(rgb, "rgb8")
    padded = decode_image(msg, topic=TOPIC, size=(side, side), pad=colour)
    np.testing.assert_array_equal(padded, pil_bicubic(expand2square(rgb, colour), (side, side)))


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_exact_resize_is_a_full_decode_and_pils_bicubic(codec):
    rgb = cv2.resize(smooth_rgb(), (1600, 900))
    data = encode_jpeg(rgb, 90) if codec == "jpeg" else cv2.imencode(".png", rgb[..., ::-1])[1]
    out = decode_image(StandInCompressed(codec, data), topic=TOPIC, size=(384, 384))
    decoded = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))  # PIL decodes
    np.testing.assert_array_equal(out, pil_bicubic(decoded, (384, 384)))


def test_an_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize mode 'cubic' is not one of exact, fast"):
        decode_image(
            raw_message(smooth_rgb(), "rgb8"), topic=TOPIC, size=(8, 8), resize_mode="cubic"
        )


def test_pad_decodes_jpeg_at_the_scale_the_letterboxed_image_needs():
    rgb = cv2.resize(smooth_rgb(), (1600, 900))
    msg = StandInCompressed("jpeg", encode_jpeg(rgb, 95))
    padded = decode_image(
        msg, topic=TOPIC, size=(384, 384), pad=(127, 127, 127), resize_mode="fast"
    )
    # 1600 x 900 fills 384 x 216 of the square: the 1/4-scale decode (400 x 225) covers it.
    full = decode_image(msg, topic=TOPIC)
    expected = cv2.resize(expand2square(full, (127, 127, 127)), (384, 384), cv2.INTER_AREA)
    assert np.array_equal(padded[:70], np.full_like(padded[:70], 127))  # the band above
    assert np.abs(padded.astype(int) - expected.astype(int)).mean() < 2


def test_raw_image_is_resized_too():
    out = decode_image(raw_message(smooth_rgb(), "rgb8"), topic=TOPIC, size=(32, 24))
    assert out.shape == (24, 32, 3)


@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    pad=st.integers(0, 9),
    encoding=st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_any_geometry_and_padding_round_trips(height, width, pad, encoding, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels = rgb[..., ::-1] if encoding.startswith("bgr") else rgb
    if encoding.endswith("a8"):
        pixels = np.dstack([pixels, rng.integers(0, 256, (height, width), dtype=np.uint8)])
    msg = raw_message(np.ascontiguousarray(pixels), encoding, pad=pad)
    np.testing.assert_array_equal(decode_image(msg, topic=TOPIC), rgb)


# --- errors name the topic, the problem and what to do ------------------------------------------


def test_unknown_encoding_lists_the_supported_ones():
    msg = raw_message(smooth_rgb(), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(DecodeError, match=r"/CAM_FRONT/image_rect.*'yuv422'.*rgb8, bgr8"):
        decode_image(msg, topic=TOPIC)


def test_size_mismatch_is_reported():
    msg = raw_message(smooth_rgb(), "rgb8")
    msg.data = msg.data[:-10]
    with pytest.raises(DecodeError, match=r"/CAM_FRONT/image_rect: data has .* height\*step"):
        decode_image(msg, topic=TOPIC)


def test_short_step_is_reported():
    msg = raw_message(smooth_rgb(), "rgb8")
    msg.step = 10
    with pytest.raises(DecodeError, match=r"/CAM_FRONT/image_rect: step 10 is shorter"):
        decode_image(msg, topic=TOPIC)


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8\xff\xe0garbage" * 10, "truncated"], ids=["empty", "garbage", "cut"]
)
def test_corrupt_jpeg_is_reported(data):
    if data == "truncated":
        data = encode_jpeg(smooth_rgb(), 90)[:40]
    with pytest.raises(DecodeError, match=r"^/CAM_FRONT/image_rect_compressed: (empty|corrupt)"):
        decode_image(
            StandInCompressed("jpeg", data), topic="/CAM_FRONT/image_rect_compressed", size=(8, 8)
        )


def test_compressed_depth_and_unknown_codecs_are_rejected():
    png = cv2.imencode(".png", smooth_rgb())[1].tobytes()
    with pytest.raises(DecodeError, match=r"/t: .*compressedDepth depth image"):
        decode_image(StandInCompressed("bgr8; compressedDepth", png), topic="/t")
    bmp = cv2.imencode(".bmp", smooth_rgb())[1].tobytes()
    with pytest.raises(
        DecodeError, match=r"/t: unsupported CompressedImage format 'bmp'.*jpeg, png"
    ):
        decode_image(StandInCompressed("bmp", bmp), topic="/t")


def test_unnamed_codec_is_recognised_by_its_magic_bytes():
    png = cv2.imencode(".png", smooth_rgb()[..., ::-1])[1].tobytes()
    np.testing.assert_array_equal(
        decode_image(StandInCompressed("bgr8", png), topic="/t"), smooth_rgb()
    )


def test_non_image_message_is_rejected():
    with pytest.raises(DecodeError, match="neither a sensor_msgs/msg/Image"):
        decode_image(object(), topic="/t")  # type: ignore[arg-type]


def test_encode_jpeg_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_jpeg(np.zeros((4, 4), np.uint8), 90)


def test_decode_views_matches_one_by_one_and_reports_the_failing_topic():
    from prune2drive_ros.sensors.imaging import decode_views
    from prune2drive_ros.views import VIEWS, image_topic

    topics = {v: image_topic(v) for v in VIEWS}
    rgb = cv2.resize(smooth_rgb(), (160, 90))
    messages = {
        v: StandInCompressed("jpeg", encode_jpeg(np.roll(rgb, i, axis=1), 90))
        for i, v in enumerate(VIEWS)
    }
    out = decode_views(messages, topics, (64, 64))
    assert list(out) == list(VIEWS)
    for view, msg in messages.items():
        np.testing.assert_array_equal(
            out[view], decode_image(msg, topic=topics[view], size=(64, 64))
        )
    messages["CAM_BACK"] = StandInCompressed("jpeg", b"\xff\xd8broken")
    with pytest.raises(DecodeError, match=r"^/CAM_BACK/image_rect_compressed: corrupt"):
        decode_views(messages, topics, (64, 64))


def test_large_downscales_average_instead_of_aliasing():
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel columns: bilinear at 4x would pick all black or all white
    out = decode_image(raw_message(stripes, "rgb8"), topic=TOPIC, size=(16, 16), resize_mode="fast")
    assert np.abs(out.astype(int) - 127).max() <= 1
