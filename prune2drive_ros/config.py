"""The one parameter schema of the driving-QA node and of the ROS-free engine.

Every setting is a field of :class:`DriveVLMConfig` whose metadata carries its description, its
allowed range or choices, and whether changing it needs a restart. The node declares each ROS
parameter from this schema (description, range, read-only flag), ``config/drive_vlm.yaml`` sets
them, and the offline tools read that same file with :func:`load_params_yaml`: there is no second
list of parameters to drift out of step.

ROS 2 types parameters strictly (a ``double`` parameter rejects ``1``, it wants ``1.0``), so the
params-file loader is just as strict: a file that loads here also loads in the node.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .attention import ATTENTION_IMPLEMENTATIONS
from .errors import ConfigError, QuestionError
from .files import read_yaml
from .placement import ATTENTION_PRUNERS, decoder_placement_needed, prune_layer
from .prompts import PROMPT_CHOICES
from .pruning.registry import PRUNERS
from .quantization import NO_QUANTIZATION, QUANTIZATIONS
from .sensors.resizing import RESIZE_MODES
from .sensors.sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S
from .views import VIEWS, image_topic

PACKAGE = "prune2drive_ros"

#: Node name, and the key of its section in a ROS params file.
NODE_NAME = "prune2drive"

#: Parameters ROS itself declares; a params file may set them, the schema does not own them.
FOREIGN_PARAMETERS: tuple[str, ...] = ("use_sim_time", "start_type_description_service")
FOREIGN_PREFIXES: tuple[str, ...] = ("qos_overrides.",)

#: Parameters of other nodes' conventions this node does not use -> the one to set. The node
#: publishes /diagnostics itself, on the steady clock (diagnostic_updater's timer runs on the
#: node clock, which stands still under use_sim_time until /clock arrives).
SUPERSEDED: dict[str, str] = {"diagnostic_updater.period": "diagnostics_period_s"}

#: QoS policies a user may override per topic (``qos_overrides.<topic>.<entity>.<policy>``),
#: rclpy's ``QoSOverridingOptions.with_default_policies()``.
QOS_POLICIES: tuple[str, ...] = ("history", "depth", "reliability")

#: ``model`` value that always means the tiny random-weight test model (of ``family``, default
#: LLaVA-OneVision); an empty ``model`` means the trained scene model when it is cached (see
#: :func:`~prune2drive_ros.engine.resolve_model`). A local folder named so is ``./tiny``.
TINY_MODEL = "tiny"

DEFAULT_RATES_FILE = "config/retention_rates.yaml"
DEFAULT_PARAMS_FILE = "config/drive_vlm.yaml"

#: Arguments of launch/drive_vlm.launch.py that set a node parameter, over the params file, when
#: given (an empty argument is not given: the file's value stays).
LAUNCH_OVERRIDES: tuple[str, ...] = (
    "model",
    "rates_file",
    "device",
    "use_compressed",
    "use_sim_time",
    "autostart",
)


@dataclass(frozen=True)
class ParamSpec:
    """What one parameter accepts: the node builds its ``ParameterDescriptor`` from this.

    Attributes:
        name: parameter name (the dataclass field name).
        default: default value; its Python type is the parameter's type.
        description: what it does, for ``ros2 param describe`` and the README table.
        choices: allowed values of a string parameter.
        low, high: inclusive range of a number parameter.
        read_only: True when a change needs a restart (model, topics, ...).
        note: extra constraint text (e.g. "0 disables").
    """

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    read_only: bool = True
    note: str = ""

    @property
    def kind(self) -> type:
        """Python type of the value: str, bool, int, float or tuple (a string array)."""
        return type(self.default)

    def constraints(self) -> str:
        """One line saying what is allowed (``additional_constraints`` of the descriptor)."""
        choices = [] if self.choices is None else ["one of: " + ", ".join(self.choices)]
        restart = ["needs a restart"] if self.read_only else []
        return "; ".join([*choices, *self.limits(), *restart])

    def limits(self) -> list[str]:
        """The range and the note, in words (a command-line flag shows its choices itself)."""
        parts = []
        if self.low is not None and self.high is not None:
            parts.append(f"{self.low:g} to {self.high:g}")
        if self.note:
            parts.append(self.note)
        return parts

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` naming this parameter unless ``value`` is allowed."""
        kind = self.kind
        if kind is tuple:
            if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"parameter {self.name} must be a list of strings, got {value!r}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"parameter {self.name} must be a number, got {value!r}")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"parameter {self.name} must be a {kind.__name__}, got {value!r} "
                f"({type(value).__name__})"
            )
        ranged = kind in (int, float) and self.low is not None and self.high is not None
        if ranged and not (math.isfinite(value) and self.low <= value <= self.high):
            raise ConfigError(
                f"parameter {self.name} is {value}; it must lie in "
                f"[{self.low:g}, {self.high:g}]" + (f" ({self.note})" if self.note else "")
            )
        choices = self.choices
        if choices is not None and value not in choices:
            raise ConfigError(
                f"parameter {self.name} is {value!r}; it must be one of {', '.join(choices)}"
            )


