#!/usr/bin/env bash
# Installs everything `make run` and `make test` need, pinned, and skips what is present:
#   - fakecloud (the local AWS emulator) into a tools folder outside the clone, built once;
#   - a Debian sid root file system with MySQL 9.7 LTS (server, client, Router) beside it,
#     the real MySQL every local-cloud database and web host runs (local-cloud/hosts/ha-host);
#   - the SAM CLI, cfn-lint, cargo-lambda and shellcheck into the project's .venv;
#   - cargo-nextest, the test runner, when the machine's is not the pinned version;
#   - PHP with mysqli (Debian's php-cli, php-mysql), for the web health check's real test.
# Safe to run again and concurrently (locks guard the fakecloud build and the rootfs).
set -euo pipefail

readonly FAKECLOUD_VERSION=0.51.0
# The test runner `make test` runs every suite with (.config/nextest.toml).
readonly NEXTEST_VERSION=0.9.143
# The MySQL series the product deploys (Oracle's 9.7 LTS on Amazon Linux 2023) and the local
# hosts run: Debian sid carries it (mysql-server-core, mysql-client-core, mysql-router); the
# binaries need sid's glibc, hence a root file system of its own run with chroot.
readonly MYSQL_SERIES=9.7
readonly MYSQL_PACKAGES="mysql-server-core mysql-client-core mysql-router"
readonly DEBIAN_MIRROR="${HA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
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

# An optimised build: every end-to-end test starts a fakecloud of its own and deploys the
# stack into it, and an unoptimised one spent most of the suite's CPU time (hashing the
# uploaded function code, decoding the machine's CA bundle for each Lambda invocation's HTTP
# client): about 27 s of one core per deploy, where the suites now run side by side on two
# cores. It builds once (~40 min on 2 cores) into its own folder; an unoptimised build of
# the same version left by an older setup is not used.
install_fakecloud() {
  local dir="$TOOLS_DIR/fakecloud-$FAKECLOUD_VERSION-release"
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
  local build_log="$TOOLS_DIR/fakecloud-$FAKECLOUD_VERSION-release.build.log"
  log "building fakecloud $FAKECLOUD_VERSION once into $dir (optimised build, ~40 min on 2 cores; log: $build_log)"
  rm -rf "$dir.partial"
  # Built outside the clone so the project's .cargo/config.toml does not apply.
  if ! (cd "$TOOLS_DIR" && cargo install fakecloud --version "$FAKECLOUD_VERSION" --locked \
      --root "$dir.partial" >"$build_log" 2>&1); then
    tail -n 30 "$build_log" >&2
    fail "fakecloud build failed (full log: $build_log)"
  fi
  mkdir -p "$dir"
  mv "$dir.partial/bin/fakecloud" "$bin"
  rm -rf "$dir.partial"
  flock -u 9
  log "fakecloud $FAKECLOUD_VERSION installed"
}

# cargo-nextest: the machine's when it is the pinned version, else built once into the tools
# folder's bin (which the Makefile puts first on the PATH).
install_nextest() {
  local bin_dir="$TOOLS_DIR/bin"
  if PATH="$bin_dir:$PATH" cargo nextest --version 2>/dev/null | grep -q "^cargo-nextest $NEXTEST_VERSION "; then
    log "cargo-nextest $NEXTEST_VERSION present ($(PATH="$bin_dir:$PATH" command -v cargo-nextest))"
    return
  fi
  mkdir -p "$TOOLS_DIR"
  exec 7>"$TOOLS_DIR/.nextest.lock"
  flock 7
  if "$bin_dir/cargo-nextest" nextest --version 2>/dev/null | grep -q "^cargo-nextest $NEXTEST_VERSION "; then
    flock -u 7 # another setup built it while we waited
    return
  fi
  local build_log="$TOOLS_DIR/nextest-$NEXTEST_VERSION.build.log"
  log "building cargo-nextest $NEXTEST_VERSION once into $bin_dir (~5 min on 2 cores; log: $build_log)"
  if ! (cd "$TOOLS_DIR" && cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked \
      --root "$TOOLS_DIR" >"$build_log" 2>&1); then
    tail -n 30 "$build_log" >&2
    fail "cargo-nextest build failed (full log: $build_log)"
  fi
  flock -u 7
  log "cargo-nextest $NEXTEST_VERSION installed"
}

# The rootfs is built under a temporary name and renamed when complete, so a present
# directory is a complete one; its stamp records what is in it.
install_mysql_rootfs() {
  local dir="$TOOLS_DIR/mysql-$MYSQL_SERIES-rootfs"
  local stamp="$dir/.ha-rootfs"
  if [[ -x "$dir/usr/sbin/mysqld" && -f "$stamp" ]]; then
    log "MySQL $(cat "$stamp") rootfs present ($dir)"
    return
  fi
  [[ "$(id -u)" == 0 ]] || fail "building the MySQL rootfs needs root (debootstrap, chroot); run as root or provide $dir"
  mkdir -p "$TOOLS_DIR"
  exec 8>"$TOOLS_DIR/.mysql-rootfs.lock"
  flock 8
  if [[ -x "$dir/usr/sbin/mysqld" && -f "$stamp" ]]; then
    flock -u 8
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null \
      || fail "could not install debootstrap: apt-get install debootstrap"
  fi
  local partial="$dir.partial" build_log="$TOOLS_DIR/mysql-$MYSQL_SERIES-rootfs.build.log"
  log "building the MySQL $MYSQL_SERIES rootfs once into $dir (Debian sid, ~1 min; log: $build_log)"
  rm -rf "$partial"
  if ! debootstrap --variant=minbase sid "$partial" "$DEBIAN_MIRROR" >"$build_log" 2>&1; then
    tail -n 20 "$build_log" >&2
    fail "debootstrap of Debian sid failed (full log: $build_log)"
  fi
  # shellcheck disable=SC2086 # the package list is words
  if ! chroot "$partial" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends $MYSQL_PACKAGES >>"$build_log" 2>&1; then
    tail -n 20 "$build_log" >&2
    fail "installing $MYSQL_PACKAGES into the rootfs failed (full log: $build_log)"
  fi
  local version
  version="$(chroot "$partial" mysqld --version | awk '{print $3}')"
  if [[ "$version" != "$MYSQL_SERIES".* ]]; then
    fail "Debian sid now carries MySQL $version, not the $MYSQL_SERIES LTS series the product deploys; pin a Debian snapshot (HA_DEBIAN_MIRROR=http://snapshot.debian.org/archive/debian/<date>/) or move the product to $version"
  fi
  chroot "$partial" apt-get clean
  printf '%s\n' "$version" >"$partial/.ha-rootfs"
  mv "$partial" "$dir"
  flock -u 8
  log "MySQL $version rootfs installed"
}

# PHP with mysqli on this machine: tests/tests/web_health.rs runs the web user data's health
# check endpoint for real (Debian's php-cli 8.2; Amazon Linux 2023 ships 8.2 to 8.4).
install_php() {
  if command -v php >/dev/null && php -r "exit(function_exists('mysqli_init') ? 0 : 1);"; then
    log "PHP with mysqli present ($(command -v php))"
    return
  fi
  [[ "$(id -u)" == 0 ]] || fail "installing PHP needs root: apt-get install php-cli php-mysql"
  log "installing php-cli and php-mysql (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends php-cli php-mysql >/dev/null \
    || fail "could not install PHP: apt-get install php-cli php-mysql"
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
install_nextest
install_mysql_rootfs
install_php
log "ready"
