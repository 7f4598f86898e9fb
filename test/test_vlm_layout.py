"""The vlm package's layout: registries listed without torch, helpers apart from the adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import heavy_modules_after

from prune2drive_ros.errors import ConversionError, DecodeError, ModelLoadError
from prune2drive_ros.pruning.selection import Selection
from prune2drive_ros.views import VIEWS
from prune2drive_ros.vlm import FAMILIES, DrivingVLM, conversion, load_vlm
from prune2drive_ros.vlm.conversion import FORMATS, convert_checkpoint
from prune2drive_ros.vlm.image_processing import ViewImageProcessor
from prune2drive_ros.vlm.results import Normalization, ViewGeometry
from prune2drive_ros.vlm.view_tokens import ViewTokens

CPU = torch.device("cpu")


def test_the_package_and_its_registries_import_without_torch() -> None:
    code = (
        "import prune2drive_ros.vlm.conversion\n"
        "from prune2drive_ros.vlm import FAMILIES, RANDOM_WEIGHTS_NOTE\n"
        "assert FAMILIES.names() and RANDOM_WEIGHTS_NOTE\n"
    )
    assert heavy_modules_after(code, ("torch", "transformers")) == []


def test_every_family_is_registered_under_its_model_type() -> None:
    for name in FAMILIES:
        adapter = FAMILIES[name]
        assert issubclass(adapter, DrivingVLM) and adapter.family == name


def test_an_unknown_family_says_model_type_and_lists_the_supported() -> None:
    with pytest.raises(ModelLoadError, match=r"'llava_llama'.*internvl, llava_onevision") as info:
        load_vlm("never-read", family="llava_llama")
    assert "model_type" in str(info.value) and "prune2drive convert" in str(info.value)


def test_a_format_is_its_module_and_an_unknown_one_lists_the_known() -> None:
    for name in FORMATS:
        assert FORMATS[name] is getattr(conversion, name)
        assert FORMATS[name].__name__ == f"{conversion.__name__}.{name}"
    with pytest.raises(ConversionError, match="expected one of llava_next, internvl_chat"):
        convert_checkpoint("/nonexistent", "/nonexistent-target", format="llava")
    with pytest.raises(AttributeError):
        conversion.not_a_format  # noqa: B018


# ------------------------------------------------------------------------ image processing


def _processor(**changes: object) -> ViewImageProcessor:
    normalization = Normalization(mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 0.25), rescale=1 / 255)
    options: dict = {"image_size": (4, 2), "layout": None, "device": CPU, "dtype": torch.float32}
    options.update(changes)
    return ViewImageProcessor(normalization, options.pop("image_fit", "resize"), **options)


def test_pixels_are_normalised_as_the_processor_does() -> None:
    images = [np.full((2, 4, 3), 17 * v, dtype=np.uint8) for v in range(len(VIEWS))]
    pixels = _processor()(images)
    assert pixels.shape == (len(VIEWS), 3, 2, 4)
    mean, std = torch.tensor([0.5, 0.25, 0.0]), torch.tensor([0.5, 0.5, 0.25])
    expected = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255 - mean[:, None, None]
    torch.testing.assert_close(pixels, expected / std[:, None, None])


def test_views_of_the_wrong_count_or_size_are_refused() -> None:
    processor = _processor()
    with pytest.raises(DecodeError, match="give one per view"):
        processor([np.zeros((2, 4, 3), np.uint8)])
    with pytest.raises(DecodeError, match="uint8 2x4x3"):
        processor([np.zeros((4, 2, 3), np.uint8)] * len(VIEWS))


def test_padded_views_get_the_mean_colour_and_an_unknown_fit_is_refused() -> None:
    assert _processor().pad_color is None
    assert _processor(image_fit="pad").pad_color == (127, 63, 0)
    with pytest.raises(ModelLoadError, match="image fit 'crop' is not one of resize, pad"):
        _processor(image_fit="crop")


# ------------------------------------------------------------------------ view tokens


def test_views_of_their_own_image_keep_the_encoder_layout() -> None:
    tokens = ViewTokens(ViewGeometry(tokens_per_view=4, patch_grid=(2, 2), image_size=(8, 8)), CPU)
    features = torch.randn(len(VIEWS), 4, 3)
    assert tokens.per_view(features) is features and tokens.image_tokens == 4
    rows = tokens.prefix_rows([2, 1, 1, 1, 1, 1, 5], separators=1)
    assert rows[0].tolist() == [2, 3, 4, 5] and rows[1].tolist() == [8, 9, 10, 11]
    mask = torch.tensor([[False, True, False, True]] * len(VIEWS))
    kept = tokens.kept(features, Selection.from_mask(mask))
    slots = tokens.image_slots(features, kept)
    assert [indices.tolist() for _, indices in slots] == [[1, 3]] * len(VIEWS)
    torch.testing.assert_close(slots[2][0], features[2, [1, 3]])
    assert tokens.boxes()[0][3].tolist() == [0.5, 0.5, 1.0, 1.0]


def test_tokens_or_a_selection_of_another_shape_are_refused() -> None:
    tokens = ViewTokens(ViewGeometry(tokens_per_view=4, patch_grid=(2, 2), image_size=(8, 8)), CPU)
    with pytest.raises(ValueError, match=r"expected \[6, 4, D\] from encode_views"):
        tokens.kept(torch.zeros(len(VIEWS), 5, 3), None)
    with pytest.raises(ValueError, match="does not match 6 views of 4 tokens"):
        tokens.kept(torch.zeros(len(VIEWS), 4, 3), Selection.keep_all(len(VIEWS), 5, CPU))
