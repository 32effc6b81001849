#!/usr/bin/env python3
"""Figure 11 of bench/run: steering (issue 16), measured from outside the product.

    python3 bench/steering.py --out FILE.json [--restarts 100] [--graceful-run PATH]
                              [--http-server PATH] [--servers hypercorn,uvicorn,...]

1. **Failed new connections over N restarts**, per server that needs steering (it accepts
   after its stop signal, or dies on TERM mid-request), under a bounded loopback load of new
   connections (bench/handover.py's `Load`: `GET /`, `Connection: close`), with three tools
   in the same run: graceful-run's default (`--handover steer`), `--handover shared`, and
   Server::Starter (`start_server`, which shares one socket and signals the old worker
   `--interval` after starting the new one).
2. **Drain time**: graceful-run's "drained after" per restart of the steer runs (steered
   away from, until its queue is empty and none of its connections is busy).
3. **Readiness to steering**: a server (bench/ready_to_steer.py) sends READY=1 and at once
   connects to its own port in a loop; the first connection that lands on its own listener
   (found by a zero-timeout `select` on it right after `connect` returns: loopback completes
   the handshake inside `connect`) ends the measurement. An upper bound of graceful-run's
   time from READY=1 to the steering change, measured without instrumenting it.
4. **CPU spent observing**: graceful-run's own CPU time (utime + stime, /proc) while the old
   generation of the example server drains one slow request and holds 1000 idle keep-alive
   connections, every one of which each look classifies.

Results go to --out as JSON for bench/report.py.
"""
import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import handover  # noqa: E402  (bench/handover.py: servers, load, log lines)
from common import free_port  # noqa: E402

ROOT = handover.ROOT
FIXTURES = handover.FIXTURES
CLIENTS = 6
# The servers of the figure: each loses requests across restarts without steering.
SERVERS = ["hypercorn", "uvicorn", "starman", "http.server"]
# Under Server::Starter: the socket's fd comes in SERVER_STARTER_PORT (`host:port=fd`).
FD = "${SERVER_STARTER_PORT##*=}"
STARTER = {
    "hypercorn": (["--signal-on-hup=TERM", "--signal-on-term=TERM"],
                  ["sh", "-c", f"exec hypercorn --bind fd://{FD} app:asgi"]),
    "uvicorn": (["--signal-on-hup=TERM", "--signal-on-term=TERM"],
                ["sh", "-c", f"exec uvicorn --fd {FD} app:asgi"]),
    "starman": (["--signal-on-hup=QUIT", "--signal-on-term=QUIT"],
                ["starman", "--workers", "2", "app.psgi"]),
    "http.server": (["--signal-on-hup=TERM", "--signal-on-term=TERM"],
                    [sys.executable, "plain_http_server.py"]),
}


def duration_ms(text):
    """graceful-run's durations: `under 1ms`, `9ms`, `3s 95ms`, `1m 2s`."""
    if text.startswith("under "):
        return 0.5
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h)", text):
        total += int(number) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]
    return total


def wait_count(lines, pattern, n, timeout=120):
    """Waits until `n` lines match `pattern`."""
    regex = re.compile(pattern)
    end = time.monotonic() + timeout
    with lines.cond:
        while sum(1 for l in lines.lines if regex.search(l)) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{n} lines matching {pattern!r}:\n" + "\n".join(lines.lines[-30:]))
            lines.cond.wait(left)


