#!/usr/bin/env node
// The `ruawatch` program: runs one command line and exits with its code. What it does is in
// program.ts, which tests call in process.
import { errorMessage } from '../errors.js';
import { EXIT_FAILED } from './common.js';
import { main } from './program.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`ruawatch: ${errorMessage(err)}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