#: Characters of a refused question that its error shows.
QUESTION_PREVIEW_CHARS = 60


def check_question(question: str, max_chars: int) -> str:
    """The question, stripped.

    Raises:
        QuestionError: it is empty (or blank), or longer than ``max_chars`` once stripped.
    """
    text = question.strip()
    if not text:
        raise QuestionError("the question is empty; ask something about the six cameras")
    if len(text) > max_chars:
        # its beginning only: a question may be megabytes, and the message is logged and shown
        preview = text[:QUESTION_PREVIEW_CHARS]
        more = "..." if len(text) > len(preview) else ""
        raise QuestionError(
            f"the question {preview!r}{more} has {len(text)} characters, more than "
            f"max_question_chars={max_chars}; shorten it or raise the limit"
        )
    return text


def _param(default: Any, description: str, **spec: Any) -> Any:
    """A dataclass field whose metadata holds the rest of its :class:`ParamSpec`."""
    return field(default=default, metadata={"description": description, **spec})


def default_image_topics(compressed: bool = True) -> tuple[str, ...]:
    """The six camera topics as the nuScenes converters name them, in :data:`VIEWS` order."""
    return tuple(image_topic(view, compressed) for view in VIEWS)


@dataclass(frozen=True)
class DriveVLMConfig:
    """Every setting of the node and the engine; see each field's description."""

    model: str = _param(
        "",
        "Hugging Face hub id or local path of the VLM checkpoint (e.g. a LLaVA-OneVision "
        "checkpoint); empty = the scene model that `prune2drive train` (or `make demo`) "
        "trained into the cache, when it is there, else the tiny random-weight test model, "
        "which answers nonsense (a warning says so; with a family other than llava_onevision, "
        f"that family's tiny model); {TINY_MODEL} = always the tiny random-weight test model",
    )
    family: str = _param(
        "", "VLM family adapter (e.g. llava_onevision); empty = read from the model's config.json"
    )
    device: str = _param(
        "auto",
        "torch device; auto = cuda when available, else cpu",
        choices=("auto", "cuda", "cpu"),
    )
    dtype: str = _param(
        "auto",
        "weights and activations dtype; auto = bfloat16 on cuda, float32 on cpu",
        choices=("auto", "bfloat16", "float16", "float32"),
    )
    attn_implementation: str = _param(
        "sdpa",
        "attention kernel of the language model (pruning needs no attention weights, so no "
        "eager attention; flash_attention_2 needs CUDA and the flash-attn package)",
        choices=ATTENTION_IMPLEMENTATIONS,
    )
    quantization: str = _param(
        NO_QUANTIZATION,
        "weight-only quantisation of the language model with torchao (the vision tower, "
        "projector, embeddings and LM head stay in dtype): int8, or int4 (on CUDA bfloat16 "
        "on compute capability 8.0+; on the CPU stored a byte a value, for measuring "
        "accuracy, not speed); a scheme that cannot run here is refused at start",
        choices=QUANTIZATIONS,
    )
    prompt: str = _param(
        "auto",
        "how the model is asked: auto follows the checkpoint (the prompt a converted DriveMM / "
        "DriveLMM-o1 names, else the tokenizer's chat template, else generic); drivemm, "
        "drivelmm_o1 (the six views stitched into one image), chat_template, or generic (this "
        "package's own ChatML fallback, which no published model was trained on)",
        choices=PROMPT_CHOICES,
    )
    max_tiles: int = _param(
        1,
        "tiles of the stitched six-view image (drivelmm_o1 prompt only): 1 = one 448 px image "
        "(256 tokens for all cameras), as DriveLMM-o1's evaluation runs; up to 12 = InternVL's "
        "dynamic tiling with a thumbnail",
        low=1,
        high=12,
    )
    placement: str = _param(
        "projector",
        "where tokens are pruned: projector (after the vision projector, as the paper's text) "
        "or layer:K (the hidden states entering decoder layer K, as its reference code: K = 1 "
        "in its inference, 3 in its rate search; fastv needs K >= 1)",
    )
    pruner: str = _param(
        "tfps",
        "visual-token pruner: tfps is Prune2Drive's per-view farthest point sampling; "
        "tfps_shared lets the views share their total by content (the rates as priors); "
        "tfps_cover adds a coverage term that keeps large uniform objects; random, grid and "
        "dart are baselines; fastv ranks by the language model's attention and needs "
        "placement layer:K; a change applies from the next question",
        choices=PRUNERS.names(),
        read_only=False,
    )
    rates_file: str = _param(
        "",
        "per-view retention rates YAML from the tuner; empty = the package's "
        f"{DEFAULT_RATES_FILE}; a relative path is looked up in the working directory, then "
        "in the package; a change is checked first (a bad file is refused, the old rates "
        "kept) and applies from the next question",
        read_only=False,
    )
    image_resize: str = _param(
        RESIZE_MODES[0],
        "how each camera image is resized to the encoder input: exact = a full decode and "
        "PIL's bicubic resize, the pixels of the model family's own image processor (what "
        "checkpoints are trained on); fast = a reduced-scale JPEG decode and OpenCV's "
        "bilinear/area resize, about 4x cheaper to decode but images the model was not trained "
        "on (see BENCHMARKS.md for its cost in answers); a change applies from the next frame "
        "decoded",
        choices=RESIZE_MODES,
        read_only=False,
    )
    use_compressed: bool = _param(
        True,
        "subscribe to sensor_msgs/CompressedImage (true) or sensor_msgs/Image (false)",
    )
    image_topics: tuple[str, ...] = _param(
        default_image_topics(),
        "six camera topics in the order " + ", ".join(VIEWS) + "; the defaults become "
        "/<VIEW>/image_rect when use_compressed is false",
        note="six distinct topic names",
    )
    sync_slop_s: float = _param(
        DEFAULT_SLOP_S,
        "largest header-stamp spread in seconds within one synchronized camera set (60 ms fits "
        "nuScenes-like rigs whose cameras fire in turn; see prune2drive_ros/sensors/sync.py)",
        low=0.0,
        high=1.0,
    )
    sync_queue_size: int = _param(
        DEFAULT_QUEUE_SIZE,
        "messages kept per camera while waiting for the other cameras",
        low=1,
        high=1000,
    )
    max_frame_age_s: float = _param(
        1.0,
        "reject questions when the latest camera set is older than this (node clock, sim "
        "time aware)",
        low=0.0,
        high=86400.0,
        note="0 disables",
        read_only=False,
    )
    max_question_chars: int = _param(
        1000, "longest question accepted, in characters", low=1, high=100000
    )
    max_queue: int = _param(
        4,
        "questions waiting for the GPU beyond the one being answered; more are rejected at once",
        low=1,
        high=64,
    )
    answer_timeout_s: float = _param(
        60.0,
        "seconds an ~/ask call or ~/ask_stream goal waits for its answer, queueing included; "
        "then it gets success false (a question still queued is withdrawn, one being answered "
        "is stopped after its current token)",
        low=1.0,
        high=3600.0,
        read_only=False,
    )
    ttft_budget_ms: float = _param(
        0.0,
        "latency budget in ms for the time to first token (queue wait, decode, encode, prune, "
        "prefill): per question the engine keeps as many visual tokens as a cost model fitted "
        "at warm-up predicts will fit, choosing among the rates file's tuned front (else "
        "scaling its rates down); an answer that cannot fit says the budget was missed",
        low=0.0,
        high=600000.0,
        note="0 disables",
        read_only=False,
    )
    max_new_tokens: int = _param(
        64,
        "answer length limit in tokens when a request gives 0",
        low=1,
        high=4096,
        read_only=False,
    )
    standing_question: str = _param(
        "",
        "question asked every standing_period_s and published on ~/answers; empty = off",
        read_only=False,
    )
    standing_period_s: float = _param(
        5.0, "period of the standing question in seconds", low=0.1, high=3600.0, read_only=False
    )
    diagnostics_period_s: float = _param(
        1.0,
        "period of the /diagnostics status in seconds (on the steady clock, so it reports "
        "while a bag's /clock stands still)",
        low=0.1,
        high=60.0,
        read_only=False,
    )

    autostart: bool = _param(
        True,
        "configure (load the model) and activate the lifecycle node at start, and exit with "
        "status 1 when that fails; false: stay unconfigured for a lifecycle manager or "
        "ros2 lifecycle set",
    )

    @classmethod
    def specs(cls) -> tuple[ParamSpec, ...]:
        """Every parameter of the schema, in declaration order."""
        out = []
        for f in fields(cls):
            meta = dict(f.metadata)
            default = f.default if f.default is not MISSING else None
            out.append(ParamSpec(name=f.name, default=default, **meta))
        return tuple(out)

    @classmethod
    def spec(cls, name: str) -> ParamSpec:
        """The spec of parameter ``name``; ConfigError when there is none."""
        for spec in cls.specs():
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown parameter {name!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, ros_types: bool = False) -> DriveVLMConfig:
        """Build and validate a config from parameter values (missing ones keep defaults).

        Args:
            values: parameter name -> value (YAML or ROS values; lists become tuples).
            ros_types: reject an integer for a float parameter as ROS 2 does, with the fix.

        Raises:
            ConfigError: an unknown name (all of them are listed) or an invalid value.
        """
        check_parameter_names(values)
        specs = {spec.name: spec for spec in cls.specs()}
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if ros_types and specs[name].kind is float and type(value) is int:
                raise ConfigError(
                    f"parameter {name} must be a float: write {value}.0, not {value} "
                    "(ROS 2 rejects an integer for a double parameter)"
                )
            kwargs[name] = value
        return cls(**kwargs)

    def __post_init__(self) -> None:
        """Check every parameter on construction, so no config in flight is unchecked (a list
        given for a tuple parameter, as YAML and ROS give them, becomes a tuple first).

        Raises:
            ConfigError: naming the first invalid parameter and what it allows.
        """
        if isinstance(self.image_topics, list):
            object.__setattr__(self, "image_topics", tuple(self.image_topics))
        for spec in self.specs():
            spec.check(getattr(self, spec.name))
        topics = self.image_topics
        if len(topics) != len(VIEWS) or not all(t.strip() for t in topics):
            raise ConfigError(
                f"parameter image_topics must name {len(VIEWS)} non-empty topics, one per view "
                f"({', '.join(VIEWS)}); got {list(topics)}"
            )
        if len(set(topics)) != len(topics):
            raise ConfigError(f"parameter image_topics names a topic twice: {list(topics)}")
        try:
            layer = prune_layer(self.placement)
        except ConfigError as exc:
            raise ConfigError(f"parameter {exc}") from exc
        if self.pruner in ATTENTION_PRUNERS and layer == 0:
            raise decoder_placement_needed(self.pruner, "placement layer:K")
        if self.standing_question:  # it would be refused every standing_period_s
            try:
                check_question(self.standing_question, self.max_question_chars)
            except QuestionError as exc:
                raise ConfigError(
                    f"parameter standing_question: {exc} (an empty string turns it off)"
                ) from exc

    def resolved_image_topics(self) -> dict[str, str]:
        """View name -> topic, switching the default topics to raw images when not compressed."""
        topics = self.image_topics
        if not self.use_compressed and topics == default_image_topics(compressed=True):
            topics = default_image_topics(compressed=False)
        return dict(zip(VIEWS, topics, strict=True))

    def with_changes(self, **changes: Any) -> DriveVLMConfig:
        """A copy with ``changes`` applied, checked as on construction."""
        return replace(self, **changes)


