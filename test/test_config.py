"""The parameter schema: validation per parameter, the ROS params-file loader, the shipped file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prune2drive_ros.config import (
    DEFAULT_PARAMS_FILE,
    LAUNCH_OVERRIDES,
    DriveVLMConfig,
    check_parameter_names,
    check_qos_overrides,
    check_question,
    default_image_topics,
    is_ros_parameter,
    launch_overrides,
    load_params_yaml,
    package_file,
    parse_bool,
    qos_override_names,
    resolve_rates_file,
)
from prune2drive_ros.errors import ConfigError, QuestionError
from prune2drive_ros.pruning import PRUNERS
from prune2drive_ros.views import VIEWS

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / DEFAULT_PARAMS_FILE

#: One invalid value per parameter (wrong choice, out of range, or wrong type).
INVALID: dict[str, object] = {
    "model": 3,
    "family": None,
    "device": "tpu",
    "dtype": "int8",
    "attn_implementation": "flash",
    "quantization": "fp4",
    "prompt": "llava",
    "max_tiles": 13,
    "placement": "layer:one",
    "pruner": "fastv_typo",
    "rates_file": 1.5,
    "image_resize": "bicubic",
    "use_compressed": "yes",
    "autostart": "yes",
    "image_topics": ("/a", "/b"),
    "sync_slop_s": 1.5,
    "sync_queue_size": 0,
    "max_frame_age_s": -1.0,
    "max_question_chars": 0,
    "max_queue": 65,
    "answer_timeout_s": 0.5,
    "max_new_tokens": 0,
    "ttft_budget_ms": -1.0,
    "standing_question": 7,
    "standing_period_s": 0.0,
    "diagnostics_period_s": 100.0,
}


def write_params(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_validate() -> None:
    config = DriveVLMConfig()
    assert config.image_topics == default_image_topics()
    assert config.pruner in PRUNERS


def test_every_parameter_has_a_description_and_an_invalid_case() -> None:
    names = [spec.name for spec in DriveVLMConfig.specs()]
    assert set(names) == set(INVALID), "add an invalid value for each new parameter"
    for spec in DriveVLMConfig.specs():
        assert spec.description.strip(), spec.name
        assert spec.kind in (str, bool, int, float, tuple), spec.name


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_value_names_the_parameter(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        DriveVLMConfig().with_changes(**{name: INVALID[name]})
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):  # construction checks, too
        DriveVLMConfig(**{name: INVALID[name]})


def test_a_list_of_topics_becomes_a_tuple() -> None:
    topics = list(default_image_topics(compressed=False))
    assert DriveVLMConfig(image_topics=topics).image_topics == tuple(topics)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("device", "auto, cuda, cpu"),
        ("max_queue", r"\[1, 64\]"),
        ("max_frame_age_s", "0 disables"),
        ("pruner", ", ".join(PRUNERS)),
    ],
)
def test_error_says_what_is_allowed(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DriveVLMConfig().with_changes(**{name: INVALID[name]})


def test_range_edges_are_allowed() -> None:
    for spec in DriveVLMConfig.specs():
        if spec.low is None or spec.high is None:
            continue
        for edge in (spec.low, spec.high):
            value = spec.kind(edge)
            assert getattr(DriveVLMConfig().with_changes(**{spec.name: value}), spec.name) == value


def test_attention_choices_are_the_vlm_ones() -> None:
    from prune2drive_ros.vlm.loading import ATTENTION_IMPLEMENTATIONS

    assert DriveVLMConfig.spec("attn_implementation").choices == ATTENTION_IMPLEMENTATIONS


def test_every_pruner_is_a_choice() -> None:
    for name in PRUNERS:  # FastV ranks by the language model's attention: it prunes inside
        changes = {"placement": "layer:2"} if name == "fastv" else {}
        assert DriveVLMConfig().with_changes(pruner=name, **changes).pruner == name


def test_image_topics_must_be_distinct_and_non_empty() -> None:
    topics = list(default_image_topics())
    with pytest.raises(ConfigError, match="twice"):
        DriveVLMConfig().with_changes(image_topics=[topics[0]] * 6)
    with pytest.raises(ConfigError, match="non-empty"):
        DriveVLMConfig().with_changes(image_topics=[*topics[:5], " "])


def test_check_question() -> None:
    assert check_question("  Is the lane free? ", 20) == "Is the lane free?"
    with pytest.raises(QuestionError, match="the question is empty; ask something"):
        check_question(" \n\t", 20)
    with pytest.raises(
        QuestionError, match="has 21 characters, more than max_question_chars=20; shorten it"
    ):
        check_question("x" * 21, 20)


def test_standing_question_is_checked_when_set() -> None:
    """A blank or over-long standing question would be refused every standing_period_s: it is
    refused when set instead (at start-up, and live through with_changes)."""
    config = DriveVLMConfig(max_question_chars=10)
    assert config.with_changes(standing_question="").standing_question == ""
    assert config.with_changes(standing_question=" Clear? ").standing_question == " Clear? "
    with pytest.raises(
        ConfigError,
        match=r"^parameter standing_question: the question is empty; .*\(an empty string turns "
        r"it off\)$",
    ):
        config.with_changes(standing_question="   ")
    with pytest.raises(
        ConfigError, match=r"standing_question: the question 'x{11}' has 11 characters"
    ):
        config.with_changes(standing_question="x" * 11)


def test_raw_images_switch_default_topics_only() -> None:
    raw = DriveVLMConfig(use_compressed=False)
    assert raw.resolved_image_topics() == dict(zip(VIEWS, default_image_topics(False), strict=True))
    custom = tuple(f"/rig/{v.lower()}" for v in VIEWS)
    mine = DriveVLMConfig(use_compressed=False, image_topics=custom)
    assert tuple(mine.resolved_image_topics().values()) == custom


def test_constraints_text_for_descriptors() -> None:
    assert DriveVLMConfig.spec("dtype").constraints().startswith("one of: auto, bfloat16")
    assert "needs a restart" in DriveVLMConfig.spec("model").constraints()
    assert "needs a restart" not in DriveVLMConfig.spec("standing_question").constraints()
    with pytest.raises(ConfigError, match="unknown parameter"):
        DriveVLMConfig.spec("nope")


def test_load_node_section_and_wildcard(tmp_path: Path) -> None:
    path = write_params(
        tmp_path,
        """
