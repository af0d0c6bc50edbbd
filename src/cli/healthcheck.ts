import { RuawatchError, errorMessage } from '../errors.js';
import { configFlag, defineCommand } from './command.js';
import { EXIT_FAILED, EXIT_OK, openConfig } from './common.js';

/** The address to ask for a `[web] listen` value: a wildcard is reached on loopback. */
export function healthzUrl(listen: string): string {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new RuawatchError('E_CONFIG', `[web] listen = "${listen}" is not host:port`);
  const [, host, port] = m as unknown as [string, string, string];
  if (Number(port) === 0)
    throw new RuawatchError('E_CONFIG', `[web] listen = "${listen}" asks for a random port: there is no fixed address to check`);
  let target = host;
  if (host === '' || host === '0.0.0.0') target = '127.0.0.1';
  else if (host === '::' || host === '::0') target = '::1';
  return `http://${target.includes(':') ? `[${target}]` : target}:${port}/healthz`;
}

export const healthcheckCommand = defineCommand(
  {
    name: 'healthcheck',
    summary: 'ask /healthz of a running ruawatch run',
    flags: {
      config: configFlag,
      timeout: { type: 'string', value: 'SECONDS', default: '4', help: 'how long to wait for the answer (default: 4)' },
    },
    about: `Asks /healthz of the ruawatch run that this configuration and environment describe, at [web]
listen (a wildcard 0.0.0.0 or [::] is asked on loopback), and prints the URL, the status and the
answer. Exit 0 on a 200, 1 otherwise, a configuration that cannot be read included (Docker
reserves 2): the container image's HEALTHCHECK.`,
    examples: ['ruawatch healthcheck --config /etc/ruawatch.toml --timeout 2'],
  },
  async ({ values }, io) => {
    // Docker reads exit 1 as unhealthy and reserves 2: every failure here, a config that cannot be
    // read included, is 1.
    try {
      const seconds = Number(values.timeout);
      if (!(seconds > 0)) throw new RuawatchError('E_USAGE', `--timeout wants a number of seconds, not "${values.timeout}"`);
      const url = healthzUrl(openConfig(values.config, io).config.web.listen);
      const res = await fetch(url, { signal: AbortSignal.timeout(seconds * 1000), redirect: 'error' });
      const body = (await res.text()).trim().slice(0, 500);
      io.stdout.write(`${url}: ${res.status} ${body}\n`);
      return res.status === 200 ? EXIT_OK : EXIT_FAILED;
    } catch (err) {
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
      io.stdout.write(`unhealthy: ${errorMessage(err)}${cause}\n`);
      return EXIT_FAILED;
    }
  },
);
