#!/usr/bin/env bash
# Build the xsquare_logger_msgs interface package (msg/) and install it into the
# project venv, so `from xsquare_logger_msgs.msg import ...` works with the
# pip-installed rclpy and no environment variables.
#
# Usage: scripts/build_msgs.sh [VENV]      (default: <repo>/.venv)
#   FORCE=1 scripts/build_msgs.sh           rebuild even if up to date
#
# Idempotent: a stamp file in the venv holds a hash of msg/; when it matches and
# the installed files are present, nothing is done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
SRC="$ROOT/msg"
BUILD="$ROOT/build/msgs"
PKG=xsquare_logger_msgs
STAMP="$VENV/share/$PKG/.build-stamp"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
  echo "build_msgs: no python in venv $VENV (run 'make setup')" >&2
  exit 1
fi

# Hash of every file under msg/ (names and contents), plus the python version.
src_hash() {
  (
    cd "$SRC"
    find . -type f -not -path './build/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    "$PY" -c 'import sys; print(sys.version)'
  ) | sha256sum | cut -d' ' -f1
}
HASH="$(src_hash)"

installed() {
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$HASH" ]] \
    && compgen -G "$VENV/share/$PKG/msg/*.json" >/dev/null \
    && "$PY" -c "from $PKG.msg import TaskEvent, SessionStatus, TopicStats" 2>/dev/null
}

if [[ "${FORCE:-0}" != 1 ]] && installed; then
  echo "build_msgs: $PKG is up to date in $VENV"
  exit 0
fi

# cmake and ninja come from the venv (pip packages 'cmake' and 'ninja').
export PATH="$VENV/bin:$PATH"
# A ROS distro sourced in this shell would be picked up instead of the venv.
unset AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH

echo "build_msgs: building $PKG from $SRC into $VENV"
start=$SECONDS
rm -rf "$BUILD"
mkdir -p "$BUILD"
LOG="$BUILD/configure.log"
cmake -S "$SRC" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DBUILD_TESTING=OFF \
  > "$LOG" 2>&1 || {
    cat "$LOG" >&2
    echo "build_msgs: cmake configure failed" >&2
    exit 1
  }
cmake --build "$BUILD" --parallel "$(nproc 2>/dev/null || echo 2)" > "$BUILD/build.log" 2>&1 || {
  tail -n 60 "$BUILD/build.log" >&2
  echo "build_msgs: build failed (full log: $BUILD/build.log)" >&2
  exit 1
}
cmake --install "$BUILD" > "$BUILD/install.log"

"$PY" -c "from $PKG.msg import TaskEvent, SessionStatus, TopicStats" || {
  echo "build_msgs: installed, but the python import fails" >&2
  exit 1
}
echo "$HASH" > "$STAMP"
echo "build_msgs: done in $((SECONDS - start)) s"
