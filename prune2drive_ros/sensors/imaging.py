"""The one image decoder: ``sensor_msgs`` Image / CompressedImage -> RGB uint8 array.

The node (rclpy messages, whose ``data`` is an ``array.array`` or ``bytes``) and the bag replay
(``rosbags`` messages, whose ``data`` is a numpy uint8 array) both call :func:`decode_image`, so a
frame decodes identically live and offline. Messages are duck-typed: anything with the fields of
``sensor_msgs/msg/CompressedImage`` (``format``, ``data``) or ``sensor_msgs/msg/Image``
(``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``) is accepted.

Resizing to the encoder input (``size``) has two modes, :data:`~.resizing.RESIZE_MODES`:

* ``exact`` (the default): what the checkpoints were trained on. Every published family's
  processor (LLaVA's and SigLIP's, LLaVA-OneVision's, InternVL's, Qwen2.5-VL's) decodes the
  whole JPEG and resizes it with PIL's bicubic filter, whose support widens with the downscale
  (an antialiasing filter: 4.2 source pixels a side at 1600 -> 384, not OpenCV's fixed 4 x 4
  ``INTER_CUBIC``). So does this mode: a full libjpeg decode (OpenCV's libjpeg-turbo gives the
  same pixels as PIL's) and ``PIL.Image.resize(BICUBIC)`` itself, within 1 level of the
  reference processors on raw and JPEG input (``test/test_preprocessing.py``). Pillow's resize
  releases the GIL, so :func:`decode_views` spreads the views over the cores.
* ``fast``: the JPEG is decoded by libjpeg at the largest of 1/2, 1/4 or 1/8 scale that still
  covers the target (the inverse DCT, upsampling and colour conversion then run on a quarter of
  the pixels or fewer; Huffman decoding still reads every coefficient) and resized with
  OpenCV: bilinear for the small downscale left (800 x 450 -> 384 x 384 is 2.08x at most per
  axis; its two taps per axis still touch 96 % of the input pixels there), area averaging past
  :data:`_BILINEAR_MAX_DOWNSCALE` (PNG or raw images), which does not alias. About 4x
  cheaper, and up to 30 levels (mean 0.2) from the exact pixels on raw frames, more from JPEG
  input: the model sees images it was not trained on (BENCHMARKS.md measures what that costs).

The whole image is resized, not cropped, to the (square) encoder input: a crop would cut away
the road edges and the vehicles beside the ego car, which driving questions are about, and
SigLIP (LLaVA-OneVision's vision tower) is itself trained on images squashed to a square, its
processor resizing without a crop. A checkpoint trained on letterboxed views (DriveMM, whose
multi-image training pads each image to a square with the mean colour, LLaVA's
``expand2square``) gets the same: with ``pad`` the image is padded, centred, to the target's
aspect ratio and then resized. In ``exact`` mode the padding costs no extra filtering: PIL
resizes horizontally first and vertically second, and a row of the padding colour stays that
colour through the horizontal pass, so the image alone is filtered horizontally, padded, and
filtered vertically: the very pixels of one resize of the padded image, at about the cost of
an unpadded one.

libjpeg's warnings ("Corrupt JPEG data: 46 extraneous bytes before marker 0xd9": the image
decodes, some blocks may be damaged) do not reach OpenCV's logger: its bundled libjpeg-turbo
prints them with ``fprintf(stderr)``, which neither ``cv2.setLogLevel`` nor
``cv2.utils.logging`` silences. JPEG decodes therefore run with file descriptor 2 pointed at an
in-memory file (:class:`_StderrCapture`, safe with several decoding threads), and what libjpeg
wrote is logged here with the topic and stamp of the frame; anything else written to stderr
meanwhile is passed on unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

from ..errors import DecodeError
from ..views import VIEWS
from .resizing import ResizeMode, check_resize_mode

logger = logging.getLogger(__name__)

#: An 8-bit RGB colour.
Colour = tuple[int, int, int]

#: Raw ``sensor_msgs/msg/Image`` encodings :func:`decode_image` understands.
SUPPORTED_ENCODINGS: tuple[str, ...] = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "bayer_rggb8",
    "bayer_bggr8",
    "bayer_gbrg8",
    "bayer_grbg8",
)

#: ``sensor_msgs/msg/CompressedImage`` codecs :func:`decode_image` understands.
SUPPORTED_FORMATS: tuple[str, ...] = ("jpeg", "png")

#: Bytes per pixel of each raw encoding.
_PIXEL_BYTES: dict[str, int] = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
}

# OpenCV names a Bayer pattern after the 2x2 block starting at the second row and column, so a
# sensor whose top-left block is R G / G B (ROS "rggb") is OpenCV's "BG" (cv_bridge uses the same
# table). The legacy names exist in every OpenCV; 5.x adds RGGB-style aliases of equal value.
_BAYER_CODES: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

#: Channel slice that turns each multi-channel 8-bit encoding into RGB (a view, no copy).
_RGB_CHANNELS: dict[str, slice] = {
    "rgb8": slice(0, 3),
    "bgr8": slice(2, None, -1),
    "rgba8": slice(0, 3),
    "bgra8": slice(2, None, -1),
}

#: JPEG downscale factors libjpeg decodes natively, largest first, with their imdecode flags.
_JPEG_REDUCTIONS: tuple[tuple[int, int], ...] = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)

# JPEG start-of-frame markers (SOF0..SOF15 without DHT, JPG and DAC) carry the image size.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@runtime_checkable
class RawImage(Protocol):
    """The fields of ``sensor_msgs/msg/Image`` that decoding reads."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


