// PM2's description of the Node peer of examples/js-app: cluster mode, two
// workers (one per core of the benchmark machine) sharing one port. The
// benchmark sets PORT and BUILD in the environment of `pm2 start`/`pm2
// reload`; a reload with a new BUILD stands for deploying new code.
'use strict';

module.exports = {
  apps: [
    {
      name: 'node-express',
      script: 'server.js',
      cwd: __dirname,
      exec_mode: 'cluster',
      instances: 2,
      // The benchmark owns the lifetime; a crashed worker should show up
      // as failed requests, not be hidden by restarts in a loop.
      autorestart: false,
      // An old worker finishes its jobs (500 ms by default) before it
      // exits; PM2 kills it after this long regardless.
      kill_timeout: 5000,
      env: {
        PORT: process.env.PORT,
        BUILD: process.env.BUILD || '1',
      },
    },
  ],
};
