#!/usr/bin/env python3
"""Requests lost across restarts, per real server and failure class (issue 16).

Each server of tests/fixtures/servers runs under graceful-run as its documentation says, and is
restarted (HUP) 10 times under a bounded loopback load of new connections (`GET /` with
`Connection: close`, each on a fresh connection). Before each restart one slow request
(`/slow?ms=3000`) is sent and seen to have started, so it is in flight in the old generation
when that one gets its stop signal. Every request carries an id, and the app appends
`start ID PID` to a log as it begins handling one, so a failed request is classed:

- `unhandled`: the connection was closed without the app ever handling the request: accepted
  (after the stop signal, or before it and dropped unread at shutdown), then closed;
- `mid-request`: the app had started handling it when its process stopped (exit on TERM);
- `refused`, `timeout`: connect(2) refused, or no response within 15 s.

    python3 bench/handover.py [--restarts 10] [--clients 6] [--servers hypercorn,uwsgi,...]
                              [--graceful-run target/debug/graceful-run] [-- EXTRA FLAGS]

Flags after `--` go to graceful-run (e.g. `-- --handover shared`). Needs the Python servers
in this python3's PATH (.ci/run's venv: `PATH=target/ci-venv/bin:$PATH`) and Debian's starman
and libserver-starter-perl.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "servers")
SLOW_MS = 3000
TIMEOUT = 15

# name: (graceful-run flags, command). Each as its documentation says to run it under a
# supervisor, with its graceful stop signal.
SERVERS = {
    "hypercorn": ([], ["hypercorn", "--bind", "fd://3", "app:asgi"]),
    "uwsgi": (
        [],
        [
            "uwsgi", "--protocol", "http", "--wsgi-file", "app.py", "--master",
            "--processes", "2", "--hook-master-start",
            "unix_signal:15 gracefully_kill_them_all",
        ],
    ),
    # uwsgi's other common setup: --die-on-term, a brutal stop (workers killed at once).
    "uwsgi-die-on-term": (
        [],
        [
            "uwsgi", "--protocol", "http", "--wsgi-file", "app.py", "--master",
            "--processes", "2", "--die-on-term",
        ],
    ),
    "starman": (
        ["--compat", "server-starter", "--map-signal", "TERM:QUIT"],
        ["starman", "--workers", "2", "app.psgi"],
    ),
    "uvicorn": (["--exit-code-map", "143:0"], ["uvicorn", "--fd", "3", "app:asgi"]),
    "http.server": ([], [sys.executable, "plain_http_server.py"]),
}


class Lines:
    """graceful-run's stderr, collected by a thread, awaitable."""

    def __init__(self, stream):
        self.lines, self.cond = [], threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for raw in stream:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def wait(self, pattern, timeout=60, start=0):
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, line in enumerate(self.lines[start:], start):
                    if regex.search(line):
                        return i, line
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-30:]))
                self.cond.wait(left)


def request(port, path):
    """None when a complete 200 response came, else the failure class."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) or not match:
        return "closed"
    return None if len(body) >= int(match.group(1)) else "closed"


class Load:
    """`n` clients sending GET /?id=N, each on a new connection, until stopped."""

    def __init__(self, port, n):
        self.port, self.stop = port, threading.Event()
        self.lock, self.next_id = threading.Lock(), 0
        self.ok, self.failed = 0, []  # (id, class)
        self.threads = [threading.Thread(target=self.run) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop.is_set():
            with self.lock:
                self.next_id += 1
                rid = f"f{self.next_id}"
            failure = request(self.port, f"/?id={rid}")
            with self.lock:
                if failure is None:
                    self.ok += 1
                else:
                    self.failed.append((rid, failure))

    def successes(self):
        with self.lock:
            return self.ok

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def started_ids(log):
    try:
        with open(log) as f:
            return {line.split()[1] for line in f if line.startswith("start ")}
    except FileNotFoundError:
        return set()


def wait_started(log, rid, timeout=30):
    end = time.monotonic() + timeout
    while rid not in started_ids(log):
        if time.monotonic() > end:
            raise TimeoutError(f"request {rid} never started")
        time.sleep(0.01)


def measure(name, graceful_run, restarts, clients, extra):
    flags, command = SERVERS[name]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "requests.log")
        env = dict(os.environ, GR_FIXTURE_LOG=log)
        argv = [graceful_run, "-l", "127.0.0.1:0", "--stop-timeout", "20s", *flags, *extra, "--", *command]
        gr = subprocess.Popen(argv, cwd=FIXTURES, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        lines = Lines(gr.stderr)
        try:
            _, line = lines.wait(r"listening on tcp://127\.0\.0\.1:(\d+)")
            port = int(re.search(r":(\d+) ", line).group(1))
            lines.wait(r"gen 1 \(pid \d+\): ready")
            load = Load(port, clients)
            slow_failed, slow = 0, []
            for generation in range(1, restarts + 1):
                target = load.successes() + clients
                while load.successes() < target:
                    time.sleep(0.01)
                rid = f"s{generation}"
                outcome = {}
                t = threading.Thread(target=lambda r=rid: outcome.setdefault(r, request(port, f"/slow?ms={SLOW_MS}&id={r}")))
                t.start()
                wait_started(log, rid)
                slow.append((t, outcome, rid))
                mark = len(lines.lines)
                gr.send_signal(signal.SIGHUP)
                lines.wait(rf"gen {generation + 1} \(pid \d+\): .*takes over from gen {generation}", start=mark)
                lines.wait(rf"gen {generation} \(pid \d+\): (exited|killed)", start=mark)
            for t, _, _ in slow:
                t.join()
            load.finish()
            slow_failures = [(rid, out[rid]) for t, out, rid in slow if out.get(rid)]
            slow_failed = len(slow_failures)
        finally:
            gr.send_signal(signal.SIGTERM)
            try:
                gr.wait(timeout=40)
            except subprocess.TimeoutExpired:
                gr.kill()
        started = started_ids(log)
        classes = {}
        for rid, failure in load.failed + slow_failures:
            if failure == "closed":
                failure = "mid-request" if rid in started else "unhandled"
            key = ("slow " if rid.startswith("s") else "") + failure
            classes[key] = classes.get(key, 0) + 1
        return load.ok + len(load.failed), classes, slow_failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--graceful-run", default=os.path.join(ROOT, "target", "debug", "graceful-run"))
    parser.add_argument("extra", nargs="*", help="flags for graceful-run, after --")
    args = parser.parse_args()
    print(f"| server | requests | failed | by class | slow requests failed |")
    print(f"|---|---:|---:|---|---:|")
    for name in args.servers.split(","):
        total, classes, slow_failed = measure(name, args.graceful_run, args.restarts, args.clients, args.extra)
        fast = sum(n for k, n in classes.items() if not k.startswith("slow"))
        detail = ", ".join(f"{k} {n}" for k, n in sorted(classes.items())) or "-"
        print(f"| {name} | {total} | {fast} | {detail} | {slow_failed} of {args.restarts} |", flush=True)


if __name__ == "__main__":
    main()
