#!/usr/bin/env bash
# Install smoke test: what a user of the package gets from `pip install .` alone.
#
#   1. a FRESH venv; `pip install -c constraints.txt '<copy of the repo>[ros-wheels]'`
#      (plain install, no -e, no requirements.txt: setup.py's dependencies only, next to
#      the ROS 2 PyPI wheels); every xsquare_logger module must import from it, except
#      the floor service's and export's, which may miss only what their extra provides;
#      then `xsq floor serve` / `xsq export lerobot` must say so in one line (exit 2);
#      then with '.[floor,export]' every module imports (ray is imported lazily)
#   2. the Docker image's pins (docker/image_constraints.py: Ubuntu 24.04's numpy/PyYAML)
#      must resolve for Python 3.12 on x86_64 and aarch64 (pip --dry-run; no Docker here)
#   3. msg/ built into the venv (scripts/build_msgs.sh; its build tools are the
#      requirements.txt section of that name, installed only now so they cannot hide a
#      missing runtime dependency from step 1)
#   4. from that venv: `xsq run --help`; `xsq record` for 2 s then SIGINT (exit 0, session
#      printed) and `xsq info` of it; the same with --config config/robot.yaml (JPEG
#      cameras: needs opencv)
#
# Usage: scripts/smoke_install.sh            (KEEP=1 keeps the work dir; IMAGE_PINS=0 skips 2)
# Needs python3.11+, the dev venv's pip (make setup) and PyPI (pip's cache is reused). ROS processes stay on the loopback
# and on ROS_DOMAIN_ID (default 66).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
WORK="$(mktemp -d /tmp/xsq-smoke.XXXXXX)"
SRC="$WORK/src"
VENV="$WORK/venv"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-66}"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset AMENT_PREFIX_PATH PYTHONPATH CMAKE_PREFIX_PATH
start=$SECONDS
pid=""

cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [[ "${KEEP:-0}" == 1 ]]; then echo "smoke: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

