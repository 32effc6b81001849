#!/usr/bin/env python3
"""Figure 13 (issue 18): what graceful-run's restart triggers cost and how fast they act.

- Trigger to serving: a small Python HTTP server (on graceful-run's fd 3, answering its pid)
  is made to fail its health check (--health-http), to grow past --max-memory, to stop sending
  WATCHDOG=1 (--watchdog), or simply reaches --max-lifetime; from that moment to the first
  answer from a new pid (a client polling every 10 ms on new connections), and from the
  moment graceful-run logs its decision (its stderr read as it comes) to that answer.
- Idle cost: one instance of graceful-run per flag set, side by side for one window of about
  60 s, each with an idle server: context switches of all graceful-run threads (wakeups, as
  figure 3 counts them) and CPU time (/proc/PID/task/*/schedstat, nanoseconds; /proc/PID/stat
  ticks too) over the window, against the count the flag implies.

Writes one JSON file; bench/report.py turns it into figure 13."""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import shutil

from common import free_port, get, logger, wait_answer

SERVER = r"""
import os, socket, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

state = {"broken": False, "hung": False, "ballast": None}

def ping():
    usec = int(os.environ["WATCHDOG_USEC"])
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    while True:
        time.sleep(usec / 2e6)
        if not state["hung"]:
            s.sendto(b"WATCHDOG=1", addr)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a):
        pass
    def do_GET(self):
        code = 200
        if self.path == "/health" and state["broken"]:
            code = 500
        elif self.path == "/break":
            state["broken"] = True
        elif self.path == "/hang":
            state["hung"] = True
        elif self.path == "/grow":
            state["ballast"] = bytearray(os.urandom(1)) * (int(sys.argv[1]) << 20)
        body = str(os.getpid()).encode()
        if self.path == "/watchdog-usec":
            body = os.environ.get("WATCHDOG_USEC", "unset").encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(ThreadingHTTPServer):
    def server_bind(self):
        pass
    def server_activate(self):
        pass

if os.environ.get("WATCHDOG_USEC"):
    threading.Thread(target=ping, daemon=True).start()
srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket = socket.socket(fileno=3)
srv.serve_forever()
"""


log = logger(13)
serving_pid = wait_answer


