"""What the benchmark scripts of bench/ share: free ports, log lines, one GET, waiting for an
answer. Imported by scripts run as `python3 bench/NAME.py` (their directory is on sys.path)."""

import http.client
import socket
import sys
import time


def logger(figure):
    """A `log(msg)` that stamps each line with the time and the figure's number."""

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {figure}. {msg}", file=sys.stderr, flush=True)

    return log


def free_port():
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path="/", timeout=2.0):
    """The body of one `GET path` on a new connection to the loopback port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wait_answer(port, deadline_s=30, pause_s=0.01):
    """The first answer to `GET /` on the port, asking again until `deadline_s` has passed."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            return get(port, timeout=1)
        except OSError:
            time.sleep(pause_s)
    raise RuntimeError(f"nothing answers on port {port}")
