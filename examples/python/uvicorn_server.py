"""uvicorn serving app.py's `asgi` on graceful-run's fd 3, as `uvicorn --fd 3 app:asgi` does,
with one change to uvicorn's shutdown order that makes restarts under load lose nothing:

    graceful-run -l 8080 --ready auto -- python3 uvicorn_server.py
"""
import asyncio

import uvicorn

from app import asgi


class Server(uvicorn.Server):
    async def shutdown(self, sockets=None):
        # uvicorn's shutdown closes every connection that has not sent a whole request yet,
        # including ones just accepted whose request is still unread in the socket buffer:
        # those clients see the connection closed. Stop accepting first, give the event loop
        # a moment to read those requests, then let uvicorn finish them as usual.
        for server in self.servers:
            server.close()  # closes our fd only: the next generation keeps the socket
        await asyncio.sleep(0.1)
        await super().shutdown(sockets)


if __name__ == "__main__":
    Server(uvicorn.Config(asgi, fd=3)).run()
