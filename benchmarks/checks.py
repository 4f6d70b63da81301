"""Health-check scheduler benchmark (issue 4): N loopback TCP targets at a 1 s interval.

    python benchmarks/checks.py                               # 1,000 / 5,000 / 10,000 for 30 s
    python benchmarks/checks.py --targets 5000 --duration 10  # a quick run
    python benchmarks/checks.py --compare-haproxy --targets 5000   # see checks_vs_haproxy.sh

The checker (a real ``HealthMonitor`` with a real ``Metrics`` recorder, so the per-probe
metric cost is included) runs in its own process pinned to one core. The targets are a few
listening sockets with large backlogs in a separate process pinned to another core, which
accepts and closes every connection and counts them — that count is also how HAProxy's
checks are counted in the comparison. A warm-up (5 s by default) is excluded from the
figures: every target's first round creates its metric children and the garbage collector
makes its full passes over them; after that the checker is in its steady state.

Printed per size: achieved checks/s (and failures), scheduling lag p50/p99/max (how late a
round started after its deadline), CPU seconds per 1,000 checks, CPU use of the core, and
peak RSS. The bar: 5,000 targets at 1 s with p99 lag <= 50 ms.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # runnable from a source tree without installing

BAR_TARGETS, BAR_P99 = 5000, 0.050


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


# --------------------------------------------------------------------------- listener


def listener_main(nports: int, cpu: int | None) -> None:
    """Accept-and-close on `nports` loopback ports; answer "count" lines on stdin."""
    raise_nofile()
    pin(cpu)
    socks: dict[int, socket.socket] = {}
    for _ in range(nports):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(65535)  # capped by net.core.somaxconn
        s.setblocking(False)
        socks[s.fileno()] = s
    print(json.dumps({"ports": [s.getsockname()[1] for s in socks.values()]}), flush=True)
    ep = select.epoll()
    for fd in socks:
        ep.register(fd, select.EPOLLIN)
    stdin = sys.stdin.fileno()
    ep.register(stdin, select.EPOLLIN)
    count = 0
    while True:
        for fd, _ in ep.poll():
            if fd == stdin:
                line = sys.stdin.readline()
                if not line:
                    return
                print(count, flush=True)
                continue
            s = socks[fd]
            while True:
                try:
                    conn, _ = s.accept()
                except BlockingIOError:
                    break
                except OSError:
                    continue  # aborted before we got to it; still a completed check
                conn.close()
                count += 1


class Listener:
    def __init__(self, nports: int, cpu: int | None) -> None:
        cmd = [sys.executable, __file__, "--listener", "--ports", str(nports)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]

    def count(self) -> int:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --------------------------------------------------------------------------- checker


def worker_main(args: argparse.Namespace) -> None:
    raise_nofile()
    pin(args.cpu)
    result = asyncio.run(run_checker(args))
    print(json.dumps(result), flush=True)


async def run_checker(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from failoverd.checks import HealthMonitor
    from failoverd.metrics import Metrics
    from failoverd.policy import (
        ApiPolicy,
        CheckTiming,
        DaemonPolicy,
        GuardsPolicy,
        Policy,
        ServerPolicy,
        TcpCheck,
    )

    ports = [int(p) for p in args.connect.split(",")]
    timing = CheckTiming(interval=args.interval, timeout=args.timeout, fall=3, rise=2)
    servers = {
        f"t{i:05d}": ServerPolicy(
            f"t{i:05d}", (TcpCheck("127.0.0.1", ports[i % len(ports)], timing),)
        )
        for i in range(args.targets)
    }
    policy = Policy(ApiPolicy(), DaemonPolicy(), GuardsPolicy(), servers, {})
    lags = array.array("d")
    outcome = [0, 0]  # fail, pass
    reasons: Counter[str] = Counter()
    measuring = False

    def observe(server: str, result: Any, lag: float) -> None:
        if measuring:
            lags.append(lag)
            outcome[result.ok] += 1
            if not result.ok:
                reasons[result.reason] += 1

    recorder = None if args.no_metrics else Metrics(CollectorRegistry())
    monitor = HealthMonitor(policy, recorder, observer=observe)
    loop = asyncio.get_running_loop()
    await monitor.start()
    # Pacing of the benchmark itself, not a synchronisation. The warm-up absorbs the
    # start: every target's first round creates its metric children, and the garbage
    # collector's full passes over all those new objects; both end within a few seconds.
    await asyncio.sleep(args.warmup)
    measuring = True
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), loop.time()
    await asyncio.sleep(args.duration)
    measuring = False
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), loop.time()
    await monitor.stop()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    checks = outcome[0] + outcome[1]
    ordered = sorted(lags)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {
        "targets": args.targets,
        "seconds": t1 - t0,
        "checks": checks,
        "failed": outcome[0],
        "checks_per_s": checks / (t1 - t0),
        "lag_p50": pct(0.50),
        "lag_p99": pct(0.99),
        "lag_max": ordered[-1] if ordered else float("nan"),
        "cpu_s": cpu,
        "cpu_per_1000": 1000 * cpu / checks if checks else float("nan"),
        "sys_share": (r1.ru_stime - r0.ru_stime) / cpu if cpu else float("nan"),
        "cpu_use": cpu / (t1 - t0),
        "peak_rss_mb": r1.ru_maxrss / 1024,
        "failures": dict(reasons.most_common(3)),
    }


def run_worker(args: argparse.Namespace, targets: int, ports: list[int]) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--targets",
        str(targets),
        "--duration",
        str(args.duration),
        "--interval",
        str(args.interval),
        "--timeout",
        str(args.timeout),
        "--warmup",
        str(args.warmup),
        *(["--no-metrics"] if args.no_metrics else []),
        "--connect",
        ",".join(map(str, ports)),
    ]
    if args.cpu is not None:
        cmd += ["--cpu", str(args.cpu)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- haproxy


def haproxy_config(
    targets: int, ports: list[int], interval: float, timeout: float, sock: Path
) -> str:
    ms = int(interval * 1000)
    tmo = int(timeout * 1000)
    lines = [
        "global",
        "    maxconn 1000",  # checks are not connections; their sockets come on top
        "    nbthread 1",
        "defaults",
        "    mode tcp",
        f"    timeout connect {tmo}ms",
        f"    timeout check {tmo}ms",
        "    timeout client 5s",
        "    timeout server 5s",
        # HAProxy refuses to run without a listener; this one is never used.
        "frontend idle",
        f"    bind unix@{sock}",
        "    default_backend bench",
        "backend bench",
        f"    default-server check inter {ms}ms fall 3 rise 2",
    ]
    lines += [f"    server t{i:05d} 127.0.0.1:{ports[i % len(ports)]}" for i in range(targets)]
    return "\n".join(lines) + "\n"


def proc_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def tcp_active_opens() -> int:
    """Connection attempts of this network namespace (HAProxy's checks are counted this
    way: it resets a connect check before the final ACK, so no listener ever sees it)."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    tcp = [ln.split() for ln in lines if ln.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("ActiveOpens")])


