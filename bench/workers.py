#!/usr/bin/env python3
"""Figure 12 (issue 17): four workers of a Node `http` server and of a uvicorn app under wrk,
with graceful-run -w 4 against pm2 cluster mode (pm2 reload) and gunicorn -w 4 (HUP).

The Node app runs twice under graceful-run: as it is (Node's default on TERM or INT: exit at
once), and with the few lines a production app adds to stop gracefully (on TERM or INT: stop
accepting, answer each keep-alive connection's next request with `Connection: close`, close
what is still idle a second later), to show what the server's cooperation buys.

For each server and tool, in one run:
- failed requests over the rolling restarts, under two wrk instances at once: one opening a
  new connection per request (`Connection: close`), one keeping its connections alive;
- the peak summed RSS of every worker during the rollouts, sampled from /proc every 20 ms,
  against the steady state sampled under the same load before the first restart;
- each rollout's time (`ctl restart --wait`, `pm2 reload`, HUP until no old worker is left);
- throughput at 1 and at 4 workers (wrk alone, keep-alive and new connections);
- balance: which worker pid answered, over new connections and over keep-alive connections.

Writes one JSON file; bench/report.py turns it into figure 12. Every process started here is
stopped before it exits."""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import http.client

from common import free_port, get, logger, wait_answer

# The Node app: tests/fixtures/servers/keepalive_node.js, which answers its pid, in its two
# modes: as Node behaves by default (TERM exits at once), and with what a production Node app
# adds to stop gracefully (see the fixture). pm2 runs a script without arguments, so each mode
# is a one-line script that sets it and loads the fixture.
NODE_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                            "fixtures", "servers", "keepalive_node.js")


def node_app(mode):
    return f"process.argv[2] = {json.dumps(mode)};\nrequire({json.dumps(os.path.abspath(NODE_FIXTURE))});\n"


ASGI_APP = r"""
import os
PID = str(os.getpid()).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": PID})
"""


log = logger(12)


def get_pid(port, timeout=2.0):
    return get(port, timeout=timeout)


def wait_http(port, deadline_s=30):
    wait_answer(port, deadline_s, pause_s=0.05)