/**:
  ros__parameters:
    use_sim_time: true
    max_queue: 2
    device: cpu
/vehicle/prune2drive:
  ros__parameters:
    max_queue: 8
    qos_overrides:
      /parameter_events:
        publisher:
          depth: 100
other_node:
  ros__parameters:
    whatever: 1
""",
    )
    config = load_params_yaml(path)
    assert (config.max_queue, config.device) == (8, "cpu")


def test_load_unknown_keys_are_all_named(tmp_path: Path) -> None:
    path = write_params(
        tmp_path,
        "prune2drive:\n  ros__parameters:\n    max_qeue: 3\n    devcie: cpu\n    zzz: 1\n",
    )
    with pytest.raises(ConfigError) as raised:
        load_params_yaml(path)
    assert (
        "unknown parameter(s) devcie (did you mean device?), max_qeue (did you mean max_queue?), "
        "zzz; known: model, family,"
    ) in str(raised.value)


def test_the_nodes_overrides_are_checked_by_name() -> None:
    # what the node runs on rclpy's overrides (a misspelt -p or params-file name)
    overrides = ["max_queue", "use_sim_time", "qos_overrides./x.depth", "answer_timout_s"]
    with pytest.raises(ConfigError, match=r"answer_timout_s \(did you mean answer_timeout_s\?\)"):
        check_parameter_names(n for n in overrides if not is_ros_parameter(n))
    with pytest.raises(ConfigError, match="set diagnostics_period_s instead"):
        check_parameter_names(["diagnostic_updater.period"])
    check_parameter_names(["max_queue", "model"])


def test_load_refuses_diagnostic_updaters_period(tmp_path: Path) -> None:
    """The node publishes /diagnostics on its own steady timer: the library's period would be
    silently ignored, so the file must set diagnostics_period_s."""
    path = write_params(
        tmp_path, "prune2drive:\n  ros__parameters:\n    diagnostic_updater:\n      period: 2.0\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"diagnostic_updater\.period \(this node does not use it: set "
        r"diagnostics_period_s instead\)",
    ):
        load_params_yaml(path)


def test_load_rejects_integer_for_float_like_ros(tmp_path: Path) -> None:
    path = write_params(tmp_path, "prune2drive:\n  ros__parameters:\n    standing_period_s: 2\n")
    with pytest.raises(ConfigError, match=r"write 2\.0"):
        load_params_yaml(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("other:\n  ros__parameters: {}\n", "no section for node 'prune2drive'"),
        ("prune2drive:\n  max_queue: 3\n", "ros__parameters"),
        ("- a\n- b\n", "must map node names"),
        ("prune2drive: [\n", "not valid YAML"),
        ("prune2drive:\n  ros__parameters:\n    device: gpu\n", "params.yaml.*device"),
    ],
)
def test_load_bad_files(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params_yaml(write_params(tmp_path, body))


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"params file .*absent\.yaml does not exist; pass"):
        load_params_yaml(tmp_path / "absent.yaml")


def test_load_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"prune2drive: {ros__parameters: {pruner: t\xe9}}")
    with pytest.raises(
        ConfigError,
        match=r"cannot read params file .*latin1\.yaml: line 1 is not UTF-8 text \(byte 0xe9\)",
    ):
        load_params_yaml(tmp_path / "latin1.yaml")
    with pytest.raises(ConfigError, match=r"cannot read params file .*: Is a directory"):
        load_params_yaml(tmp_path)


def test_shipped_params_file_is_the_schema() -> None:
    """config/drive_vlm.yaml sets every parameter, to its default, each under a comment."""
    assert load_params_yaml(SHIPPED) == DriveVLMConfig()
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    for spec in DriveVLMConfig.specs():
        index = next(i for i, line in enumerate(lines) if re.match(rf"\s+{spec.name}:", line))
        assert lines[index - 1].strip().startswith("#"), f"{spec.name} has no comment above it"
        if spec.read_only:
            comment_start = index - 1
            while lines[comment_start - 1].strip().startswith("#"):
                comment_start -= 1
            assert "(restart)" in lines[comment_start], f"{spec.name} needs a restart: say so"


def test_package_file_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert package_file("", DEFAULT_PARAMS_FILE) == SHIPPED
    monkeypatch.chdir(tmp_path)
    assert package_file(DEFAULT_PARAMS_FILE, DEFAULT_PARAMS_FILE) == SHIPPED  # package fallback
    (tmp_path / "config").mkdir()
    mine = tmp_path / DEFAULT_PARAMS_FILE
    mine.write_text("{}", encoding="utf-8")
    assert package_file(DEFAULT_PARAMS_FILE, DEFAULT_PARAMS_FILE) == mine  # cwd first
    assert package_file(str(mine), "unused") == mine
    share = tmp_path / "share"
    (share / "config").mkdir(parents=True)
    (share / "config" / "x.yaml").write_text("{}", encoding="utf-8")
    assert package_file("", "config/x.yaml", share) == share / "config" / "x.yaml"
    with pytest.raises(ConfigError, match=r"rates_file 'nope\.yaml' not found; tried"):
        resolve_rates_file(DriveVLMConfig(rates_file="nope.yaml"))


def test_launch_passes_only_the_arguments_given() -> None:
    """An empty argument keeps the params file's value (use_sim_time: true in the file too)."""
    assert launch_overrides(SHIPPED, dict.fromkeys(LAUNCH_OVERRIDES, "")) == {}
    given = {
        "model": "/models/ov",
        "device": "cpu",
        "use_compressed": "False",
        "use_sim_time": "TRUE",
    }
    assert launch_overrides(SHIPPED, given) == {
        "model": "/models/ov",
        "device": "cpu",
        "use_compressed": False,
        "use_sim_time": True,
    }
    assert launch_overrides(SHIPPED, {"namespace": "/car"}) == {}, "not a parameter"


def test_launch_fails_on_a_misspelt_parameter(tmp_path: Path) -> None:
    """ROS would ignore it and run on the default: the launch stops, naming file and name."""
    path = write_params(tmp_path, "/**/prune2drive:\n  ros__parameters:\n    max_frame_age: 5.0\n")
    with pytest.raises(ConfigError, match=r"params file .*params\.yaml: unknown parameter\(s\) "):
        launch_overrides(path, {})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"device": "tpu"}, r"launch arguments: parameter device is 'tpu'; it must be one of"),
        ({"use_sim_time": "yes"}, "launch argument use_sim_time must be true or false, got 'yes'"),
        ({"use_compressed": "1"}, "launch argument use_compressed must be true or false"),
    ],
)
def test_launch_fails_on_a_bad_argument(given: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        launch_overrides(SHIPPED, given)


def test_parse_bool() -> None:
    assert parse_bool("respawn", " True ") is True
    assert parse_bool("respawn", "false") is False
    with pytest.raises(ConfigError, match="launch argument respawn must be true or false"):
        parse_bool("respawn", "")


def test_qos_overrides_are_checked_against_the_topics() -> None:
    allowed = qos_override_names(["/prune2drive/answers"], ["/CAM_FRONT/image_rect_compressed"])
    assert "qos_overrides./CAM_FRONT/image_rect_compressed.subscription.reliability" in allowed
    assert "qos_overrides./prune2drive/answers.publisher.depth" in allowed
    assert len(allowed) == 6
    check_qos_overrides(sorted(allowed)[:2], allowed)
    with pytest.raises(ConfigError, match=r"did you mean qos_overrides\./CAM_FRONT/image_rect_"):
        check_qos_overrides(
            ["qos_overrides./CAM_FRONT/image_rect_compresed.subscription.reliability"], allowed
        )
    with pytest.raises(ConfigError, match=r"history\|depth\|reliability"):
        check_qos_overrides(["qos_overrides./prune2drive/answers.publisher.lifespan"], allowed)
