"""The ``exact`` preprocessing (the default) gives each family's model the pixels of its own
image processor: six camera frames, raw and JPEG, through the node's path (the engine's
``decode``, i.e. ``decode_views``, then the model's ``preprocess``) are within 1 level (of 255)
of the reference processor on the same frames (transformers' PIL image processors, and for
DriveMM LLaVA's ``expand2square`` with SigLIP's processor), which decodes JPEGs with PIL. The
``fast`` resize is the option that is not.
"""

from __future__ import annotations

import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    GotOcr2ImageProcessorPil,
    LlavaOnevisionImageProcessorPil,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessorPil,
)

from prune2drive_ros.engine import Engine
from prune2drive_ros.sensors.imaging import encode_jpeg
from prune2drive_ros.sensors.resizing import ResizeMode
from prune2drive_ros.sensors.scene import RoadScene
from prune2drive_ros.sensors.sync import FrameSet
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.checkpoint import IMAGE_FIT_KEY
from prune2drive_ros.vlm.qwen2_5_vl import Qwen2_5_VLVLM
from prune2drive_ros.vlm.tiny import cached_tiny

#: Largest difference allowed from the reference, in 8-bit levels (plus float rounding).
ONE_LEVEL = 1.0 + 1e-3


@pytest.fixture(scope="module")
def views() -> dict[str, np.ndarray]:
    """Six 1600 x 900 camera frames of the synthetic road scene (cars, lanes, sky edges)."""
    return RoadScene(5, 1600, 900).render(0)


@pytest.fixture(scope="module", params=["raw", "jpeg"])
def camera(
    request: pytest.FixtureRequest, views: dict[str, np.ndarray]
) -> tuple[FrameSet, list[Image.Image]]:
    """The frames as the node receives them (sensor_msgs/Image rgb8, or CompressedImage JPEG)
    and as the reference processors get them (PIL images; PIL decodes the JPEG)."""
    messages, pictures = {}, []
    for view in VIEWS:
        rgb = views[view]
        if request.param == "raw":
            height, width = rgb.shape[:2]
            messages[view] = SimpleNamespace(
                height=height,
                width=width,
                encoding="rgb8",
                is_bigendian=0,
                step=3 * width,
                data=rgb.tobytes(),
            )
            pictures.append(Image.fromarray(rgb))
        else:
            data = encode_jpeg(rgb, 90)
            messages[view] = SimpleNamespace(format="rgb8; jpeg compressed bgr8", data=data)
            pictures.append(Image.open(io.BytesIO(data)).convert("RGB"))
    return FrameSet(stamps=dict.fromkeys(VIEWS, 0), messages=messages), pictures


@pytest.fixture(scope="module")
def llava() -> DrivingVLM:
    return load_vlm(cached_tiny("llava_onevision"))


@pytest.fixture(scope="module")
def padded_llava(tmp_path_factory: pytest.TempPathFactory) -> DrivingVLM:
    """The tiny LLaVA-OneVision marked as trained on padded views, as a converted DriveMM is."""
    folder = tmp_path_factory.mktemp("pad") / "tiny"
    shutil.copytree(cached_tiny("llava_onevision"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, IMAGE_FIT_KEY: "pad"}))
    vlm = load_vlm(folder)
    assert vlm.pad_color == (127, 127, 127)
    return vlm


def node_pixels(vlm: DrivingVLM, frames: FrameSet, mode: ResizeMode = "exact") -> torch.Tensor:
    """What the node feeds ``vlm``: the engine's decode (six views in the decode threads),
    then the model's pixel values."""
    vlm.image_resize = mode
    try:
        return vlm.preprocess(Engine(vlm, None).decode(frames))
    finally:
        vlm.image_resize = "exact"


def levels(pixels: torch.Tensor, vlm: DrivingVLM) -> torch.Tensor:
    """Normalised pixel values ``[..., 3, ...]`` (channels on dim 1) back to 8-bit levels."""
    norm = vlm.normalization
    shape = (1, 3) + (1,) * (pixels.dim() - 2)
    mean = torch.tensor(norm.mean).view(shape)
    std = torch.tensor(norm.std).view(shape)
    return (pixels.float() * std + mean) / norm.rescale


