"""prune2drive_ros: one setup.py for colcon (ament_python) and for plain pip without ROS."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "prune2drive_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description=(
        "Driving QA over six surround cameras with a VLM, made fast by Prune2Drive token pruning"
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # A range, not a pin: users bring the torch build that matches their CUDA. CPU-only
    # machines get the pinned CPU build through constraints-cpu.txt (see Makefile).
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "tokenizers>=0.20",
        "huggingface_hub",  # a hub id's cached snapshot names a study's model (tuning/features)
        "safetensors",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pillow>=10",
        "rosbags>=0.10",
        # Bounded above: tuning/study.HeartbeatRDBStorage overrides RDBStorage's private
        # _get_prepared_new_trial (4.0 to 5.x; test_tuning_study checks it is still called).
        "optuna>=4.0,<6",
        "cmaes>=0.10",  # optuna's CMA-ES sampler (prune2drive tune --sampler cmaes)
        "pycocoevalcap>=1.2",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # prune2drive convert: reading a SentencePiece tokenizer.model (InternLM2, Llama-2)
        # needs protobuf; the tests train and read one with sentencepiece.
        "convert": ["protobuf>=3.20", "sentencepiece>=0.2"],
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "protobuf>=3.20",
            "sentencepiece>=0.2",
        ],
        "postgres": ["psycopg2-binary>=2.9"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "prune2drive = prune2drive_ros.commands.cli:main",
            "drive_vlm_node = prune2drive_ros.node:main",
        ],
    },
)
