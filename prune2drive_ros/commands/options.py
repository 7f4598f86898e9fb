"""The flags the commands share, and turning them into the library's typed arguments.

Model, pruning and cameras (``replay``, ``viz``, ``tune``, ``eval``) fill the one config schema;
validation data and reward (``tune``, ``eval``) become a :class:`~..tuning.sources.ValidationSet`
and a reward with its tokenizer. The library takes those, never an ``argparse.Namespace``.
The tuning names are imported where they are used: they pull in torch, which ``replay --help``
and ``viz --help`` need not load for them.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..cache import features_dir
from ..config import DriveVLMConfig, check_question, load_params_yaml
from ..errors import BagError, ConfigError, QuestionError
from ..files import check_output_file
from ..sensors.bag import DEFAULT_MAX_GAP_MS
from ..views import VIEWS
from .argtypes import at_least, positive_float, topic_remap
from .progress import add_progress_argument

if TYPE_CHECKING:
    from ..tuning.ptb import Tokenizer
    from ..tuning.scoring import ScoringRules
    from ..tuning.sources import ValidationSet

#: Flags that set one parameter of the config each: flag -> parameter name. Their type,
#: choices, default and help come from the parameter's spec (:mod:`prune2drive_ros.config`),
#: so the command line says what the node's parameters say.
CONFIG_FLAGS: dict[str, str] = {
    "model": "model",
    "family": "family",
    "rates": "rates_file",
    "pruner": "pruner",
    "prompt": "prompt",
    "placement": "placement",
    "max-tiles": "max_tiles",
    "image-resize": "image_resize",
    "device": "device",
    "dtype": "dtype",
    "quantization": "quantization",
    "max-new-tokens": "max_new_tokens",
    "ttft-budget-ms": "ttft_budget_ms",
    "sync-slop": "sync_slop_s",
    "sync-queue": "sync_queue_size",
}

#: What a bag argument takes (sensors/bag.py tells the formats apart by content).
BAG_HELP = (
    "the six cameras' recording: a rosbag2 folder or .mcap/.db3 file, a Foxglove protobuf "
    ".mcap (nuscenes2mcap) or a ROS 1 .bag (nuscenes2bag)"
)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, pruning and camera options every answering command shares.

    They fill the one config schema (:class:`~prune2drive_ros.config.DriveVLMConfig`): its
    defaults, or the node's params file given with ``--params``, then each flag given.
    """
    group = parser.add_argument_group(
        "model, pruning and cameras (defaults: --params FILE, else config/drive_vlm.yaml's)"
    )
    group.add_argument(
        "--params", help="the node's ROS 2 params file (drive_vlm.yaml): start from its settings"
    )
    for flag, name in CONFIG_FLAGS.items():
        add_config_flag(group, flag, name)
    group.add_argument(
        "--raw",
        action="store_true",
        default=None,
        help="read sensor_msgs/Image topics instead of CompressedImage",
    )
    group.add_argument(
        "--topic",
        type=topic_remap,
        action="append",
        metavar="VIEW:=TOPIC",
        help="the topic of one camera view, e.g. CAM_FRONT:=/cam_front/image/compressed "
        "(repeat for each view that differs from /<VIEW>/image_rect_compressed)",
    )


def add_config_flag(group: argparse._ActionsContainer, flag: str, name: str) -> None:
    """``--flag`` setting parameter ``name``, described by its spec: the parameter's help
    text, choices and default, an int or float type where the parameter is one. Its value is
    checked by the schema (:meth:`DriveVLMConfig.with_changes`), as a params file's is."""
    spec = DriveVLMConfig.spec(name)
    shown = f"'{spec.default}'" if spec.default == "" else spec.default
    text = "; ".join([spec.description, *spec.limits()]) + f" (parameter {name}, default {shown})"
    kind = spec.kind if spec.kind in (int, float) else str
    group.add_argument(
        f"--{flag}",
        dest=name,
        type=kind,
        choices=spec.choices,
        metavar=None if spec.choices else flag.upper().replace("-", "_"),
        help=text.replace("%", "%%"),
    )


