#!/usr/bin/env bash
# Installs everything `make run` and `make test` need, pinned, and skips what is present:
#   - fakecloud (the local AWS emulator) into a tools folder outside the clone, built once;
#   - the SAM CLI, cfn-lint, cargo-lambda and shellcheck into the project's .venv.
# Safe to run again and concurrently (a lock guards the fakecloud build).
set -euo pipefail

readonly FAKECLOUD_VERSION=0.51.0
readonly TOOLS_DIR="${HA_TOOLS_DIR:-$HOME/.cache/ha-orchestrator/tools}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly root

log() { printf '[setup] %s\n' "$*" >&2; }
fail() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

check_toolchain() {
  command -v cargo >/dev/null || fail "cargo not found: install Rust with rustup (https://rustup.rs)"
  cargo fmt --version >/dev/null 2>&1 || fail "rustfmt missing: rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || fail "clippy missing: rustup component add clippy"
  command -v python3 >/dev/null || fail "python3 not found: the SAM CLI needs Python 3.9 or newer"
  command -v setpriv >/dev/null || fail "setpriv not found: install util-linux"
}

install_fakecloud() {
  local dir="$TOOLS_DIR/fakecloud-$FAKECLOUD_VERSION"
  local bin="$dir/fakecloud"
  if [[ -x "$bin" ]] && [[ "$("$bin" --version 2>/dev/null)" == "fakecloud $FAKECLOUD_VERSION" ]]; then
    log "fakecloud $FAKECLOUD_VERSION present ($bin)"
    return
  fi
  mkdir -p "$TOOLS_DIR"
  exec 9>"$TOOLS_DIR/.fakecloud.lock"
  flock 9
  if [[ -x "$bin" ]]; then # another setup finished the build while we waited
    flock -u 9
    return
  fi
  local build_log="$TOOLS_DIR/fakecloud-$FAKECLOUD_VERSION.build.log"
  log "building fakecloud $FAKECLOUD_VERSION once into $dir (unoptimised build, ~15 min on 2 cores; log: $build_log)"
  rm -rf "$dir.partial"
  # Built outside the clone so the project's .cargo/config.toml does not apply, and with
  # no debug info: the unoptimised binary is fast enough and 0.5 GB instead of 1.8 GB.
  if ! (cd "$TOOLS_DIR" && CARGO_PROFILE_DEV_DEBUG=0 cargo install fakecloud \
      --version "$FAKECLOUD_VERSION" --locked --debug --root "$dir.partial" >"$build_log" 2>&1); then
    tail -n 30 "$build_log" >&2
    fail "fakecloud build failed (full log: $build_log)"
  fi
  mkdir -p "$dir"
  mv "$dir.partial/bin/fakecloud" "$bin"
  rm -rf "$dir.partial"
  flock -u 9
  log "fakecloud $FAKECLOUD_VERSION installed"
}

install_python_tools() {
  local venv="$root/.venv"
  local requirements="$root/requirements-tools.txt"
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [[ -x "$venv/bin/sam" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "SAM CLI, cfn-lint, cargo-lambda, shellcheck, schemathesis present ($venv)"
    return
  fi
  log "installing pinned Python tools into $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  printf '%s' "$want" >"$stamp"
}

check_toolchain
install_python_tools
install_fakecloud
log "ready"
