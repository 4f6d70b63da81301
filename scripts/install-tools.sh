#!/usr/bin/env bash
# Installs the external tools the test suite uses (promtool, systemd-analyze) and, with
# --bench, the peers the benchmarks compare against (haproxy). Debian packages only.
# Where a tool cannot be installed this says so plainly; the tests that need it then
# skip with the same message instead of passing silently.
set -u
want=(promtool:prometheus systemd-analyze:systemd)
[ "${1:-}" = "--bench" ] && want+=(haproxy:haproxy)

missing=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-tools: apt-get not available; cannot install ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
echo "install-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq >/dev/null && \
       $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "install-tools: could not install ${missing[*]} (tests needing them will skip)" >&2
fi
exit 0
