// PM2's description of the Node chat peer: cluster mode, two workers (one
// per core of the benchmark machine) sharing one port. The benchmark sets
// PORT and BUILD in the environment of `pm2 start`/`pm2 reload`; a reload
// with a new BUILD stands for deploying new code.
'use strict';

module.exports = {
  apps: [
    {
      name: 'node-chat',
      script: 'server.js',
      cwd: __dirname,
      exec_mode: 'cluster',
      instances: 2,
      // The benchmark owns the lifetime; a crashed worker should show up
      // as lost messages, not be hidden by restarts in a loop.
      autorestart: false,
      env: {
        PORT: process.env.PORT,
        BUILD: process.env.BUILD || '1',
      },
    },
  ],
};