def losses(name, tool, graceful_run, restarts):
    """(requests, failed, classes, drain times in ms) over `restarts` restarts under load."""
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "requests.log")
        env = dict(os.environ, GR_FIXTURE_LOG=log)
        if tool == "start_server":
            port = free_port()
            flags, command = STARTER[name]
            argv = ["start_server", f"--port=127.0.0.1:{port}", "--interval=1", *flags, "--", *command]
        else:
            flags, command = handover.SERVERS[name]
            extra = ["--handover", tool]
            argv = [graceful_run, "-l", "127.0.0.1:0", "--stop-timeout", "20s", *flags, *extra, "--", *command]
        proc = subprocess.Popen(argv, cwd=FIXTURES, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        lines = handover.Lines(proc.stderr)
        load = None
        try:
            if tool == "start_server":
                deadline = time.monotonic() + 60
                while handover.request(port, "/") is not None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("start_server's server never answered:\n" + "\n".join(lines.lines[-30:]))
                    time.sleep(0.05)
            else:
                _, line = lines.wait(r"listening on tcp://127\.0\.0\.1:(\d+)")
                port = int(re.search(r":(\d+) ", line).group(1))
                lines.wait(r"gen 1 \(pid \d+\): ready")
            load = handover.Load(port, CLIENTS)
            for restart in range(1, restarts + 1):
                target = load.successes() + CLIENTS * 4
                while load.successes() < target:
                    time.sleep(0.005)
                proc.send_signal(signal.SIGHUP)
                if tool == "start_server":
                    wait_count(lines, r"old worker \d+ died", restart)
                else:
                    wait_count(lines, r"takes over from gen", restart)
                    wait_count(lines, r"gen \d+ \(pid \d+\): (exited|killed)", restart)
            target = load.successes() + CLIENTS * 4
            while load.successes() < target:
                time.sleep(0.005)
        finally:
            if load:
                load.finish()
            os.killpg(proc.pid, signal.SIGTERM) if tool == "start_server" else proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        started = handover.started_ids(log)
        classes = {}
        for rid, failure in load.failed:
            if failure == "closed":
                failure = "mid-request" if rid in started else "unhandled"
            classes[failure] = classes.get(failure, 0) + 1
        drains = [duration_ms(m.group(1)) for m in
                  (re.search(r"drained after (.*?) \(", l) for l in lines.lines) if m]
        return load.ok + len(load.failed), len(load.failed), classes, drains


def ready_to_steer(graceful_run, handovers, traced):
    """Microseconds from READY=1 to the first connection on the new generation's listener
    (the probe); with `traced`, graceful-run runs under `strace -ttt` (recvmsg and setsockopt
    only) and the microseconds between the datagram's recvmsg and the SO_ATTACH_REUSEPORT_CBPF
    are returned instead: its own share, slowed a little by strace."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "latency")
        trace = os.path.join(tmp, "strace")
        env = dict(os.environ, GR_BENCH_OUT=out)
        argv = [graceful_run, "-l", "127.0.0.1:0", "--ready", "notify", "--", sys.executable,
                os.path.join(ROOT, "bench", "ready_to_steer.py")]
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lines = handover.Lines(proc.stderr)
        tracer = None
        try:
            lines.wait(r"gen 1 \(pid \d+\): ready")
            if traced:
                tracer = subprocess.Popen(["strace", "-ttt", "-e", "trace=recvmsg,setsockopt",
                                           "-o", trace, "-p", str(proc.pid)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
                handover.Lines(tracer.stderr).wait(r"attached")
            for restart in range(1, handovers + 1):
                proc.send_signal(signal.SIGHUP)
                wait_count(lines, r"gen \d+ \(pid \d+\): (exited|killed)", restart)
        finally:
            if tracer:
                tracer.send_signal(signal.SIGINT)
                tracer.wait(timeout=40)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
        if traced:
            result, ready_at = [], None
            for line in open(trace):
                stamp = line.split(" ", 1)[0]
                if "recvmsg(" in line and '"READY=1"' in line:
                    ready_at = float(stamp)
                elif "SO_ATTACH_REUSEPORT_CBPF" in line and ready_at is not None:
                    result.append(round((float(stamp) - ready_at) * 1e6, 1))
                    ready_at = None
            return result
        with open(out) as f:
            values = [json.loads(line) for line in f]
        # Generation 1 had nobody before it: every connection was its own from the start.
        return [v["us"] for v in values if v["generation_after_first"]]


def observe_cpu(graceful_run, http_server, connections, slow_ms=5000):
    """graceful-run's CPU while gen 1 drains a slow request and holds idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    argv = [graceful_run, "-l", "127.0.0.1:0", "--ready", "notify", "--", http_server]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    lines = handover.Lines(proc.stderr)
    held = []
    try:
        _, line = lines.wait(r"listening on tcp://127\.0\.0\.1:(\d+)")
        port = int(re.search(r":(\d+) ", line).group(1))
        lines.wait(r"gen 1 \(pid \d+\): ready")
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while b"hello from pid" not in data:
                data += s.recv(4096)
            held.append(s)
        slow = threading.Thread(target=handover.request, args=(port, f"/slow?ms={slow_ms}"))
        slow.start()
        time.sleep(0.2)  # the slow request is accepted and busy

        def cpu():
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before, t0 = cpu(), time.monotonic()
        proc.send_signal(signal.SIGHUP)
        lines.wait(r"gen 1 \(pid \d+\): drained after")
        after, t1 = cpu(), time.monotonic()
        slow.join()
        return {"connections": connections, "drain_s": round(t1 - t0, 3),
                "cpu_ms": round((after - before) * 1000, 1)}
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--handovers", type=int, default=100)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--graceful-run", default=os.path.join(ROOT, "target", "release", "graceful-run"))
    parser.add_argument("--http-server", default=os.path.join(ROOT, "target", "release", "examples", "http-server"))
    args = parser.parse_args()
    result = {"restarts": args.restarts, "clients": CLIENTS, "losses": {}, "drain_ms": {}}
    for name in args.servers.split(","):
        result["losses"][name] = {}
        for tool in ("steer", "shared", "start_server"):
            started = time.monotonic()
            total, failed, classes, drains = losses(name, tool, args.graceful_run, args.restarts)
            result["losses"][name][tool] = {"requests": total, "failed": failed, "classes": classes,
                                            "seconds": round(time.monotonic() - started, 1)}
            if tool == "steer":
                result["drain_ms"][name] = drains
            print(f"{name} {tool}: {failed} of {total} failed {classes}", file=sys.stderr, flush=True)
    result["ready_to_steer_us"] = ready_to_steer(args.graceful_run, args.handovers, False)
    result["ready_to_attach_us_strace"] = ready_to_steer(args.graceful_run, args.handovers, True)
    result["observe"] = observe_cpu(args.graceful_run, args.http_server, args.connections)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
