#!/usr/bin/env bash
# What Clawplane needs from the operating system, installed when this can be done here (root with apt,
# i.e. Debian or Ubuntu), one line each saying what and why; otherwise the exact command to run, at once.
#
#   bash scripts/setup-system.sh [serve|test] [--check]
#
# serve: what `npm start` needs (run by `npm install` as its postinstall step). test: also what
# `npm test` needs (run by `npm test` before anything else). --check (or CLAWPLANE_SKIP_SYSTEM_SETUP=1)
# installs nothing and only says what is missing. Exit 0 when nothing is missing, 1 otherwise.
set -u
target="serve"
mode="install"
for arg in "$@"; do
  case "$arg" in
    serve | test) target="$arg" ;;
    --check) mode="check" ;;
    *) echo "usage: bash scripts/setup-system.sh [serve|test] [--check]" >&2; exit 2 ;;
  esac
done
[ "${CLAWPLANE_SKIP_SYSTEM_SETUP:-}" = "1" ] && mode="check"

pkgs=()
whys=()
# need PACKAGE WHY COMMAND...: PACKAGE is missing unless COMMAND succeeds.
need() {
  local pkg="$1" why="$2"
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    pkgs+=("$pkg")
    whys+=("$why")
  fi
}
has() { command -v "$1"; }
has_pg() { compgen -G '/usr/lib/postgresql/*/bin/initdb'; }

need bubblewrap "the local sandbox driver runs every OpenClaw gateway under bubblewrap; no gateway runs unsandboxed" has bwrap
need util-linux "setpriv and prlimit drop each sandbox to its tenant's uid and limits" has setpriv
if [ "$target" = "test" ]; then
  need chromium "the web console's tests drive Debian's chromium with playwright-core (no browser is downloaded)" test -x /usr/bin/chromium
  need postgresql "CI runs the suite a second time on Debian's PostgreSQL (the oldest supported major)" has_pg
  need podman "the Docker driver's tests talk to Podman's Docker-compatible API" has podman
  need runc "Podman runs the Docker driver tests' containers with runc (crun cannot on a cgroup v1 hybrid host)" has runc
  need catatonit "Podman's init for the Docker driver's containers started with Init: true" has catatonit
fi

# Warm resume (CLAWPLANE_WARM_RESUME=auto, the default) needs the patched CRIU; as root with apt, build it
# once (60-100 s, cached in /var/tmp/clawplane-criu; ~50 ms when cached). Optional: without it idle
# instances are stopped instead of suspended, and the server and `clawplane doctor` say why.
if [ "$mode" = "install" ] && [ "$(id -u)" = "0" ] && has apt-get >/dev/null && [ "${CLAWPLANE_WARM_RESUME:-auto}" != "false" ]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  criu_dir="${CLAWPLANE_CRIU_DIR:-/var/tmp/clawplane-criu}"
  # A failed build (for example Debian's source index unreachable) is not retried on every install or
  # test run for a day: the stamp says when it failed; delete it to retry at once.
  failed="$criu_dir/build-failed"
  if [ ! -x "$criu_dir/bin/criu" ] && [ -n "$(find "$failed" -mmin -1440 2>/dev/null)" ]; then
    echo "clawplane setup: warm resume unavailable: building CRIU failed at $(cat "$failed" 2>/dev/null) (see /tmp/clawplane-setup-criu.log); not retried for a day: delete $failed to retry now"
  else
    [ -x "$criu_dir/bin/criu" ] || echo "clawplane setup: building CRIU from Debian's source package for warm resume (once, 1-2 min; cached in $criu_dir)"
    if bash "$here/build-criu.sh" >/dev/null 2>/tmp/clawplane-setup-criu.log; then
      rm -f "$failed"
    else
      mkdir -p "$criu_dir" && date -u +%Y-%m-%dT%H:%M:%SZ >"$failed"
      echo "clawplane setup: warm resume unavailable: building CRIU failed (see /tmp/clawplane-setup-criu.log); idle instances will be stopped instead of suspended"
    fi
  fi
fi

[ ${#pkgs[@]} -eq 0 ] && exit 0

if [ "$mode" = "install" ] && [ "$(id -u)" = "0" ] && has apt-get >/dev/null; then
  for i in "${!pkgs[@]}"; do echo "clawplane setup: installing ${pkgs[$i]}: ${whys[$i]}"; done
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null 2>/tmp/clawplane-setup-apt.log; then
    echo "clawplane setup: installed ${pkgs[*]}"
    exit 0
  fi
  echo "clawplane setup: apt-get could not install ${pkgs[*]} (see /tmp/clawplane-setup-apt.log):"
  tail -n 3 /tmp/clawplane-setup-apt.log 2>/dev/null | sed 's/^/  /'
fi

for i in "${!pkgs[@]}"; do echo "clawplane setup: missing ${pkgs[$i]}: ${whys[$i]}"; done
if has apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo "
  echo "clawplane setup: run: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${pkgs[*]}"
else
  echo "clawplane setup: install with your distribution's package manager: ${pkgs[*]} (Debian/Ubuntu package names)"
fi
exit 1