def children(pid):
    try:
        out = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        return out
    except OSError:
        return []


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Sums the RSS of `workers()` every 20 ms; `mark()` switches steady → rollout samples."""

    def __init__(self, workers):
        super().__init__(daemon=True)
        self.workers, self.stop_flag = workers, threading.Event()
        self.steady, self.rollout, self.phase = [], [], "steady"
        self.max_count = 0

    def run(self):
        while not self.stop_flag.wait(0.02):
            pids = self.workers()
            total = sum(rss_kib(p) for p in pids)
            if self.phase == "steady":
                self.steady.append((total, len(pids)))
            else:
                self.rollout.append((total, len(pids)))
                self.max_count = max(self.max_count, len(pids))


WRK_RE = {
    "requests": re.compile(r"(\d+) requests in"),
    "errors": re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"),
    "non2xx": re.compile(r"Non-2xx or 3xx responses: (\d+)"),
    "rps": re.compile(r"Requests/sec:\s+([\d.]+)"),
}


def parse_wrk(text):
    r = {"requests": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0, "rps": 0.0}
    m = WRK_RE["requests"].search(text)
    if m:
        r["requests"] = int(m.group(1))
    m = WRK_RE["errors"].search(text)
    if m:
        r["connect"], r["read"], r["write"], r["timeout"] = map(int, m.groups())
    m = WRK_RE["non2xx"].search(text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = WRK_RE["rps"].search(text)
    if m:
        r["rps"] = float(m.group(1))
    r["failed"] = r["connect"] + r["read"] + r["write"] + r["timeout"] + r["non2xx"]
    return r


def wrk(port, seconds, close, connections, script_dir):
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        args += ["-H", "Connection: close"]
    return subprocess.Popen(args + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=script_dir)


def throughput(port, seconds, tmp):
    out = {}
    for mode, close in (("keepalive", False), ("close", True)):
        p = wrk(port, seconds, close, 16, tmp)
        out[mode] = parse_wrk(p.communicate()[0])["rps"]
    return out


def balance(port, requests=800, keepalive_conns=32):
    """Worker pid per request over new connections, and per keep-alive connection."""
    per_close = {}
    lock = threading.Lock()

    def worker(n):
        for _ in range(n):
            try:
                pid = get_pid(port)
            except OSError:
                continue
            with lock:
                per_close[pid] = per_close.get(pid, 0) + 1

    threads = [threading.Thread(target=worker, args=(requests // 8,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_conn = {}
    conns = []
    for _ in range(keepalive_conns):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            c.request("GET", "/")
            pid = c.getresponse().read().decode()
            per_conn[pid] = per_conn.get(pid, 0) + 1
        except OSError:
            pass
        conns.append(c)
    for c in conns:
        c.close()
    return {"close_requests": sorted(per_close.values(), reverse=True),
            "keepalive_connections": sorted(per_conn.values(), reverse=True)}


# ----- the tools ----------------------------------------------------------------------------

class Tool:
    errlog = None

    def all_log_lines(self):
        try:
            with open(self.errlog.name) as f:
                return f.read().splitlines()
        except (OSError, AttributeError):
            return []

    def log_lines(self):
        return self.all_log_lines()[-200:]


class GracefulRun(Tool):
    name = "graceful-run"

    def __init__(self, args, server, port, workers, tmp):
        self.gr = args.graceful_run
        # Not -q: the lines that end each drain are counted (one per old worker).
        cmd = [self.gr, "-w", str(workers), "-l", f"127.0.0.1:{port}", "--"] + server
        self.errlog = open(os.path.join(tmp, f"gr-{port}.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errlog,
                                     start_new_session=True)
        self.port, self.n = port, workers
        self.wait_workers()

    def wait_workers(self):
        deadline = time.monotonic() + 30
        while len(self.workers()) < self.n:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("graceful-run did not start its workers")
            time.sleep(0.05)
        wait_http(self.port)

    def workers(self):
        return descendants(self.proc.pid)

    def restart(self):
        r = subprocess.run([self.gr, "ctl", "--pid", str(self.proc.pid), "restart", "--wait"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=120)
        return r.returncode == 0, r.stderr.strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.errlog.close()


class Gunicorn(Tool):
    name = "gunicorn"

    def __init__(self, args, app_dir, port, workers, tmp):
        cmd = [os.path.join(args.venv, "gunicorn"), "-w", str(workers), "-k",
               "uvicorn.workers.UvicornWorker", "-b", f"127.0.0.1:{port}", "--chdir", app_dir,
               "--log-level", "warning", "app:app"]
        self.errlog = open(os.path.join(tmp, f"gunicorn-{port}.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.errlog,
                                     start_new_session=True)
        self.port, self.n = port, workers
        deadline = time.monotonic() + 30
        while len(children(self.proc.pid)) < workers:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("gunicorn did not start its workers")
            time.sleep(0.05)
        wait_http(port)

    def workers(self):
        return descendants(self.proc.pid)

    def restart(self):
        """HUP, then until none of the old workers is left and N new ones answer."""
        old = set(children(self.proc.pid))
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = set(children(self.proc.pid))
            if not (now & old) and len(now) >= self.n:
                return True, ""
            time.sleep(0.005)
        return False, "old workers still running after 60 s"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.errlog.close()


class Pm2(Tool):
    name = "pm2"

    def __init__(self, args, app, port, workers, tmp):
        self.pm2 = args.pm2
        self.env = dict(os.environ, PM2_HOME=os.path.join(tmp, "pm2-home"), PORT=str(port))
        self.env.pop("LISTEN_FDS", None)
        self.port, self.n = port, workers
        subprocess.run([self.pm2, "start", app, "-i", str(workers), "--name", "bench"],
                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True, timeout=60)
        with open(os.path.join(self.env["PM2_HOME"], "pm2.pid")) as f:
            self.daemon = int(f.read().strip())
        deadline = time.monotonic() + 30
        while len(children(self.daemon)) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("pm2 did not start its workers")
            time.sleep(0.05)
        wait_http(port)

    def workers(self):
        return descendants(self.daemon)

    def restart(self):
        r = subprocess.run([self.pm2, "reload", "bench"], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        return r.returncode == 0, r.stderr.strip()[-200:]

    def stop(self):
        subprocess.run([self.pm2, "kill"], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        # pm2 kill stops its daemon; make sure nothing of ours is left either way.
        try:
            os.kill(self.daemon, 0)
            os.kill(self.daemon, signal.SIGKILL)
        except OSError:
            pass


# ----- one measurement ----------------------------------------------------------------------

DRAINED_RE = re.compile(r"drained after ([0-9a-z ]+?) \((.*)\)$")
UNITS_MS = {"h": 3600e3, "m": 60e3, "min": 60e3, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3,
            "ns": 1e-6}


def duration_ms(text):
    """humantime's "1s 23ms" in milliseconds."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)([a-zµ]+)", text):
        total += int(number) * UNITS_MS.get(unit, 0.0)
    return total


