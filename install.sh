#!/usr/bin/env bash
# Installs, updates or removes bal, the TCP load balancer.
#
#   curl -fsSL https://raw.githubusercontent.com/bal-lb/bal/main/install.sh | bash
#   curl -fsSL .../install.sh | bash -s -- --uninstall    # keeps ~/.bal/config.yaml
#   curl -fsSL .../install.sh | bash -s -- --purge        # removes ~/.bal as well
#
# Run with --help for the options and the environment variables it reads.
set -euo pipefail

BAL_REPO="${BAL_REPO:-bal-lb/bal}"
BAL_VERSION="${BAL_VERSION:-latest}"
BAL_HOME="${BAL_HOME:-${HOME:?HOME is not set}/.bal}"
DEFAULT_INSTALL_DIR=/usr/local/bin

say() { printf 'bal-install: %s\n' "$*"; }
die() {
  printf 'bal-install: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
Install, update or remove bal.

Usage: install.sh [--uninstall | --purge | --help]

  (no option)    install bal, or update it when a newer version is released
  --uninstall    remove the binary; keep the config in \$BAL_HOME ($BAL_HOME)
  --purge        remove the binary and \$BAL_HOME with the config and logs
  --help         show this help

Environment:
  BAL_VERSION        version to install, e.g. 0.2.0 (default: latest)
  INSTALL_DIR        where the binary goes (default: $DEFAULT_INSTALL_DIR, or ~/.local/bin
                     when that is not writable; never prompts for sudo)
  BAL_REPO           GitHub repository of the releases (default: bal-lb/bal)
  BAL_DOWNLOAD_BASE  base URL of the release assets (default: the GitHub release of
                     BAL_VERSION); it must serve bal-<os>-<arch>.tar.gz, SHA256SUMS, VERSION
  BAL_HOME           bal's state directory (default: ~/.bal)
EOF
}

# Turns "v1.2.3" and "1.2.3" into "1.2.3", so both spellings compare equal.
normalize_version() { printf '%s' "${1#v}"; }

platform() {
  local os arch
  os="${BAL_UNAME_S:-$(uname -s)}"
  arch="${BAL_UNAME_M:-$(uname -m)}"
  case "$os" in
  Linux) os=linux ;;
  Darwin) os=macos ;;
  *) die "unsupported operating system: $os (bal runs on Linux and macOS)" ;;
  esac
  case "$arch" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "unsupported architecture: $arch on $os (bal runs on x86_64 and arm64)" ;;
  esac
  printf '%s-%s' "$os" "$arch"
}

download_base() {
  if [ -n "${BAL_DOWNLOAD_BASE:-}" ]; then
    printf '%s' "${BAL_DOWNLOAD_BASE%/}"
  elif [ "$BAL_VERSION" = latest ]; then
    printf 'https://github.com/%s/releases/latest/download' "$BAL_REPO"
  else
    printf 'https://github.com/%s/releases/download/v%s' "$BAL_REPO" "$(normalize_version "$BAL_VERSION")"
  fi
}

fetch() { # fetch URL FILE
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1"
  else
    die "neither curl nor wget is installed"
  fi
}

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    die "neither sha256sum nor shasum is installed: cannot verify the download"
  fi
}

# The directory to install into: INSTALL_DIR as given, or the default when
# writable, else ~/.local/bin.
choose_install_dir() {
  if [ -n "${INSTALL_DIR:-}" ]; then
    mkdir -p "$INSTALL_DIR" 2>/dev/null || die "cannot create INSTALL_DIR $INSTALL_DIR"
    [ -w "$INSTALL_DIR" ] || die "INSTALL_DIR $INSTALL_DIR is not writable"
    printf '%s' "$INSTALL_DIR"
  elif [ -w "$DEFAULT_INSTALL_DIR" ]; then
    printf '%s' "$DEFAULT_INSTALL_DIR"
  else
    mkdir -p "$HOME/.local/bin"
    printf '%s' "$HOME/.local/bin"
  fi
}

# Where an installed bal is: INSTALL_DIR, the default, ~/.local/bin, then PATH.
find_installed() {
  local dir
  for dir in "${INSTALL_DIR:-}" "$DEFAULT_INSTALL_DIR" "$HOME/.local/bin"; do
    if [ -n "$dir" ] && [ -x "$dir/bal" ]; then
      printf '%s' "$dir/bal"
      return
    fi
  done
  command -v bal 2>/dev/null || true
}

