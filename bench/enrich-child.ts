/**
 * The enrichment case of `npm run bench`: loads the bundled data the way `createEnricher` does on
 * its first lookup and measures what that costs (time, resident memory), then lookups per address,
 * cold and cached, and compiling the ASN CSVs as a user's newer files would be. Prints JSON. Its
 * own process, so the memory figures belong to this case alone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { configSchema } from '../src/config/schema.js';
import { enricherOver, loadEnricherData } from '../src/enrich/index.js';

const mib = (n: number) => n / 1048576;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const settings = configSchema.parse({}).enrich;

/** Deterministic pseudo-random numbers (xorshift32), so every run looks up the same addresses. */
let seed = 0x2545f491;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const byte = () => Math.floor(rand() * 256);
// Public-looking IPv4 (first octet 1-223), and IPv6 in /16s where much of the allocated space is.
const V6_PREFIXES = [
  '2001',
  '2400',
  '2401',
  '2402',
  '2404',
  '2600',
  '2602',
  '2604',
  '2605',
  '2607',
  '2610',
  '2800',
  '2a00',
  '2a01',
  '2a02',
  '2a03',
  '2a04',
  '2a05',
  '2a06',
  '2a0e',
  '2c0f',
];
const v4 = Array.from({ length: 100_000 }, () => `${1 + Math.floor(rand() * 223)}.${byte()}.${byte()}.${byte()}`);
const v6 = Array.from({ length: 20_000 }, () => {
  const g = () => Math.floor(rand() * 65536).toString(16);
  return `${V6_PREFIXES[Math.floor(rand() * V6_PREFIXES.length)]}:${g()}:${g()}::${g()}`;
});

gc();
const rssBefore = process.memoryUsage().rss;
let t = performance.now();
const data = loadEnricherData(settings);
const loadMs = performance.now() - t;
const enricher = enricherOver(data, 1 << 20);
// The first lookup touches every part once (services map, decoder).
enricher.enrich({ ip: '8.8.8.8', ptr: 'dns.google', ptrConfirmed: true, dkimDomains: ['example.com'], spfDomains: ['example.com'] });
gc();
const rssLoaded = process.memoryUsage().rss;

const perLookup = (ips: string[], q: (ip: string) => Parameters<typeof enricher.enrich>[0]) => {
  const start = performance.now();
  let named = 0;
  for (const ip of ips) if (enricher.enrich(q(ip)).asn !== null) named++;
  return { us: ((performance.now() - start) * 1000) / ips.length, named };
};
const cold4 = perLookup(v4, (ip) => ({ ip }));
const cold6 = perLookup(v6, (ip) => ({ ip }));
const cached = perLookup(v4, (ip) => ({ ip }));
const withDomains = perLookup(v4, (ip) => ({
  ip,
  ptr: 'mail.example.net',
  ptrConfirmed: true,
  dkimDomains: ['example.com', 'sendgrid.net'],
  spfDomains: ['bounces.example.com'],
}));
gc();
const rssAfter = process.memoryUsage().rss;

// What a user's newer CSVs cost: compiled on first use (once; then read from the cache).
const require = createRequire(import.meta.url);
const asnDir = path.dirname(require.resolve('@ip-location-db/asn/package.json'));
const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ruawatch-bench-enrich-'));
const userSettings = { ...settings, asn_files: ['asn-ipv4.csv', 'asn-ipv6.csv'].map((f) => path.join(asnDir, f)) };
t = performance.now();
const cpu0 = process.cpuUsage();
loadEnricherData(userSettings, { cacheDir });
const compileMs = performance.now() - t;
const compileCpu = process.cpuUsage(cpu0);
t = performance.now();
loadEnricherData(userSettings, { cacheDir });
const cachedLoadMs = performance.now() - t;
fs.rmSync(cacheDir, { recursive: true, force: true });

process.stdout.write(
  JSON.stringify({
    loadMs,
    rssBeforeMiB: mib(rssBefore),
    rssLoadedMiB: mib(rssLoaded),
    rssAfterMiB: mib(rssAfter),
    cold4,
    cold6,
    cached,
    withDomains,
    lookups: { v4: v4.length, v6: v6.length },
    compileMs,
    compileCpuMs: (compileCpu.user + compileCpu.system) / 1000,
    cachedLoadMs,
  }),
);
