"""The one registry style: names listed without imports, plug-ins imported on first use."""

from __future__ import annotations

import pytest
from conftest import heavy_modules_after

from prune2drive_ros.errors import ConfigError, ModelLoadError
from prune2drive_ros.registry import Registry


def test_names_are_read_without_importing_and_values_import_on_use() -> None:
    registry: Registry[object] = Registry(
        "codec", {"json": "json:dumps", "b64": "base64:b64encode"}
    )
    assert registry.names() == ("json", "b64")
    assert list(registry) == ["json", "b64"] and len(registry) == 2 and "json" in registry
    import base64
    import json

    assert registry["json"] is json.dumps and registry.load("b64") is base64.b64encode


def test_an_unknown_name_lists_the_known_ones_and_the_closest() -> None:
    registry: Registry[object] = Registry("pruner", {"tfps": "json:dumps", "random": "json:loads"})
    with pytest.raises(
        ConfigError,
        match=r"unknown pruner 'tfp' \(did you mean tfps\?\); expected one of tfps, random",
    ):
        registry["tfp"]
    assert "tfp" not in registry


def test_the_kind_chooses_the_error_and_its_remedy() -> None:
    registry: Registry[object] = Registry(
        "model family", {"a": "json:dumps"}, error=ModelLoadError, remedy="convert it first"
    )
    with pytest.raises(ModelLoadError, match=r"convert it first$"):
        registry.target("b")


def test_a_malformed_entry_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="not 'module:attribute'"):
        Registry("pruner", {"tfps": "prune2drive_ros.pruning.fps.tfps"})


def test_the_package_registries_list_names_without_torch() -> None:
    """Listing the pruners, samplers, formats and families (what --help and a choices check do)
    imports neither torch nor transformers."""
    code = (
        "from prune2drive_ros.pruning.registry import PRUNERS\n"
        "from prune2drive_ros.tuning.samplers import SAMPLERS\n"
        "from prune2drive_ros.vlm.conversion import FORMATS\n"
        "from prune2drive_ros.vlm.families import FAMILIES\n"
        "assert PRUNERS.names() and SAMPLERS.names() and FORMATS.names() and FAMILIES.names()\n"
    )
    assert heavy_modules_after(code, ("torch", "transformers", "optuna")) == []