def engine_config(args: argparse.Namespace) -> DriveVLMConfig:
    """The one config schema, filled from ``--params`` and the flags given (validated).

    Raises:
        ConfigError: a bad params file or flag value, naming the parameter.
    """
    config = load_params_yaml(args.params) if args.params else DriveVLMConfig()
    changes = {
        name: getattr(args, name)
        for name in CONFIG_FLAGS.values()
        if getattr(args, name) is not None
    }
    if args.raw:
        changes["use_compressed"] = False
    config = config.with_changes(**changes)
    if args.topic:
        topics = config.resolved_image_topics() | dict(args.topic)
        config = config.with_changes(image_topics=tuple(topics[view] for view in VIEWS))
    return config


#: Flags that name a file a command reads: no output may be one of them.
_INPUT_FLAGS = ("bag", "questions", "drivelm", "params", "rates_file", "score_predictions")


def input_files(args: argparse.Namespace) -> list[str]:
    """The files the command line's flags name for reading (those of :data:`_INPUT_FLAGS` it
    has and gives)."""
    return [getattr(args, flag) for flag in _INPUT_FLAGS if getattr(args, flag, None)]


def check_output(args: argparse.Namespace, path: str | Path) -> Path:
    """``path`` checked as an output of this command line by the one output check,
    :func:`~..files.check_output_file`: none of its input files, replaced only with ``--force``.

    Raises:
        ConfigError: as :func:`~..files.check_output_file`.
    """
    return check_output_file(path, force=args.force, inputs=input_files(args))