def package_dirs(share_dir: str | Path | None = None) -> list[Path]:
    """Where the package's ``config/`` may live, most specific first.

    ``share_dir`` is the installed share directory (the node finds it with ament_index); without
    it: the source checkout, then a pip install's ``<prefix>/share/prune2drive_ros``.
    """
    if share_dir is not None:
        return [Path(share_dir)]
    return [Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / PACKAGE]


def package_file(
    path: str, default: str, share_dir: str | Path | None = None, *, what: str = "file"
) -> Path:
    """Resolve a user-given file path: empty = the package's ``default``.

    An absolute path is used as is; a relative one is looked up in the working directory, then
    in the package (so ``config/retention_rates.yaml`` works from anywhere).

    Raises:
        ConfigError: no candidate exists; every tried path is listed.
    """
    relative = Path(path or default).expanduser()
    if relative.is_absolute():
        candidates = [relative]
    else:
        bases = [Path.cwd()] if path else []
        candidates = [base / relative for base in [*bases, *package_dirs(share_dir)]]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(map(str, candidates))
    raise ConfigError(f"{what} {path or default!r} not found; tried {tried}")


def resolve_rates_file(config: DriveVLMConfig, share_dir: str | Path | None = None) -> Path:
    """The retention-rates file ``config`` names (empty = the package's default)."""
    return package_file(config.rates_file, DEFAULT_RATES_FILE, share_dir, what="rates_file")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """ROS params files may nest names (``a: {b: 1}`` is parameter ``a.b``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _suggestion(unknown: str, known: Iterable[str]) -> str:
    """`` (set X instead)`` or `` (did you mean X?)`` for an unknown parameter name, or ``""``."""
    if unknown in SUPERSEDED:
        return f" (this node does not use it: set {SUPERSEDED[unknown]} instead)"
    close = difflib.get_close_matches(unknown, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def is_ros_parameter(name: str) -> bool:
    """Whether ROS itself owns parameter ``name`` (``use_sim_time``, ``qos_overrides.*``)."""
    return name in FOREIGN_PARAMETERS or name.startswith(FOREIGN_PREFIXES)


def check_parameter_names(names: Iterable[str]) -> None:
    """Refuse names the schema does not know, each with a "did you mean" where one is close.

    ROS ignores a parameter override that no node declares, so a misspelt name in a params file
    or a ``-p`` would leave the node quietly on its default; the node checks its overrides with
    this (leaving out :func:`is_ros_parameter` names), and so does every params-file reader.

    Raises:
        ConfigError: listing every unknown name.
    """
    known = [spec.name for spec in DriveVLMConfig.specs()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        named = ", ".join(f"{name}{_suggestion(name, known)}" for name in unknown)
        raise ConfigError(f"unknown parameter(s) {named}; known: {', '.join(known)}")


def qos_override_names(publishers: Iterable[str], subscriptions: Iterable[str]) -> set[str]:
    """The ``qos_overrides.*`` parameters the node declares for these fully qualified topics."""
    entities = [(topic, "publisher") for topic in publishers]
    entities += [(topic, "subscription") for topic in subscriptions]
    return {
        f"qos_overrides.{topic}.{entity}.{policy}"
        for topic, entity in entities
        for policy in QOS_POLICIES
    }


def check_qos_overrides(names: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse ``qos_overrides.*`` overrides that no topic of the node takes.

    rclpy applies an override only when a publisher or subscription declares it, and ignores
    the rest without a word: a misspelt topic would leave its QoS on the default.

    Raises:
        ConfigError: listing each unknown override with the closest known one.
    """
    known = sorted(allowed)
    unknown = sorted(set(names) - set(known))
    if unknown:
        named = ", ".join(f"{name}{_suggestion(name, known)}" for name in unknown)
        raise ConfigError(
            f"unknown QoS override(s) {named}; this node takes qos_overrides.<topic>."
            f"<publisher|subscription>.<{'|'.join(QOS_POLICIES)}> for its topics: "
            + ", ".join(known)
        )