say() { echo "smoke [$((SECONDS - start)) s]: $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
# This machine's pip config names local index folders that lack most projects: hide
# only pip's per-package warning about them.
# pip itself is the dev venv's (make setup; a new venv's bundled pip would first need an
# upgrade, a minute here), driving the fresh venv with --python.
RUNNER="${SMOKE_PIP_PYTHON:-$ROOT/.venv/bin/python}"
"$RUNNER" -m pip --version >/dev/null 2>&1 || { echo "smoke: no pip in $RUNNER (make setup)" >&2; exit 1; }
pipq() {
  "$RUNNER" -m pip --python "$VENV/bin/python" "$@" --progress-bar off 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

# A copy of the tree as git sees it (tracked and new files, not ignored ones): a build in
# the repository's own build/ could pick up stale files.
mkdir -p "$SRC"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$SRC"

say "fresh venv $VENV ($("$PYTHON" --version))"
"$PYTHON" -m venv --without-pip "$VENV"
say "pip install -c constraints.txt '.[ros-wheels]'"
pipq install -q -c "$SRC/constraints.txt" "$SRC[ros-wheels]"
PY="$VENV/bin/python"
XSQ="$VENV/bin/xsq"

# import_all [extras]: import every module of the installed package. With "extras", a module
# of xsquare_logger.floor / .export may miss only what its extra provides.
import_all() {
  (cd "$WORK" && EXTRA_OK="${1:-}" "$PY" - <<'EOF'
import importlib
import os
import pkgutil
import sys

import xsquare_logger

# Import names of the extras (setup.py) and what they pull in, by the package that needs
# them: only those modules may miss only those names on a plain install.
EXTRAS = {
    "xsquare_logger.floor.": {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic",
                              "psycopg", "mako"},  # [floor]
    "xsquare_logger.export.": {"pyarrow", "av", "ray"},  # [export], [ray]
}
extra_ok = os.environ.get("EXTRA_OK") == "extras"
assert xsquare_logger.__file__.startswith(sys.prefix), xsquare_logger.__file__
bad, optional = [], []
for mod in pkgutil.walk_packages(xsquare_logger.__path__, "xsquare_logger."):
    try:
        importlib.import_module(mod.name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top == "xsquare_logger_msgs":
            continue  # built from msg/ in step 3, not a pip dependency
        if extra_ok and any(mod.name.startswith(p) and top in names
                            for p, names in EXTRAS.items()):
            optional.append(mod.name)
            continue
        bad.append(f"{mod.name}: {exc}")
note = f" ({len(optional)} floor/export modules need their extra)" if optional else ""
print(f"imported {xsquare_logger.__name__} from {xsquare_logger.__file__}{note}")
sys.exit("\n".join(bad) if bad else 0)
EOF
  )
}

say "import every module of the installed package (floor service and export: their extras)"
import_all extras || fail "a module does not import from a plain install"
say "xsq floor serve without the [floor] extra: one line, exit 2"
rc=0
"$XSQ" floor serve --data-dir "$WORK/floor" --listen 127.0.0.1:0 \
  >"$WORK/floor.out" 2>"$WORK/floor.err" </dev/null || rc=$?
[[ $rc -eq 2 ]] || { cat "$WORK/floor.err" >&2; fail "xsq floor serve without [floor] exited $rc, not 2"; }
if [[ $(wc -l <"$WORK/floor.err") -ne 1 ]] || ! grep -qF "xsquare_logger[floor]" "$WORK/floor.err"; then
  cat "$WORK/floor.err" >&2; fail "xsq floor serve without [floor]: not one line naming the extra"
fi
say "   $(cat "$WORK/floor.err")"
say "xsq export lerobot without the [export] extra: one line, exit 2"
rc=0
"$XSQ" export lerobot "$WORK/dataset" "$WORK/none" >"$WORK/export.out" 2>"$WORK/export.err" \
  </dev/null || rc=$?
[[ $rc -eq 2 ]] || { cat "$WORK/export.err" >&2; fail "xsq export without [export] exited $rc, not 2"; }
if [[ $(wc -l <"$WORK/export.err") -ne 1 ]] || ! grep -qF "xsquare_logger[export]" "$WORK/export.err"; then
  cat "$WORK/export.err" >&2; fail "xsq export without [export]: not one line naming the extra"
fi
say "   $(cat "$WORK/export.err")"
say "pip install -c constraints.txt '.[ros-wheels,floor,export]'"
pipq install -q -c "$SRC/constraints.txt" "$SRC[ros-wheels,floor,export]"
say "import every module, the floor service's and export's included"
import_all || fail "a module does not import with the [floor] and [export] extras"
"$RUNNER" -m pip --python "$VENV/bin/python" check || fail "pip check"

if [[ "${IMAGE_PINS:-1}" == 1 ]]; then
  # Ubuntu 24.04 (noble): python3-numpy 1.26.4, python3-yaml 6.0.1, Python 3.12.
  say "Docker image pins resolve (python 3.12, Ubuntu 24.04 numpy/PyYAML)"
  "$PY" "$SRC/docker/image_constraints.py" "$SRC/constraints.txt" \
    --system numpy=1.26.4 --system PyYAML=6.0.1 > "$WORK/image-constraints.txt"
  "$RUNNER" -m pip wheel -q --no-deps "$SRC" -w "$WORK/wheel" >/dev/null 2>&1 \
    || fail "pip wheel of the project"
  wheel=$(ls "$WORK"/wheel/xsquare_logger-*.whl)
  # Both architectures at once (network-bound).
  for arch in x86_64 aarch64; do
    "$RUNNER" -m pip install -q --dry-run --ignore-installed --report "$WORK/image-$arch.json" \
      --python-version 3.12 --implementation cp --only-binary=:all: \
      --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" \
      --platform "manylinux2014_$arch" --platform "linux_$arch" --progress-bar off \
      --target "$WORK/image-target-$arch" -c "$WORK/image-constraints.txt" "$wheel" \
      > "$WORK/image-$arch.log" 2>&1 &
  done
  for job in $(jobs -p); do wait "$job" || { grep -v "is ignored" "$WORK"/image-*.log >&2; \
    fail "the image's dependencies do not resolve"; }; done
  for arch in x86_64 aarch64; do
    "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); \
v = {i['metadata']['name']: i['metadata']['version'] for i in r['install']}; \
print('   $arch:', len(v), 'distributions, numpy', v.get('numpy'), \
'opencv', v.get('opencv-python-headless'))" "$WORK/image-$arch.json"
  done
fi

say "build msg/ into the venv (build tools from requirements.txt)"
mapfile -t tools < <(awk '/^# --- build of the xsquare_logger_msgs/{f=1; next} /^# ---/{f=0} \
  f && NF && !/^#/' "$SRC/requirements.txt")
[[ ${#tools[@]} -gt 0 ]] || fail "no build tools found in requirements.txt"
pipq install -q -c "$SRC/constraints.txt" "${tools[@]}"
"$SRC/scripts/build_msgs.sh" "$VENV" >/dev/null

cd "$WORK"   # not the source tree: the installed package is what runs
say "xsq run --help"
"$XSQ" run --help >/dev/null || fail "xsq run --help"

# record_for NAME ARGS...: xsq record into $WORK/NAME for 2 s after its session exists,
# SIGINT, expect exit 0 and the session path on stdout; then xsq info of it.
record_for() {
  local name=$1; shift
  local root="$WORK/$name" out="$WORK/$name.out" err="$WORK/$name.err"
  mkdir -p "$root"
  "$XSQ" record "$@" --data-root "$root" >"$out" 2>"$err" &
  pid=$!
  local waited=0
  until compgen -G "$root/*/metadata.yaml" >/dev/null || compgen -G "$root/*/*.mcap*" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then cat "$err" >&2; fail "xsq record $* exited early"; fi
    (( waited++ < 300 )) || { cat "$err" >&2; fail "xsq record $*: no session after 30 s"; }
    sleep 0.1
  done
  sleep 2
  kill -INT "$pid"
  local rc=0
  wait "$pid" || rc=$?
  pid=""
  if [[ $rc -ne 0 ]]; then cat "$err" >&2; fail "xsq record $* exited $rc"; fi
  local session
  session=$(grep -o "$root/[^[:space:]]*" "$out" | head -n 1 || true)
  [[ -n "$session" && -d "$session" ]] || { cat "$out" "$err" >&2; fail "no session dir printed"; }
  say "   session $session"
  "$XSQ" info "$session" >"$WORK/$name.info" || { cat "$WORK/$name.info" >&2; fail "xsq info"; }
}

say "xsq record (defaults) + xsq info"
record_for default
say "xsq record --config config/robot.yaml (JPEG cameras) + xsq info"
record_for robot --config "$SRC/config/robot.yaml"

say "passed in $((SECONDS - start)) s"
