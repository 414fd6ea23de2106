// The Node peer of examples/chat for the benchmark: a `ws` WebSocket server
// that speaks the chat example's text protocol, so the same benchmark
// clients can drive both.
//
// - a WebSocket on any path; per text message:
//   - `echo:X` answers `gen<BUILD>:X` (BUILD is set per deploy, the way
//     wasm-host's generation counts versions);
//   - `say:X` sends `<name>: X` to every WebSocket of this process (PM2's
//     cluster workers share nothing, so a room spanning workers would need
//     a broker such as Redis; the benchmark only uses `echo:`);
//   - `later:X` sends `later:X` the same way 300 ms later;
//   - `close` closes with 4000 `bye`;
//   - anything else answers `unknown:<text>`.
//   A binary message is echoed back.
// - `GET /`: `chat gen<BUILD> node <pid>`, so a script can see which build
//   and which worker answered.
//
// On SIGINT (what `pm2 reload` sends an old worker) it closes every
// WebSocket with 1001 "going away" and exits, as a well-behaved server
// does, so clients see a clean close and reconnect to a new worker.
'use strict';

const http = require('node:http');
const { URL } = require('node:url');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT);
const build = process.env.BUILD || '1';
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set to the port to listen on');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  const body = `chat gen${build} node ${process.pid}\n`;
  // A length, not chunks: the benchmark reads this with a bare socket.
  res.writeHead(200, {
    'content-type': 'text/plain',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
});
const wss = new WebSocketServer({ server });

function toRoom(line) {
  for (const client of wss.clients) {
    if (client.readyState === client.OPEN) client.send(line);
  }
}

wss.on('connection', (ws, req) => {
  const name = new URL(req.url, 'http://chat').searchParams.get('name') || 'anon';
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      ws.send(data, { binary: true });
      return;
    }
    const text = data.toString();
    if (text.startsWith('echo:')) {
      ws.send(`gen${build}:${text.slice(5)}`);
    } else if (text.startsWith('say:')) {
      toRoom(`${name}: ${text.slice(4)}`);
    } else if (text.startsWith('later:')) {
      setTimeout(() => toRoom(text), 300);
    } else if (text === 'close') {
      ws.close(4000, 'bye');
    } else {
      ws.send(`unknown:${text}`);
    }
  });
  // A socket error (a client vanishing mid-write) must not take the
  // worker down with the other connections.
  ws.on('error', () => {});
});

process.on('SIGINT', () => {
  for (const client of wss.clients) client.close(1001, 'going away');
  server.close();
  // Let the close frames reach the clients, then go.
  setTimeout(() => process.exit(0), 200).unref();
});

server.listen(port, '127.0.0.1');
