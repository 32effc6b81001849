// An HTTP server for graceful-run: it serves the listening socket on fd 3, says READY=1
// through `graceful-run notify` (Node cannot send unix datagrams), and on TERM or INT stops
// accepting, finishes the requests in flight, answers each keep-alive connection's next
// request with `Connection: close`, and closes the connections still idle a second later.
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
  if (stopping) return;
  stopping = true;
  // net.Server's close() closes our fd (never shutdown(2): the next generation shares the
  // socket) and calls back once every connection has ended. Not http.Server's: since Node 19
  // it also closes idle keep-alive connections at once, just as a busy client sends its next
  // request on one. Each connection's next response says `Connection: close` instead (see
  // above); what is still idle a second later is closed then.
  require('net').Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => server.closeIdleConnections(), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