def _node_sections(document: Mapping[str, Any], node_name: str) -> Iterable[str]:
    """Keys of the sections that apply to ``node_name``: ``/**`` first, the node's own last."""
    own = [
        key
        for key in document
        if isinstance(key, str) and key != "/**" and key.rstrip("/").split("/")[-1] == node_name
    ]
    return (["/**"] if "/**" in document else []) + own


def load_params_yaml(path: str | Path, node_name: str = NODE_NAME) -> DriveVLMConfig:
    """Read a ROS 2 params file (``<node>: ros__parameters: {...}``) into a validated config.

    Sections for ``/**`` and for the node (``prune2drive``, ``/prune2drive`` or
    ``/<ns>/prune2drive``) apply, the node's own winning. Parameters ROS owns (``use_sim_time``,
    ``qos_overrides.*``) are accepted and ignored.

    Raises:
        ConfigError: unreadable file, no section for the node, unknown or invalid parameters.
    """
    path = Path(path)
    document = read_yaml(
        path,
        what="params file",
        remedy="pass a ROS 2 params file such as the package's config/drive_vlm.yaml",
    )
    if not isinstance(document, Mapping):
        raise ConfigError(f"params file {path} must map node names to sections")
    sections = list(_node_sections(document, node_name))
    if not sections:
        raise ConfigError(
            f"params file {path} has no section for node {node_name!r} or '/**' "
            f"(found: {', '.join(map(str, document))})"
        )
    values: dict[str, Any] = {}
    for key in sections:
        section = document[key]
        params = section.get("ros__parameters") if isinstance(section, Mapping) else None
        if not isinstance(params, Mapping):
            raise ConfigError(f"params file {path}: section {key!r} needs a ros__parameters map")
        values.update(_flatten(params))
    own = {name: value for name, value in values.items() if not is_ros_parameter(name)}
    try:
        return DriveVLMConfig.from_mapping(own, ros_types=True)
    except ConfigError as exc:
        raise ConfigError(f"params file {path}: {exc}") from exc


