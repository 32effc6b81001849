#!/usr/bin/env python3
"""Keep-alive clients across restarts: graceful-run beside Server::Starter, same servers.

The Go and Node.js examples (examples/go, examples/node) close their idle keep-alive
connections when they stop, as http.Server.Shutdown and server.closeIdleConnections() do. A
client that sends its next request on such a connection just as the server closes it sees the
connection closed without a response: the race every HTTP/1.1 client must handle (by retrying
idempotent requests on a fresh connection). This script measures how often that happens across
restarts under each supervisor, with a bounded loopback load:

    python3 bench/keepalive.py [--restarts 10] [--clients 4] [--graceful-run PATH]

uvicorn (examples/python/uvicorn_server.py) is measured too when this python3 has it.
Each client keeps one connection open and sends GET / back to back; a failed request is
counted (not retried) and the client reconnects. Needs go, node, and start_server
(apt-get install golang-go nodejs libserver-starter-perl).
"""
import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from common import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clients:
    """`n` keep-alive clients sending GET / until stopped; counts outcomes."""

    def __init__(self, port, n):
        self.port, self.stop = port, threading.Event()
        self.lock = threading.Lock()
        self.ok, self.failed, self.connections = 0, {}, 0
        self.threads = [threading.Thread(target=self.run) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                with self.lock:
                    self.connections += 1
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                outcome = "ok" if response.status == 200 else f"status {response.status}"
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                outcome = type(e).__name__
                conn.close()
                conn = None
            with self.lock:
                if outcome == "ok":
                    self.ok += 1
                else:
                    self.failed[outcome] = self.failed.get(outcome, 0) + 1

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.ok, self.failed, self.connections


def wait_serving(port, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing serves on port {port}")


def measure(supervisor_argv, port, restarts, clients, pace):
    proc = subprocess.Popen(supervisor_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port)
        load = Clients(port, clients)
        time.sleep(pace)
        for _ in range(restarts):
            proc.send_signal(signal.SIGHUP)
            time.sleep(pace)  # pacing of the load, not synchronisation
        return load.finish()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pace", type=float, default=1.5, help="seconds between restarts")
    parser.add_argument("--graceful-run", default=os.path.join(ROOT, "target/release/graceful-run"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="gr-keepalive-")
    go_server = os.path.join(work, "go-server")
    subprocess.run(["go", "build", "-o", go_server, "."], check=True,
                   cwd=os.path.join(ROOT, "examples/go"), env={**os.environ, "GOPROXY": "off"})
    env_path = os.path.dirname(os.path.abspath(args.graceful_run)) + ":" + os.environ["PATH"]
    os.environ["PATH"] = env_path  # the Node example runs `graceful-run notify`
    # (command, --ready): uvicorn sends no READY=1; 1 s matches Server::Starter's interval.
    servers = {
        "go net/http": ([go_server], "notify"),
        "node http": (["node", os.path.join(ROOT, "examples/node/server.js")], "notify"),
    }
    try:
        import uvicorn  # noqa: F401  (run this script with a python3 that has it)
        servers["uvicorn"] = ([sys.executable, os.path.join(ROOT, "examples/python/uvicorn_server.py")], "1s")
    except ImportError:
        print("uvicorn is not installed for this python3: skipping it")
    print(f"{args.clients} keep-alive clients, {args.restarts} restarts, {args.pace}s apart\n")
    print(f"{'server':12} {'supervisor':16} {'requests':>9} {'failed':>7} {'connections':>12}  failures")
    for name, (command, ready) in servers.items():
        for supervisor in ("graceful-run", "Server::Starter"):
            port = free_port()
            if supervisor == "graceful-run":
                argv = [args.graceful_run, "-q", "-l", f"127.0.0.1:{port}", "--ready", ready,
                        "--", *command]
            else:
                # start_server passes the socket as fd 4 (SERVER_STARTER_PORT); the examples
                # read fd 3, so dup it there. The old worker gets TERM 1 s after the new one.
                argv = ["start_server", f"--port=127.0.0.1:{port}", "--", "sh", "-c",
                        'exec 3<&4 4<&-; exec "$@"', "sh", *command]
            ok, failed, connections = measure(argv, port, args.restarts, args.clients, args.pace)
            total = ok + sum(failed.values())
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(failed.items())) or "-"
            print(f"{name:12} {supervisor:16} {total:9} {sum(failed.values()):7} "
                  f"{connections:12}  {kinds}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
