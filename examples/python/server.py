"""A standard-library HTTP server for graceful-run: it serves the listening socket on fd 3,
says READY=1, and on TERM or INT stops accepting and finishes the requests in flight.

    graceful-run -l 8080 --ready notify -- python3 server.py
"""
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no idle keep-alive connection outlives a stop.
    def do_GET(self):
        url, pid = urlparse(self.path), os.getpid()
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
            body = f"slow response from pid {pid} after {ms} ms\n".encode()
        else:
            body = f"hello from pid {pid}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Pid", str(pid))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() then waits for the requests in flight


def sd_notify(state):
    """Sends state to $NOTIFY_SOCKET, if set; '@' at the start means the abstract namespace."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), address)


server = Server(("", 0), Handler, bind_and_activate=False)
server.socket.close()  # the unbound socket the constructor made
server.socket = socket.socket(fileno=3)  # graceful-run's listener; left blocking, as it came


def stop(signum, frame):
    # shutdown() waits for serve_forever() to return, so it runs in a thread of its own.
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
sd_notify("READY=1")
server.serve_forever()
server.server_close()  # close(2) our fd (never shutdown(2)), wait for the requests in flight