# Prints the pid of a running bal daemon, if any.
running_pid() {
  local pid
  pid="$(cat "$BAL_HOME/bal.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then printf '%s' "$pid"; fi
}

# The config the running daemon uses, from its state file.
running_config() {
  sed -n 's/^ *"config_path": *"\(.*\)",*$/\1/p' "$BAL_HOME/bal.state.json" 2>/dev/null | head -n 1
}

uninstall() {
  local purge="$1" bin
  bin="$(find_installed)"
  if [ -n "$(running_pid)" ] && [ -n "$bin" ]; then
    say "stopping the running bal"
    BAL_HOME="$BAL_HOME" "$bin" stop || true
  fi
  if [ -n "$bin" ]; then
    rm -f "$bin"
    say "removed $bin"
  else
    say "bal is not installed"
  fi
  if [ "$purge" = yes ]; then
    rm -rf "$BAL_HOME"
    say "removed $BAL_HOME"
  elif [ -e "$BAL_HOME/config.yaml" ]; then
    say "kept $BAL_HOME/config.yaml (use --purge to remove it)"
  fi
}

# Download directory, global so the EXIT trap still sees it after install() returns.
tmp=""
cleanup() { if [ -n "$tmp" ]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

install() {
  local target base want have existing dir pid config
  target="$(platform)"
  base="$(download_base)"
  tmp="$(mktemp -d)"

  fetch "$base/VERSION" "$tmp/VERSION" || die "cannot download $base/VERSION"
  want="$(normalize_version "$(tr -d '[:space:]' <"$tmp/VERSION")")"
  [ -n "$want" ] || die "$base/VERSION is empty"

  existing="$(find_installed)"
  if [ -n "$existing" ]; then
    # Whatever the wording ("bal 1.2.3", "1.2.3", "v1.2.3"), the first version number in it.
    have="$(normalize_version "$("$existing" --version 2>/dev/null | grep -oE 'v?[0-9]+\.[0-9]+\.[0-9]+[^[:space:]]*' | head -n 1 || true)")"
    if [ "$have" = "$want" ]; then
      say "bal $want is already installed at $existing"
      return
    fi
  fi

  local asset="bal-$target.tar.gz"
  say "downloading bal $want for $target"
  fetch "$base/$asset" "$tmp/$asset" || die "cannot download $base/$asset"
  fetch "$base/SHA256SUMS" "$tmp/SHA256SUMS" || die "cannot download $base/SHA256SUMS"
  local expected actual
  expected="$(awk -v f="$asset" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")"
  [ -n "$expected" ] || die "SHA256SUMS has no entry for $asset; refusing to install"
  actual="$(sha256_of "$tmp/$asset")"
  [ "$expected" = "$actual" ] || die "checksum mismatch for $asset (expected $expected, got $actual); refusing to install"

  tar -xzf "$tmp/$asset" -C "$tmp" bal || die "$asset does not contain bal"
  chmod 755 "$tmp/bal"

  if [ -n "$existing" ]; then dir="$(dirname "$existing")"; else dir="$(choose_install_dir)"; fi
  [ -w "$dir" ] || dir="$(choose_install_dir)"

  # A running daemon is stopped (it drains) before its binary is replaced, and restarted after.
  pid="$(running_pid)"
  config=""
  if [ -n "$pid" ] && [ -n "$existing" ]; then
    config="$(running_config)"
    say "stopping the running bal (pid $pid)"
    BAL_HOME="$BAL_HOME" "$existing" stop
  fi

  mv -f "$tmp/bal" "$dir/bal"
  say "installed bal $want to $dir/bal${have:+ (was $have)}"

  BAL_HOME="$BAL_HOME" "$dir/bal" init >/dev/null
  if [ -n "$pid" ]; then
    say "starting bal again"
    BAL_HOME="$BAL_HOME" "$dir/bal" start -d ${config:+-c "$config"}
  fi

  case ":$PATH:" in
  *":$dir:"*) ;;
  *) say "add $dir to your PATH: echo 'export PATH=\"$dir:\$PATH\"' >> ~/.profile" ;;
  esac
  say "config: $BAL_HOME/config.yaml; start with: bal start -d"
}

main() {
  case "${1:-}" in
  "") install ;;
  --uninstall) uninstall no ;;
  --purge) uninstall yes ;;
  -h | --help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