class Instance:
    """graceful-run with the trigger server; its stderr read line by line, each line stamped."""

    def __init__(self, gr, flags, server_py, port, grow_mib=0):
        cmd = [gr, "-l", f"127.0.0.1:{port}"] + flags + ["--", sys.executable, server_py,
                                                          str(grow_mib)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.port, self.lines = port, []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(5)


def wait_new_pid(port, old, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            pid = get(port, timeout=1)
            if pid != old:
                return time.monotonic(), pid
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError("no new generation answered")


DECISION = {"health": "unhealthy", "memory": "over --max-memory", "watchdog": "no WATCHDOG=1",
            "lifetime": "served its --max-lifetime"}


def decision_time(inst, since, name):
    """When graceful-run logged that it replaces the generation for `name`, after `since`."""
    for t, line in list(inst.lines):
        if t >= since and DECISION[name] in line:
            return t, line
    return None, None


def trigger_runs(gr, server_py, repeats):
    cases = [
        ("health", ["--health-http", "/health", "--health-interval", "1s",
                    "--health-retries", "1", "--health-timeout", "1s"], "/break", 0),
        ("memory", ["--max-memory", "64M"], "/grow", 100),
        ("watchdog", ["--watchdog", "1s"], "/hang", 0),
        ("lifetime", ["--max-lifetime", "3s"], None, 0),
    ]
    out = {}
    for name, flags, path, grow in cases:
        log(f"trigger to serving: {name} ({' '.join(flags)}), {repeats} times")
        port = free_port()
        inst = Instance(gr, flags, server_py, port, grow)
        rows = []
        try:
            pid = serving_pid(port)
            first_seen = time.monotonic()
            watchdog_usec = get(port, "/watchdog-usec")
            for _ in range(repeats):
                if path:
                    time.sleep(0.3)  # the generation has served a little
                    t0 = time.monotonic()
                    get(port, path, timeout=10)
                else:
                    t0 = first_seen  # the lifetime counts from the generation's start
                t1, pid = wait_new_pid(port, pid)
                td, line = decision_time(inst, t0, name)
                rows.append({"to_serving_ms": (t1 - t0) * 1e3,
                             "decision_ms": (td - t0) * 1e3 if td else None,
                             "decision_to_serving_ms": (t1 - td) * 1e3 if td else None,
                             "line": line})
                first_seen = t1
        finally:
            inst.stop()
        out[name] = {"flags": flags, "runs": rows, "watchdog_usec": watchdog_usec,
                     "log": [l for _, l in inst.lines][-12:]}
    return out


def switches(pid):
    n = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if "ctxt_switches" in line:
                    n += int(line.split()[1])
    return n


def cpu_ns(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def idle_runs(gr, server_py, seconds):
    sets = [
        ("none", [], "0 (no flag: no timer)", 0),
        ("health-http, default interval (30s)", ["--health-http", "/health"],
         f"{seconds / 30:.0f} checks", seconds / 30),
        ("health-http, --health-interval 5s", ["--health-http", "/health",
                                               "--health-interval", "5s"],
         f"{seconds / 5:.0f} checks", seconds / 5),
        ("max-memory 1G", ["--max-memory", "1G"], f"{seconds:.0f} samples (1 per second)",
         seconds),
        ("max-memory 1G, -w 4", ["--max-memory", "1G", "-w", "4"],
         f"{seconds:.0f} samples of 4 workers", seconds),
        ("max-lifetime 1h", ["--max-lifetime", "1h"], "0 (one timer, due in about 1 h)", 0),
        ("watchdog 10s (pings every 5 s)", ["--watchdog", "10s"],
         f"{seconds / 5:.0f} pings received", seconds / 5),
    ]
    insts = []
    for name, flags, expected, events in sets:
        port = free_port()
        inst = Instance(gr, ["-q"] + flags, server_py, port)
        insts.append((name, flags, expected, events, inst))
    try:
        for *_, inst in insts:
            serving_pid(port=inst.port)
        time.sleep(2)  # starting up is not idleness
        # perf counts every thread, those that graceful-run starts and ends during the window
        # too (a /proc look runs on a short-lived thread); /proc/PID/task/* sees only the
        # threads alive at each end, and /proc/PID/stat's ticks are 10 ms.
        perfs = []
        if shutil.which("perf"):
            perfs = [subprocess.Popen(["perf", "stat", "-x,", "-e", "context-switches,task-clock",
                                       "-p", str(i.proc.pid), "--", "sleep", str(seconds)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for *_, i in insts]
        before = [(switches(i.proc.pid), cpu_ns(i.proc.pid), cpu_ticks(i.proc.pid))
                  for *_, i in insts]
        t0 = time.monotonic()
        log(f"idle window: {len(insts)} instances for {seconds} s")
        time.sleep(seconds)
        window = time.monotonic() - t0
        after = [(switches(i.proc.pid), cpu_ns(i.proc.pid), cpu_ticks(i.proc.pid))
                 for *_, i in insts]
        perf_counts = []
        for p in perfs:
            counts = {}
            for line in p.communicate()[1].splitlines():
                f = line.split(",")
                if len(f) > 2 and f[2] in ("context-switches", "task-clock"):
                    try:
                        counts[f[2]] = float(f[0])
                    except ValueError:  # <not counted>: nothing ran
                        counts[f[2]] = 0.0
            perf_counts.append(counts)
    finally:
        for *_, inst in insts:
            inst.stop()
    rows = []
    for k, ((name, flags, expected, events, _), b, a) in enumerate(zip(insts, before, after)):
        row = {"name": name, "flags": flags, "expected": expected, "events": events,
               "switches_live_threads": a[0] - b[0], "cpu_ns_live_threads": a[1] - b[1],
               "ticks": a[2] - b[2]}
        if perfs:
            row["switches"] = int(perf_counts[k].get("context-switches", 0))
            row["cpu_ns"] = int(perf_counts[k].get("task-clock", 0) * 1e6)
        else:
            row["switches"], row["cpu_ns"] = row["switches_live_threads"], row["cpu_ns_live_threads"]
        rows.append(row)
    return {"window_s": window, "rows": rows, "perf": bool(perfs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--graceful-run", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle-seconds", type=float, default=60)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-triggers-")
    try:
        server_py = os.path.join(tmp, "server.py")
        with open(server_py, "w") as f:
            f.write(SERVER)
        data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "loadavg_start": open("/proc/loadavg").read().split()[:3],
                "repeats": args.repeats}
        data["triggers"] = trigger_runs(args.graceful_run, server_py, args.repeats)
        data["idle"] = idle_runs(args.graceful_run, server_py, args.idle_seconds)
        data["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
