// The Node peer of examples/js-app for the benchmark: the same routes on
// Express, the way the app of a "zero-downtime reloads with PM2"
// walkthrough is written, so the same clients can drive both.
//
//   GET  /              `hello from express gen<BUILD> (node <pid>)`: BUILD
//                       is set per deploy (the benchmark bumps it on every
//                       `pm2 reload`), the pid tells the workers apart
//   GET  /slow?ms=N     answers after N ms (0-10000, default 1000)
//   GET  /work?ms=N     202 at once; a job of N ms (default 500) runs after
//   POST /jobs?ms=N     the response (a timer) and counts itself
//   GET  /jobs          how many jobs this worker finished
//   GET  /count         increments this worker's counter, answers its value
//
// State lives in the worker's memory, as in the walkthrough: PM2's cluster
// workers share nothing, so /jobs and /count are per worker and start from
// zero after a reload (js-app keeps them in the host's key-value store).
//
// On SIGINT (what `pm2 reload` sends an old worker) it stops accepting,
// answers the requests it has with `Connection: close`, closes idle
// keep-alive connections, waits for its jobs, and exits: the graceful
// shutdown the walkthroughs teach.
'use strict';

const express = require('express');

const MAX_MS = 10000;
const port = Number(process.env.PORT);
const build = process.env.BUILD || '1';
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set to the port to listen on');
  process.exit(2);
}

let closing = false;
let pendingJobs = 0;
let jobsDone = 0;
let count = 0;

function millis(raw, fallback) {
  if (raw === undefined || raw === '') return fallback;
  const ms = /^\d+$/.test(raw) ? Number(raw) : NaN;
  return ms <= MAX_MS ? ms : null;
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');

app.use((req, res, next) => {
  if (closing) res.set('Connection', 'close');
  next();
});

app.get('/', (req, res) => {
  res.type('text/plain').send(`hello from express gen${build} (node ${process.pid})\n`);
});

app.get('/slow', (req, res) => {
  const ms = millis(req.query.ms, 1000);
  if (ms === null) return res.status(400).type('text/plain').send(`ms must be a whole number from 0 to ${MAX_MS}\n`);
  setTimeout(() => res.type('text/plain').send(`slept ${ms} ms\n`), ms);
});

function startJob(req, res) {
  const ms = millis(req.query.ms, 500);
  if (ms === null) return res.status(400).type('text/plain').send(`ms must be a whole number from 0 to ${MAX_MS}\n`);
  const started = Date.now();
  pendingJobs += 1;
  setTimeout(() => {
    pendingJobs -= 1;
    jobsDone += 1;
    console.log(`job done: ${ms} ms, ${Date.now() - started} ms after it arrived; ${jobsDone} jobs done`);
  }, ms);
  res.status(202).type('text/plain').send(`accepted: a ${ms} ms job runs after this response\n`);
}
app.get('/work', startJob);
app.post('/jobs', startJob);

app.get('/jobs', (req, res) => res.type('text/plain').send(`${jobsDone} jobs done\n`));

app.get('/count', (req, res) => {
  count += 1;
  res.type('text/plain').send(`${count}\n`);
});

app.use((req, res) => res.status(404).type('text/plain').send(`no route for ${req.method} ${req.path}\n`));

const server = app.listen(port, '127.0.0.1');

process.on('SIGINT', () => {
  closing = true;
  server.close();
  server.closeIdleConnections();
  // Exit once the jobs are done; PM2's kill_timeout is the upper bound.
  const exitWhenIdle = () => {
    if (pendingJobs === 0) process.exit(0);
    setTimeout(exitWhenIdle, 20);
  };
  exitWhenIdle();
});