def check_questions(questions: Iterable[tuple[str, str]], config: DriveVLMConfig) -> None:
    """Check each ``(where, question)`` as the engine will before answering it, so that a
    question it would refuse (too long for ``config``'s ``max_question_chars``) costs a second
    before the model loads, not a model load.

    Raises:
        QuestionError: naming where the question is, its length and its beginning (the
            question itself may be megabytes: it is never shown whole).
    """
    for where, question in questions:
        try:
            check_question(question, config.max_question_chars)
        except QuestionError as exc:
            raise QuestionError(f"{where}: {exc}") from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The validation-data options that ``tune`` and ``eval`` share (read by
    :func:`open_validation_set`)."""
    from ..tuning.sources import DEFAULT_SAMPLES

    group = parser.add_argument_group(
        "validation data", "either --bag with --questions, or --drivelm with --nuscenes-root"
    )
    group.add_argument("--bag", help=BAG_HELP)
    group.add_argument(
        "--questions", help="JSON Lines questions with stamps (reference answers optional)"
    )
    group.add_argument("--drivelm", help="DriveLM-nuScenes JSON file (e.g. v1_1_train_nus.json)")
    group.add_argument("--nuscenes-root", help="nuScenes folder holding samples/ (with --drivelm)")
    group.add_argument(
        "--samples",
        type=at_least(1),
        default=DEFAULT_SAMPLES,
        help="validation questions to draw (default %(default)s, the reference's; fewer when the "
        "source has fewer)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the draw and of the sampler")
    group.add_argument(
        "--max-gap-ms",
        type=positive_float,
        default=DEFAULT_MAX_GAP_MS,
        help="largest distance from a question's stamp to its frame set (default %(default)s)",
    )


def open_validation_set(args: argparse.Namespace, config: DriveVLMConfig) -> ValidationSet:
    """The validation set the command line names (a bag is read with ``config``'s cameras).

    Raises:
        ConfigError: neither or both sources given, or a source half given.
    """
    from ..tuning.sources import bag_validation_set, drivelm_validation_set

    bag_given = bool(args.bag or args.questions)
    drivelm_given = bool(args.drivelm or args.nuscenes_root)
    if bag_given == drivelm_given:
        raise ConfigError(
            "give the validation data either as --bag BAG --questions Q.jsonl or as "
            "--drivelm FILE.json --nuscenes-root DIR"
        )
    if bag_given:
        if not (args.bag and args.questions):
            raise ConfigError("--bag and --questions go together; give both")
        return bag_validation_set(
            args.bag,
            args.questions,
            samples=args.samples,
            seed=args.seed,
            config=config,
            max_gap_ms=args.max_gap_ms,
        )
    if not (args.drivelm and args.nuscenes_root):
        raise ConfigError("--drivelm and --nuscenes-root go together; give both")
    return drivelm_validation_set(
        args.drivelm, args.nuscenes_root, samples=args.samples, seed=args.seed
    )


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The reward and cache options that ``tune`` and ``eval`` share (read by
    :func:`choose_scoring`; ``--cache-dir``, ``--seed`` and ``--no-progress`` go to
    :func:`~..tuning.objective.prepare_evaluation`)."""
    from ..tuning.objective import REWARDS
    from ..tuning.ptb import TOKENIZERS
    from ..tuning.scoring import ACCURACY_MODES, EXACT

    parser.add_argument(
        "--reward",
        choices=REWARDS,
        default=None,
        help="drivelm (local DriveLM score against reference answers), exact (share of answers "
        "equal to the reference: short canonical answers, e.g. the synthetic scenes') or "
        "fidelity (agreement with the unpruned model); default drivelm when every question has "
        "a reference answer",
    )
    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default="auto",
        help="tokens of the drivelm reward's language metrics: ptb (Stanford PTBTokenizer, as the "
        "DriveLM challenge; needs java), regex (its emulation) or auto (ptb when java runs; "
        "default)",
    )
    parser.add_argument(
        "--accuracy",
        choices=ACCURACY_MODES,
        default=EXACT,
        help="accuracy of the drivelm reward: exact (answer == reference, as the DriveLM "
        "challenge; default) or extract (the option or yes/no read out of free text: 'B.', "
        "'(A)', 'Answer: B', a 'Final Answer:' line; not the challenge's number)",
    )
    parser.add_argument(
        "--no-challenge-filter",
        action="store_true",
        help="score every question; by default, as the DriveLM challenge, a later question of a "
        "key frame counts only when the frame's first answer found the objects it names",
    )
    parser.add_argument(
        "--untagged-by-answer",
        action="store_true",
        help="score a question with an empty DriveLM tag list by its reference answer (a letter "
        "or yes/no: accuracy, else language, and match with object tags); by default, as the "
        "challenge's evaluation.py, it is not scored (where no question has tags, all are "
        "scored by their answers either way)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"visual-token cache folder (default {features_dir()}: $XDG_CACHE_HOME, else "
        "~/.cache)",
    )
    add_progress_argument(parser)


def choose_scoring(
    args: argparse.Namespace, data: ValidationSet
) -> tuple[tuple[str, str], Tokenizer | None, ScoringRules]:
    """The reward (name and why, printed for the user), its tokenizer and the DriveLM scoring
    rules (printed with the drivelm reward), from ``--reward``, ``--tokenizer``, ``--accuracy``,
    ``--no-challenge-filter`` and ``--untagged-by-answer``: what tune and eval settle before
    the model loads.

    Raises:
        ConfigError: as :func:`~..tuning.objective.choose_reward` and
            :func:`~..tuning.objective.reward_tokenizer`.
    """
    from ..tuning.objective import choose_reward, reward_tokenizer
    from ..tuning.scoring import BY_ANSWER, NOT_SCORED, ScoringRules

    reward = choose_reward(args.reward, data)
    print(f"reward: {reward[0]} ({reward[1]})")
    rules = ScoringRules(
        args.accuracy,
        challenge_filter=not args.no_challenge_filter,
        untagged=BY_ANSWER if args.untagged_by_answer else NOT_SCORED,
    )
    if reward[0] == "drivelm":
        print(f"scoring: {rules.describe()}")
    return reward, reward_tokenizer(reward[0], args.tokenizer), rules


def remove_bag(path: Path) -> None:
    """Remove a bag folder, but never something that does not look like one (a typo in OUT
    must not delete a home directory)."""
    is_bag = path.is_dir() and ((path / "metadata.yaml").exists() or not any(path.iterdir()))
    if not is_bag:
        raise BagError(
            f"{path} exists and is not a rosbag2 folder (no metadata.yaml); not removing it "
            "even with --force, choose another OUT"
        )
    shutil.rmtree(path)
