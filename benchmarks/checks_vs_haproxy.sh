#!/usr/bin/env bash
# failoverd's health checks against HAProxy's on the same targets, side by side in one run.
#
#   bash benchmarks/checks_vs_haproxy.sh                 # 5,000 targets, 1 s interval, 30 s
#   TARGETS=1000,5000 DURATION=10 bash benchmarks/checks_vs_haproxy.sh
#
# One listener process (its own core) serves every target on a few loopback ports and
# counts the connections it accepts. For each size, failoverd's HealthMonitor checks the
# targets for DURATION seconds on one core, then HAProxy (Debian package, one thread,
# `check inter 1s`, connect-only checks, pinned to the same core) checks the very same
# targets for the same time. CPU is read from each process's own accounting (rusage, and
# /proc/PID/stat for HAProxy). HAProxy resets a connect check before the final ACK, so no
# listener sees it: its checks are counted as TCP ActiveOpens of a private network
# namespace (unshare -n) that holds only this benchmark. Prints CPU seconds per 1,000
# checks for both and the ratio failoverd / HAProxy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3

"$root/scripts/install-tools.sh" --bench
if ! command -v haproxy >/dev/null 2>&1; then
  echo "checks_vs_haproxy: haproxy is not installed and could not be installed" >&2
  exit 1
fi
echo "# $(haproxy -v | head -1)"
isolate=()
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null; then
  isolate=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
  echo "# in a private network namespace (only this benchmark's TCP traffic is counted)"
fi
exec "${isolate[@]}" "$py" "$here/checks.py" --compare-haproxy \
  --targets "${TARGETS:-5000}" --duration "${DURATION:-30}" --interval "${INTERVAL:-1.0}" \
  ${NICE:+--nice "$NICE"}