def drains(lines):
    """What graceful-run's log says of the drains in `lines`: how each ended, and how long
    each took."""
    out = {"boundary": 0, "quiet": 0, "timeout": 0, "drain_ms": [], "boundary_ms": []}
    for line in lines:
        if "still busy after --drain-timeout" in line:
            out["timeout"] += 1
        m = DRAINED_RE.search(line)
        if m:
            ms = duration_ms(m.group(1))
            out["drain_ms"].append(ms)
            if "keep-alive stream" in m.group(2):
                out["boundary"] += 1
                out["boundary_ms"].append(ms)
            else:
                out["quiet"] += 1
    return out


def rollouts(t, port, mode, restarts, bound_s, tmp):
    """Rolling restarts under one wrk load (16 connections, new or kept alive), with the
    summed RSS of the workers sampled before (3 s), during, and after them (3 s)."""
    r = {}
    log_start = len(t.all_log_lines())
    sampler = Sampler(t.workers)
    sampler.start()
    # Past the bound by more than the last restart may take: it is ended below anyway.
    load = wrk(port, int(bound_s) + 150, mode == "close", 16, tmp)
    time.sleep(3)  # the steady state under the same load
    sampler.phase = "rollout"
    times, failures = [], []
    t0 = time.monotonic()
    while len(times) + len(failures) < restarts and time.monotonic() - t0 < bound_s:
        a = time.monotonic()
        ok, why = t.restart()
        (times if ok else failures).append(time.monotonic() - a if ok else why)
    r["load_seconds_used"] = time.monotonic() - t0
    during = list(sampler.rollout)
    sampler.rollout, sampler.phase = [], "after"  # "rollout" now collects the after samples
    time.sleep(3)
    after = list(sampler.rollout)
    sampler.stop_flag.set()
    load.send_signal(signal.SIGINT)  # end the load now rather than at its bound
    out = load.communicate()[0]
    r["wrk"], r["wrk_output"] = parse_wrk(out), out
    r["restarts"], r["restart_failures"] = len(times), failures[:5]
    r["restart_failed_count"], r["rollout_s"] = len(failures), times
    steady = [x for x, _ in sampler.steady]
    r["steady_kib"] = statistics.median(steady) if steady else 0
    r["steady_workers"] = statistics.median([n for _, n in sampler.steady]) if steady else 0
    r["steady_after_kib"] = statistics.median([x for x, _ in after]) if after else 0
    # The largest steady samples too: the peak is the largest of thousands of samples, and a
    # Node worker's heap moves by tens of MiB under load with no restart, so a bound from a
    # median would call a rollout over it that is not.
    r["steady_max_kib"] = max(steady, default=0)
    r["steady_after_max_kib"] = max((x for x, _ in after), default=0)
    r["peak_kib"] = max(x for x, _ in during) if during else 0
    r["max_processes"] = max((n for _, n in during), default=0)
    if isinstance(t, GracefulRun):
        r["drains"] = drains(t.all_log_lines()[log_start:])
    return r


