#!/usr/bin/env node
// The `ruawatch` program: runs one command line and exits with its code. What it does is in
// program.ts, which tests call in process.
import { errorMessage } from '../errors.js';
import { EXIT_FAILED } from './common.js';
import { main } from './program.js';

// A reader that stops early (`ruawatch report --json | head`) closes the pipe: what is left to
// print has nowhere to go, which is not an error of the command. Exit as a shell tool does.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ruawatch: ${errorMessage(err)}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
