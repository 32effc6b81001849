// An HTTP server for graceful-run: it serves the listening socket on fd 3, says READY=1
// through `graceful-run notify` (Node cannot send unix datagrams), and on TERM or INT stops
// accepting, closes idle keep-alive connections and finishes the requests in flight.
//
//   graceful-run -l 8080 --ready notify -- node server.js
'use strict';
const http = require('http');
const { execFile } = require('child_process');

let stopping = false;
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const ms = url.pathname === '/slow' ? Number(url.searchParams.get('ms') ?? 1000) : 0;
  setTimeout(() => {
    const body = ms ? `slow response from pid ${process.pid} after ${ms} ms\n`
                    : `hello from pid ${process.pid}\n`;
    // Once stopping, end each connection after its response instead of keeping it alive.
    if (stopping) res.setHeader('Connection', 'close');
    res.writeHead(200, { 'Content-Length': Buffer.byteLength(body), 'X-Pid': process.pid });
    res.end(body);
  }, ms);
});

// fd 3 is graceful-run's listener. libuv makes it non-blocking; every generation of this
// server copes with that, so leave it so.
server.listen({ fd: 3 }, () => {
  if (process.env.NOTIFY_SOCKET) {
    execFile('graceful-run', ['notify', '--ready'], (err, _out, stderr) => {
      if (err) console.error(`graceful-run notify failed: ${stderr || err.message}`);
    });
  }
});

function stop() {
  stopping = true;
  // close() closes our fd (never shutdown(2): the next generation shares the socket) and
  // calls back once every connection has ended; closeIdleConnections() ends the idle ones.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