def measure(label, start, restarts, bound_s, tmp, throughput_s, full=True):
    """Throughput at 1 and 4 workers and balance (`full`), then rolling restarts under
    new-connection load and, separately, under keep-alive load (`bound_s` seconds at most
    each)."""
    result = {}
    if full:
        port = free_port()
        t = start(port, 1)
        try:
            result["throughput_1"] = throughput(port, throughput_s, tmp)
        finally:
            t.stop()
    port = free_port()
    t = start(port, 4)
    try:
        if full:
            result["throughput_4"] = throughput(port, throughput_s, tmp)
            result["balance"] = balance(port)
        result["modes"] = {}
        for mode in ("close", "keepalive"):
            result["modes"][mode] = rollouts(t, port, mode, restarts, bound_s, tmp)
            log(f"{label}, {mode}: {result['modes'][mode]['restarts']} restarts, "
                f"{result['modes'][mode]['wrk']['failed']} failed")
    finally:
        t.stop()
        lines = t.all_log_lines()
        result["log"] = lines[-200:]
        result["log_counts"] = {text: sum(text in line for line in lines) for text in (
            "took longer than", "not waiting for connections",
            "still busy after --drain-timeout")}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--graceful-run", required=True)
    ap.add_argument("--venv", required=True, help="bin directory with uvicorn and gunicorn")
    ap.add_argument("--pm2", required=True)
    ap.add_argument("--restarts", type=int, default=100, help="per load")
    ap.add_argument("--bound", type=int, default=300,
                    help="seconds of restarts at most, per load")
    ap.add_argument("--baseline-restarts", type=int, default=100)
    ap.add_argument("--baseline-bound", type=int, default=150)
    ap.add_argument("--throughput-seconds", type=int, default=4)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-workers-")
    try:
        node_js = os.path.join(tmp, "server.js")
        with open(node_js, "w") as f:
            f.write(node_app("plain"))
        node_graceful_js = os.path.join(tmp, "server-graceful.js")
        with open(node_graceful_js, "w") as f:
            f.write(node_app("graceful"))
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(ASGI_APP)
        node = shutil.which("node")
        uvicorn = [os.path.join(args.venv, "uvicorn"), "--fd", "3", "--app-dir", tmp,
                   "--log-level", "warning", "app:app"]
        data = {"loadavg_start": open("/proc/loadavg").read().split()[:3],
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "restarts_asked": args.restarts, "bound_s": args.bound,
                "baseline_restarts_asked": args.baseline_restarts,
                "baseline_bound_s": args.baseline_bound, "per_load": True, "results": {}}
        # (server, tool, restarts per load, seconds per load, start, with throughput)
        runs = [
            ("node", "graceful-run", args.restarts, args.bound,
             lambda port, n: GracefulRun(args, [node, node_js], port, n, tmp), True),
            ("node, graceful stop", "graceful-run", args.restarts, args.bound,
             lambda port, n: GracefulRun(args, [node, node_graceful_js], port, n, tmp), False),
            ("node", "pm2", args.baseline_restarts, args.baseline_bound,
             lambda port, n: Pm2(args, node_js, port, n, tmp), True),
            ("uvicorn", "graceful-run", args.restarts, args.bound,
             lambda port, n: GracefulRun(args, uvicorn, port, n, tmp), True),
            ("uvicorn", "gunicorn", args.baseline_restarts, args.baseline_bound,
             lambda port, n: Gunicorn(args, tmp, port, n, tmp), True),
        ]
        for server, tool, restarts, bound, start, full in runs:
            log(f"{server} under {tool}: {'throughput, balance, ' if full else ''}up to "
                f"{restarts} rollouts in {bound:.0f} s under each load")
            data["results"].setdefault(server, {})[tool] = measure(
                f"{server} under {tool}", start, restarts, bound, tmp, args.throughput_seconds,
                full)
        data["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
