// Writes docs/commands.md from the commands' --help texts (npm run docs:commands).
import fs from 'node:fs';
import { commandReference } from '../src/cli/program.js';

const file = new URL('../../docs/commands.md', import.meta.url);
fs.writeFileSync(file, commandReference());
process.stdout.write(`wrote ${file.pathname}\n`);
