"""A generation for bench/steering.py's readiness-to-steering measurement, run under
`graceful-run --ready notify`: it sends READY=1 and at once connects to its own port in a
loop; the first connection that lands on its own listener (fd 3, its member of the steering
group) tells how long graceful-run took to steer new connections to it. It appends
`{"us": N, "generation_after_first": BOOL}` to GR_BENCH_OUT, then accepts and closes every
connection until TERM kills it. Connections that land on the previous generation are closed
by that one's accept loop.
"""
import json
import os
import select
import socket
import threading
import time

listener = socket.socket(fileno=3)
port = listener.getsockname()[1]
# Its own listener: O_NONBLOCK on it changes nothing for the others (graceful-run clears the
# flag before it hands the member to another generation).
listener.setblocking(False)


def serve():
    while True:
        select.select([listener], [], [])
        try:
            conn, _ = listener.accept()
            conn.close()
        except BlockingIOError:
            pass


address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\0" + address[1:]
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
t0 = time.perf_counter_ns()
notify.sendto(b"READY=1", address)
landed = None
clients = []
while time.perf_counter_ns() - t0 < 2_000_000_000:
    client = socket.create_connection(("127.0.0.1", port))
    readable, _, _ = select.select([listener], [], [], 0)
    if readable:
        landed = time.perf_counter_ns()
        break
    clients.append(client)
for client in clients:
    client.close()
marker = os.path.join(os.path.dirname(os.environ["GR_BENCH_OUT"]), "first-done")
first = not os.path.exists(marker)
open(marker, "a").close()
with open(os.environ["GR_BENCH_OUT"], "a") as out:
    us = None if landed is None else (landed - t0) / 1000
    out.write(json.dumps({"us": us, "generation_after_first": not first}) + "\n")
threading.Thread(target=serve, daemon=True).start()
threading.Event().wait()