@runtime_checkable
class CompressedImage(Protocol):
    """The fields of ``sensor_msgs/msg/CompressedImage`` that decoding reads."""

    format: str
    data: Any


def decode_image(
    msg: RawImage | CompressedImage,
    *,
    topic: str,
    size: tuple[int, int] | None = None,
    pad: Colour | None = None,
    resize_mode: ResizeMode = "exact",
) -> np.ndarray:
    """Decode an image message to a C-contiguous RGB ``uint8`` array of shape (H, W, 3).

    ``size`` is ``(width, height)`` of the encoder input; the image is resized (not cropped) to
    exactly that, as ``resize_mode`` says (:data:`RESIZE_MODES`; ``fast`` decodes JPEGs at
    reduced scale). With ``pad`` (an RGB colour) it is first padded to ``size``'s aspect ratio,
    centred, as LLaVA's ``expand2square``. ``topic`` only names the source in a
    :class:`DecodeError`.
    """
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be (width, height) with positive entries, got {size!r}")
    check_resize_mode(resize_mode)
    if isinstance(msg, CompressedImage):
        reduce_to = size if resize_mode == "fast" else None
        rgb = _decode_compressed(msg, topic, reduce_to, letterbox=pad is not None)
    elif isinstance(msg, RawImage):
        rgb = _decode_raw(msg, topic)
    else:
        raise DecodeError(
            f"{topic}: {type(msg).__name__} is neither a sensor_msgs/msg/Image nor a "
            "sensor_msgs/msg/CompressedImage; subscribe the camera topic with one of those types"
        )
    if size is not None:
        rgb = fit(rgb, size, pad, resize_mode)
    return np.ascontiguousarray(rgb)