def private_netns() -> bool:
    """Only a loopback interface in this network namespace: nothing else's TCP is counted."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return [ln.split(":", 1)[0].strip() for ln in lines] == ["lo"]


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_haproxy(
    args: argparse.Namespace, targets: int, listener: Listener
) -> dict[str, Any] | None:
    exe = shutil.which("haproxy")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(
            haproxy_config(
                targets, listener.ports, args.interval, args.timeout, Path(tmp) / "idle.sock"
            )
        )
        cmd = [exe, "-db", "-f", str(cfg)]
        if args.cpu is not None:
            cmd = ["taskset", "-c", str(args.cpu), *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(args.warmup)  # the same warm-up as the checker
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"haproxy exited: {err.strip()}")
            c0, n0, t0 = proc_cpu_seconds(proc.pid), tcp_active_opens(), time.monotonic()
            time.sleep(args.duration)
            c1, n1, t1 = proc_cpu_seconds(proc.pid), tcp_active_opens(), time.monotonic()
            rss = proc_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    checks = n1 - n0
    cpu = c1 - c0
    return {
        "targets": targets,
        "seconds": t1 - t0,
        "checks": checks,
        "checks_per_s": checks / (t1 - t0),
        "cpu_s": cpu,
        "cpu_per_1000": 1000 * cpu / checks if checks else float("nan"),
        "cpu_use": cpu / (t1 - t0),
        "peak_rss_mb": rss,
    }


# --------------------------------------------------------------------------- main


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--targets", default="1000,5000,10000", help="comma-separated sizes")
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per size")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument(
        "--no-metrics", action="store_true", help="no Recorder: the cost of the checks alone"
    )
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    ap.add_argument("--ports", type=int, default=64, help="listening ports serving the targets")
    ap.add_argument("--cpu", type=int, default=None, help="core for the checker (default: first)")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for every benchmark process (e.g. -10 on a machine busy with other work)",
    )
    ap.add_argument("--compare-haproxy", action="store_true")
    ap.add_argument("--listener", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--connect", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by workers and haproxy
    if args.listener:
        listener_main(args.ports, args.cpu)
        return 0
    if args.worker:
        args.targets = int(args.targets)
        worker_main(args)
        return 0

    hard = raise_nofile()
    available = cpus()
    if args.cpu is None:
        args.cpu = available[0]
    others = [c for c in available if c != args.cpu]
    listener_cpu = others[0] if others else None
    sizes = [int(x) for x in args.targets.split(",")]
    print(
        f"# {len(available)} cores; checker on core {args.cpu}, targets' listener on "
        f"{'core ' + str(listener_cpu) if listener_cpu is not None else 'the same core'}; "
        f"interval {args.interval}s, timeout {args.timeout}s, {args.duration:g}s measured per "
        f"size after {args.warmup:g}s of warm-up, {args.ports} listening ports, "
        f"RLIMIT_NOFILE {hard}; load average "
        f"{os.getloadavg()[0]:.2f}; nice {os.getpriority(os.PRIO_PROCESS, 0)}",
        flush=True,
    )
    if args.compare_haproxy and not private_netns():
        print(
            "# warning: not in a private network namespace; HAProxy's check count includes "
            "every other TCP connect of this machine (checks_vs_haproxy.sh isolates it)",
            flush=True,
        )
    listener = Listener(args.ports, listener_cpu)
    failed_bar = False
    try:
        print(
            f"{'targets':>8} {'checks/s':>10} {'failed':>7} {'lag p50 ms':>10} "
            f"{'p99 ms':>8} {'max ms':>8} {'CPU s/1k':>9} {'core use':>8} {'RSS MB':>7}",
            flush=True,
        )
        for n in sizes:
            r = run_worker(args, n, listener.ports)
            print(
                f"{n:>8} {r['checks_per_s']:>10.1f} {r['failed']:>7} {fmt_ms(r['lag_p50']):>10} "
                f"{fmt_ms(r['lag_p99'])} {fmt_ms(r['lag_max'])} {r['cpu_per_1000']:>9.4f} "
                f"{r['cpu_use'] * 100:>7.1f}% {r['peak_rss_mb']:>7.1f}",
                flush=True,
            )
            print(f"#   kernel share of that CPU: {r['sys_share'] * 100:.0f}%", flush=True)
            if r["failures"]:
                print(f"#   failures: {r['failures']}", flush=True)
            if n == BAR_TARGETS:
                ok = r["lag_p99"] <= BAR_P99 and r["checks_per_s"] >= 0.95 * n / args.interval
                failed_bar = not ok
                print(
                    f"# bar ({BAR_TARGETS} targets at {args.interval:g}s, p99 lag <= "
                    f"{BAR_P99 * 1000:.0f} ms): {'PASS' if ok else 'FAIL'}",
                    flush=True,
                )
            if args.compare_haproxy:
                h = run_haproxy(args, n, listener)
                if h is None:
                    print("# haproxy not installed (scripts/install-tools.sh --bench)")
                    return 1
                ratio = r["cpu_per_1000"] / h["cpu_per_1000"]
                print(
                    f"{'haproxy':>8} {h['checks_per_s']:>10.1f} {'-':>7} {'-':>10} {'-':>8} "
                    f"{'-':>8} {h['cpu_per_1000']:>9.4f} {h['cpu_use'] * 100:>7.1f}% "
                    f"{h['peak_rss_mb']:>7.1f}",
                    flush=True,
                )
                print(
                    f"# {n} targets: CPU per 1,000 checks failoverd {r['cpu_per_1000']:.4f}s, "
                    f"haproxy {h['cpu_per_1000']:.4f}s, ratio failoverd/haproxy {ratio:.1f}x",
                    flush=True,
                )
    finally:
        listener.close()
    return 1 if failed_bar else 0


if __name__ == "__main__":
    sys.exit(main())