def parse_bool(name: str, text: str) -> bool:
    """A launch argument as a bool.

    Raises:
        ConfigError: anything but true or false (any case), naming the argument.
    """
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ConfigError(f"launch argument {name} must be true or false, got {text!r}")
    return lowered == "true"


def launch_overrides(
    params_file: str | Path, arguments: Mapping[str, str], node_name: str = NODE_NAME
) -> dict[str, Any]:
    """The parameters drive_vlm.launch.py passes over ``params_file``, after checking both.

    ROS ignores a parameter it does not know, so a misspelt name in a params file would go
    unnoticed and the node would quietly run on the default; checking at launch makes it fail
    there, naming the file and the parameter.

    Args:
        params_file: the ROS 2 params file the node gets.
        arguments: launch argument -> its text; those of :data:`LAUNCH_OVERRIDES` that are not
            empty become parameters (others are ignored).

    Raises:
        ConfigError: the params file is invalid (see :func:`load_params_yaml`), or an argument.
    """
    config = load_params_yaml(params_file, node_name)
    overrides: dict[str, Any] = {}
    for name in LAUNCH_OVERRIDES:
        text = arguments.get(name, "")
        if not text:
            continue
        is_bool = name == "use_sim_time" or DriveVLMConfig.spec(name).kind is bool
        overrides[name] = parse_bool(name, text) if is_bool else text
    try:
        config.with_changes(**{k: v for k, v in overrides.items() if not is_ros_parameter(k)})
    except ConfigError as exc:
        raise ConfigError(f"launch arguments: {exc}") from exc
    return overrides