def largest_difference(ours: torch.Tensor, reference: torch.Tensor, vlm: DrivingVLM) -> float:
    assert ours.shape == reference.shape
    return float((levels(ours, vlm) - levels(reference, vlm)).abs().max())


def test_llava_onevision_views_are_the_processors_base_image(llava: DrivingVLM, camera) -> None:
    """Resized whole (the checkpoint's fit): the base image of transformers' processor, the
    frame resized to 384 x 384 (one grid pinpoint, so it cuts no more crops than it must)."""
    frames, pictures = camera
    processor = LlavaOnevisionImageProcessorPil.from_pretrained(
        llava.name, image_grid_pinpoints=[[384, 384]]
    )
    expected = torch.stack(
        [processor([picture], return_tensors="pt")["pixel_values"][0, 0] for picture in pictures]
    )
    assert largest_difference(node_pixels(llava, frames), expected, llava) <= ONE_LEVEL


def test_padded_views_are_the_processors_multi_image_path(padded_llava: DrivingVLM, camera) -> None:
    """Letterboxed (DriveMM's fit): transformers' processor given the six frames as one
    sample pads each to a square with the mean grey, then resizes it."""
    frames, pictures = camera
    processor = LlavaOnevisionImageProcessorPil.from_pretrained(padded_llava.name)
    expected = processor([pictures], return_tensors="pt")["pixel_values"][:, 0]
    assert (
        largest_difference(node_pixels(padded_llava, frames), expected, padded_llava) <= ONE_LEVEL
    )


def expand2square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """LLaVA's ``expand2square`` (llava/mm_utils.py, as DriveMM ships it)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), colour)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def test_drivemm_views_are_llavas_expand2square_then_siglip(
    padded_llava: DrivingVLM, camera
) -> None:
    """DriveMM's own path: expand2square with the image mean, then SigLIP's processor
    (bicubic to 384 x 384, rescale, normalise)."""
    frames, pictures = camera
    siglip = SiglipImageProcessorPil(size={"height": 384, "width": 384})
    grey = tuple(int(m * 255) for m in siglip.image_mean)
    squares = [expand2square(picture, grey) for picture in pictures]
    expected = siglip(squares, return_tensors="pt")["pixel_values"]
    assert (
        largest_difference(node_pixels(padded_llava, frames), expected, padded_llava) <= ONE_LEVEL
    )


def test_internvl_views_are_its_processors(camera) -> None:
    frames, pictures = camera
    vlm = load_vlm(cached_tiny("internvl"))
    expected = GotOcr2ImageProcessorPil.from_pretrained(vlm.name)(pictures, return_tensors="pt")
    assert largest_difference(node_pixels(vlm, frames), expected["pixel_values"], vlm) <= ONE_LEVEL


def test_qwen2_5_vl_patches_are_its_processors(camera) -> None:
    """Qwen2.5-VL's processor smart-resizes a 1600 x 900 frame to the adapter's 896 x 504 px
    (bicubic) and flattens it into patches; the adapter's patches of the node's pixels match."""
    frames, pictures = camera
    vlm = load_vlm(cached_tiny("qwen2_5_vl"))
    assert isinstance(vlm, Qwen2_5_VLVLM)
    expected = Qwen2VLImageProcessorPil.from_pretrained(vlm.name)(pictures, return_tensors="pt")
    flat, grid = vlm.patches(node_pixels(vlm, frames))
    assert torch.equal(grid, expected["image_grid_thw"])
    by_channel = (flat.shape[0], 3, -1)  # each patch row is channel x temporal x 14 x 14
    ours, reference = flat.reshape(by_channel), expected["pixel_values"].reshape(by_channel)
    assert largest_difference(ours, reference, vlm) <= ONE_LEVEL


def test_fast_resize_is_an_approximation(llava: DrivingVLM, camera) -> None:
    """``fast`` (reduced-scale decode, OpenCV's bilinear/area) is near the exact pixels on
    average but not within a level: the option trades the trained-on input for speed."""
    frames, _ = camera
    exact, fast = node_pixels(llava, frames), node_pixels(llava, frames, "fast")
    difference = (levels(exact, llava) - levels(fast, llava)).abs()
    assert difference.max() > 1.0 and difference.mean() < 2.0
