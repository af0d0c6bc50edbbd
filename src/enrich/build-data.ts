/**
 * Build step (`npm run build`, `npm run build:app`): the network data bundled with ruawatch, from the ip-location-db
 * packages (dev dependencies) into dist/src/enrich/data/, which is what ships:
 *   asn.rwrt      @ip-location-db/asn's asn-ipv4.csv + asn-ipv6.csv compiled into a range table
 *   country.mmdb  @ip-location-db/geo-whois-asn-country-mmdb's geo-whois-asn-country.mmdb, as is
 *   and the licence texts the data comes with, with SOURCES.json naming the package versions.
 * Skipped when the outputs already come from the installed package versions.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { RangeTable } from './ranges.js';
import { BUNDLED_ASN, BUNDLED_COUNTRY, BUNDLED_DIR } from './sources.js';

const require = createRequire(import.meta.url);
const pkgDir = (name: string) => path.dirname(require.resolve(`${name}/package.json`));
const version = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;

/** ip-location-db versions end in the date and hour the data was built: 2.3.2026061719 is 2026-06-17, 19:00 UTC. */
function builtOf(v: string): string {
  const m = /(\d{4})(\d{2})(\d{2})\d{2}$/.exec(v);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : 'unknown';
}

const asnDir = pkgDir('@ip-location-db/asn');
const countryDir = pkgDir('@ip-location-db/geo-whois-asn-country-mmdb');
const asnSource = `@ip-location-db/asn ${version(asnDir)}`;
const countrySource = `@ip-location-db/geo-whois-asn-country-mmdb ${version(countryDir)}`;
const stampFile = path.join(BUNDLED_DIR, 'SOURCES.json');

const stamp = JSON.stringify({ asn: asnSource, country: countrySource });
const current =
  fs.existsSync(stampFile) && fs.existsSync(BUNDLED_ASN) && fs.existsSync(BUNDLED_COUNTRY) ? fs.readFileSync(stampFile, 'utf8') : '';
if (current === stamp) process.exit(0);

const started = performance.now();
fs.mkdirSync(BUNDLED_DIR, { recursive: true });
const files = ['asn-ipv4.csv', 'asn-ipv6.csv'].map((f) => ({ name: f, bytes: fs.readFileSync(path.join(asnDir, f)) }));
const table = RangeTable.compile('asn', files, { source: asnSource, built: builtOf(version(asnDir)) });
fs.writeFileSync(BUNDLED_ASN, table.serialize());
fs.copyFileSync(path.join(countryDir, 'geo-whois-asn-country.mmdb'), BUNDLED_COUNTRY);
const licences: [string, string][] = [
  [path.join(asnDir, 'ROUTEVIEWS-LICENSE'), 'LICENSE-asn-routeviews.txt'],
  [path.join(asnDir, 'DBIP-LICENSE'), 'LICENSE-asn-dbip.txt'],
  [path.join(asnDir, 'NRO_LICENSE'), 'LICENSE-asn-nro.txt'],
  [path.join(countryDir, 'NRO_LICENSE'), 'LICENSE-country-nro.txt'],
];
for (const [from, to] of licences) fs.copyFileSync(from, path.join(BUNDLED_DIR, to));
fs.writeFileSync(stampFile, stamp);
const size = (f: string) => `${(fs.statSync(f).size / 1048576).toFixed(1)} MiB`;
console.log(
  `enrich data: ${asnSource} -> asn.rwrt (${table.ipv4Ranges.toLocaleString('en-US')} IPv4 + ${table.ipv6Ranges.toLocaleString('en-US')} IPv6 ranges, ` +
    `${size(BUNDLED_ASN)}) in ${((performance.now() - started) / 1000).toFixed(1)} s; ${countrySource} -> country.mmdb (${size(BUNDLED_COUNTRY)})`,
);