def decode_views(
    messages: Mapping[str, Any],
    topics: Mapping[str, str],
    size: tuple[int, int] | None = None,
    pad: Colour | None = None,
    resize_mode: ResizeMode = "exact",
) -> dict[str, np.ndarray]:
    """:func:`decode_image` for every view of a frame set, in parallel threads, in input order.

    OpenCV (decoding, and resizing ``fast``) and Pillow (resizing ``exact``) release the GIL,
    so the six views of a frame spread over the CPU cores: on a 2-core machine this about
    halves the latency of a frame. The first view that fails raises its :class:`DecodeError`.
    """
    pool = _decode_pool()
    futures = {
        view: pool.submit(
            decode_image, msg, topic=topics[view], size=size, pad=pad, resize_mode=resize_mode
        )
        for view, msg in messages.items()
    }
    return {view: future.result() for view, future in futures.items()}


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    """One shared pool, as many threads as cores (at most one per view), made on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            workers = min(len(VIEWS), os.cpu_count() or 1)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        return _POOL


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB ``uint8`` image as a baseline JPEG, as nuScenes-to-ROS converters publish."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as JPEG")
    return buf.tobytes()


def compressed_format(fmt: str) -> tuple[str, bool]:
    """Parse a ``CompressedImage.format`` string into (codec, pixels are stored RGB-ordered).

    image_transport writes ``"<source encoding>; <codec> compressed <encoding it compressed>"``
    (``"rgb8; jpeg compressed bgr8"``); older publishers write just ``"jpeg"`` or ``"png"``. The
    codec is ``""`` when the string names none of jpeg/png (the data's magic bytes decide then:
    the label is informational, a mislabelled JPEG still decodes). The flag is
    True when the encoder was handed RGB-ordered pixels (``"... compressed rgb8"``), which a
    standard decoder then returns channel-swapped. ``compressedDepth`` raises a
    :class:`DecodeError` through the caller: depth is no camera image.
    """
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        return "compressedDepth", False
    _, _, codec_part = text.rpartition(";")
    words = codec_part.replace(",", " ").split()
    codec = next((w for w in words if w in ("jpeg", "jpg", "png")), "")
    stored = words[words.index("compressed") + 1] if "compressed" in words[:-1] else ""
    return ("jpeg" if codec == "jpg" else codec), stored in ("rgb8", "rgba8", "rgb16", "rgba16")


def _as_bytes_array(data: Any, topic: str) -> np.ndarray:
    """View a message's ``data`` field (numpy, bytes, array.array or list) as uint8 without copy."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, list):
        # Dashing-era rclpy hands out byte[] as a list of length-1 bytes objects.
        if data and isinstance(data[0], bytes):
            return np.frombuffer(b"".join(data), dtype=np.uint8)
        return np.asarray(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError as exc:
        raise DecodeError(
            f"{topic}: image data of type {type(data).__name__} is not a byte buffer"
        ) from exc


def _decode_compressed(
    msg: CompressedImage, topic: str, size: tuple[int, int] | None, *, letterbox: bool
) -> np.ndarray:
    codec, stored_rgb = compressed_format(msg.format)
    if codec == "compressedDepth":
        raise DecodeError(
            f"{topic}: format {msg.format!r} is a compressedDepth depth image, not a camera "
            "image; subscribe the colour topic (e.g. .../image_rect_compressed)"
        )
    buf = _as_bytes_array(msg.data, topic)
    if buf.size == 0:
        raise DecodeError(f"{topic}: empty CompressedImage data; check the camera driver")
    head = buf[:8].tobytes()
    if not codec:
        codec = "jpeg" if head.startswith(_JPEG_MAGIC) else "png" if head == _PNG_MAGIC else ""
    if codec not in SUPPORTED_FORMATS:
        raise DecodeError(
            f"{topic}: unsupported CompressedImage format {msg.format!r}; supported codecs: "
            f"{', '.join(SUPPORTED_FORMATS)} (republish with image_transport's compressed plugin)"
        )
    flag = cv2.IMREAD_COLOR
    if codec == "jpeg" and size is not None:
        flag = _jpeg_reduction_flag(buf, size, letterbox=letterbox)
    if codec == "jpeg":
        with _LIBJPEG_STDERR.capture(topic, _stamp_text(msg)):
            bgr = cv2.imdecode(buf, flag)
    else:
        bgr = cv2.imdecode(buf, flag)
    if bgr is None:
        raise DecodeError(
            f"{topic}: corrupt or truncated {codec} data ({buf.size} bytes, format "
            f"{msg.format!r}); the frame is skipped, check the camera and its transport"
        )
    return bgr if stored_rgb else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _jpeg_reduction_flag(buf: np.ndarray, size: tuple[int, int], *, letterbox: bool) -> int:
    """The imdecode flag of the largest native JPEG downscale that still covers ``size`` (with
    ``letterbox``: the part of ``size`` the image fills once padded to its aspect ratio)."""
    dims = jpeg_size(buf)
    if dims is None:
        return cv2.IMREAD_COLOR
    width, height = dims
    if letterbox:
        scale = min(size[0] / width, size[1] / height)
        size = (math.ceil(width * scale), math.ceil(height * scale))
    for factor, flag in _JPEG_REDUCTIONS:
        # libjpeg's scaled output is ceil(dim / factor)
        if -(-width // factor) >= size[0] and -(-height // factor) >= size[1]:
            return flag
    return cv2.IMREAD_COLOR


def jpeg_size(buf: np.ndarray | bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, or None if there is none to read.

    Reads only the marker segments before the first SOF, so it costs microseconds, which is what
    choosing the decode scale needs (a full header parse by a decoder library costs more).
    """
    view = np.ascontiguousarray(buf).data if isinstance(buf, np.ndarray) else memoryview(buf)
    data = view.cast("B")
    if bytes(data[:2]) != _JPEG_MAGIC:
        return None
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF_MARKERS:
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return (width, height) if width and height else None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _decode_raw(msg: RawImage, topic: str) -> np.ndarray:
    encoding = msg.encoding.strip().lower()
    if encoding not in _PIXEL_BYTES:
        raise DecodeError(
            f"{topic}: unknown image encoding {msg.encoding!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)} (convert with image_proc or publish compressed)"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * _PIXEL_BYTES[encoding]
    if height <= 0 or width <= 0:
        raise DecodeError(f"{topic}: empty {width}x{height} image; check the camera driver")
    if step < row_bytes:
        raise DecodeError(
            f"{topic}: step {step} is shorter than one row of {width} {encoding} pixels "
            f"({row_bytes} bytes); the publisher fills sensor_msgs/Image wrongly"
        )
    buf = _as_bytes_array(msg.data, topic)
    if buf.size != height * step:
        raise DecodeError(
            f"{topic}: data has {buf.size} bytes but height*step = {height}*{step} = "
            f"{height * step}; the message is truncated or its header is wrong"
        )
    rows = buf.reshape(height, step)[:, :row_bytes]
    if encoding == "mono16":
        order = ">" if msg.is_bigendian else "<"
        mono16 = np.ascontiguousarray(rows).view(f"{order}u2")
        # A fixed scale (not per-image min/max) keeps brightness stable from frame to frame.
        return cv2.cvtColor((mono16 >> 8).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    if encoding in _BAYER_CODES:
        return cv2.cvtColor(np.ascontiguousarray(rows), _BAYER_CODES[encoding])
    if encoding == "mono8":
        return cv2.cvtColor(np.ascontiguousarray(rows), cv2.COLOR_GRAY2RGB)
    return rows.reshape(height, width, _PIXEL_BYTES[encoding])[..., _RGB_CHANNELS[encoding]]


def fit(
    rgb: np.ndarray,
    size: tuple[int, int],
    pad: Colour | None = None,
    resize_mode: ResizeMode = "exact",
) -> np.ndarray:
    """``rgb`` padded with ``pad`` (when given) to the aspect ratio of ``size``, centred, and
    resized to exactly ``size`` as ``resize_mode`` says (see the module docstring)."""
    if pad is None:
        return resize(rgb, size, resize_mode)
    height, width = rgb.shape[:2]
    target_w, target_h = _letterbox_size(width, height, size)
    if resize_mode == "exact" and target_h > height:
        # PIL filters rows first, then columns, and the padding's rows stay its colour: filter
        # the image's rows alone, pad, then filter the columns (equal to resizing the padded).
        rows = _pil_resize(rgb, (size[0], height))
        return _pil_resize(_paste(rows, (size[0], target_h), pad), size)
    return resize(_paste(rgb, (target_w, target_h), pad), size, resize_mode)


def _letterbox_size(width: int, height: int, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` image padded to the aspect ratio of ``size``."""
    if width * size[1] > height * size[0]:
        return width, round(width * size[1] / size[0])
    if width * size[1] < height * size[0]:
        return round(height * size[0] / size[1]), height
    return width, height


def _paste(rgb: np.ndarray, canvas: tuple[int, int], colour: Colour) -> np.ndarray:
    """``rgb`` centred on a ``canvas`` (width, height) of ``colour`` (the offset rounded down,
    as ``expand2square`` pastes at ``(side - height) // 2``)."""
    height, width = rgb.shape[:2]
    if (width, height) == canvas:
        return rgb
    top, left = (canvas[1] - height) // 2, (canvas[0] - width) // 2
    out = np.empty((canvas[1], canvas[0], 3), dtype=np.uint8)
    out[...] = colour
    out[top : top + height, left : left + width] = rgb
    return out


def resize(rgb: np.ndarray, size: tuple[int, int], mode: ResizeMode = "exact") -> np.ndarray:
    """Resize to exactly ``size`` (width, height): PIL's bicubic (``exact``), or OpenCV's
    bilinear, area averaging past :data:`_BILINEAR_MAX_DOWNSCALE` (``fast``)."""
    width, height = size
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    if mode == "exact":
        return _pil_resize(rgb, size)
    downscale = max(rgb.shape[1] / width, rgb.shape[0] / height)
    interpolation = cv2.INTER_AREA if downscale > _BILINEAR_MAX_DOWNSCALE else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def _pil_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``PIL.Image.resize(size, BICUBIC)`` of an RGB array: what the transformers image
    processors call (``image_transforms.resize``), so the very same pixels."""
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BICUBIC)
    return np.array(resized)  # writable, as OpenCV's results are


#: Largest downscale left to bilinear interpolation (``fast``): its 2 taps per axis still reach
#: 2 / 2.25 = 89 % of the input pixels; beyond it area averaging is worth its 8x cost.
_BILINEAR_MAX_DOWNSCALE = 2.25


def _stamp_text(msg: Any) -> str:
    """``sec.nanosec`` of the message's ``header.stamp``; empty when it has none."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    sec, nanosec = getattr(stamp, "sec", None), getattr(stamp, "nanosec", None)
    if isinstance(sec, int) and isinstance(nanosec, int):
        return f"{sec}.{nanosec:09d}"
    return ""


#: The warnings libjpeg(-turbo) prints (its ``JWRN_*`` messages); other lines are not its.
_LIBJPEG_LINE = re.compile(
    rb"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters for sequential "
    rb"JPEG|Inconsistent progression sequence|Unknown Adobe color transform code|Warning: "
    rb"unknown JFIF revision|Warning: thumbnail image size does not match|Application "
    rb"transferred too many scanlines)"
)


@dataclass
class _Decode:
    """One decode inside a capture window: where its image came from, and the span of the
    capture file it was running for (``end`` is None until it returns)."""

    topic: str
    stamp: str
    start: int
    end: int | None = None

    def describe(self) -> str:
        return f"{self.topic} at stamp {self.stamp}" if self.stamp else self.topic

    def covers(self, start: int, end: int) -> bool:
        """Whether this decode ran while bytes ``start:end`` of the capture were written."""
        return self.start <= start and self.end is not None and end <= self.end


class _StderrCapture:
    """Routes what libjpeg prints on stderr during JPEG decodes to :data:`logger`.

    File descriptor 2 belongs to the whole process, so the capture is process-wide and counted:
    the first decode to start points fd 2 at an in-memory file (``dup2``; the real stderr is
    kept in a duplicate), later ones join the open window, the last to finish points fd 2 back
    and reads the file. Only these few system calls run under the lock, so decodes in several
    threads still run at the same time. ``dup2`` swaps the descriptor atomically, so every write
    by any thread lands whole either on the real stderr or in the file, and the file's lines
    that are not libjpeg's (another thread's log line, a Python warning) are written on to the
    real stderr when the window closes: delayed by a decode, never lost. A libjpeg line is
    credited to the decodes that ran over the whole span where it was written (one, unless
    several decoded at once, e.g. a frame's views) and logged at WARNING, the first per topic;
    later ones on that topic at DEBUG, so that a camera that always pads its JPEGs does not
    flood the log. A process that forks while a window is open restores fd 2 in the child; a
    program started meanwhile by another thread with an inherited stderr would write into the
    file instead (the package starts none: the PTB tokenizer gets pipes). When fd 2 cannot be
    duplicated (closed) nothing is captured.
    """

    def __init__(self) -> None:
        self._reset()
        self._warned: set[str] = set()
        self._sink: int | None = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._saved: int | None = None
        self._decodes: list[_Decode] = []

    @contextmanager
    def capture(self, topic: str, stamp: str = "") -> Iterator[None]:
        """Run the ``with`` block (a libjpeg decode) with stderr captured."""
        decode = self._open(topic, stamp)
        try:
            yield
        finally:
            if decode is not None:
                self._close(decode)

    def _open(self, topic: str, stamp: str) -> _Decode | None:
        with self._lock:
            if self._saved is None:
                try:
                    sink = self._sink if self._sink is not None else _memory_file()
                    self._sink = sink
                    saved = os.dup(2)
                except OSError:
                    return None
                os.dup2(sink, 2)
                self._saved = saved
            assert self._sink is not None
            decode = _Decode(topic, stamp, os.lseek(self._sink, 0, os.SEEK_CUR))
            self._decodes.append(decode)
            return decode

    def _close(self, decode: _Decode) -> None:
        records: list[tuple[int, str, str]] = []
        with self._lock:
            assert self._sink is not None and self._saved is not None
            decode.end = os.lseek(self._sink, 0, os.SEEK_CUR)
            if any(d.end is None for d in self._decodes):
                return  # another decode still runs: the last one reads the window
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
            decodes, self._decodes = self._decodes, []
            written = os.lseek(self._sink, 0, os.SEEK_CUR)
            if not written:
                return
            text = os.pread(self._sink, written, 0)
            os.ftruncate(self._sink, 0)
            os.lseek(self._sink, 0, os.SEEK_SET)
            offset = 0
            for line in text.splitlines(keepends=True):
                if _LIBJPEG_LINE.match(line):
                    span = (offset, offset + len(line))
                    records.append(self._record(line, [d for d in decodes if d.covers(*span)]))
                else:
                    _write_all(2, line)
                offset += len(line)
        for level, where, message in records:
            logger.log(level, "%s: libjpeg: %s (decoded; parts may be damaged)", where, message)

    def _record(self, line: bytes, decodes: list[_Decode]) -> tuple[int, str, str]:
        """(level, where, message) of one libjpeg line written while ``decodes`` ran."""
        message = line.decode("utf-8", "replace").strip()
        topics = {d.topic for d in decodes}
        level = logging.DEBUG if topics and topics <= self._warned else logging.WARNING
        self._warned |= topics
        if len(decodes) == 1:
            where = decodes[0].describe()
        elif decodes:
            where = "one of " + ", ".join(d.describe() for d in decodes) + " (decoded at once)"
        else:
            where = "a JPEG"
        return level, where, message

    def _after_fork(self) -> None:
        """In a child forked while a window was open: give it its stderr back."""
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self._reset()


def _memory_file() -> int:
    """A new anonymous file (memory-backed where the system has ``memfd_create``)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("prune2drive-stderr", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; a stderr that cannot take it loses it (as it would)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass


#: The one capture of libjpeg's messages (see :class:`_StderrCapture`).
_LIBJPEG_STDERR = _StderrCapture()
