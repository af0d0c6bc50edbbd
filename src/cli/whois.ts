import path from 'node:path';
import type { Enrichment } from '../enrich/index.js';
import { RuawatchError, errorMessage } from '../errors.js';
import { configFlag, defineCommand, jsonFlag, usageLine } from './command.js';
import { appFor, EXIT_OK } from './common.js';

interface WhoisResult extends Enrichment {
  ptr: string | null;
  /** Why there is no name: the lookup failed (rather than there being none). */
  ptr_error?: string;
  /** true: the name resolves back to the address; false: it does not; null: not looked up or no answer. */
  ptr_confirmed: boolean | null;
}

/**
 * What ruawatch knows about addresses: network, country and known service, from the bundled data
 * (or the [enrich] files), and, unless --no-dns, the reverse DNS name and whether it is confirmed.
 * --dkim and --spf add the domains a record would carry, to see how they change the answer.
 */
export const whoisCommand = defineCommand(
  {
    name: 'whois',
    summary: 'network, country and known sending service of IP addresses, offline',
    flags: {
      db: {
        type: 'string',
        value: 'FILE',
        help: 'the database file, beside which compiled copies of [enrich] CSV files are kept (default: as for the other commands)',
      },
      config: configFlag,
      json: jsonFlag,
      'no-dns': { type: 'boolean', default: false, help: 'no reverse DNS lookup (also off with [analysis] reverse_dns = false)' },
      dkim: { type: 'string', value: 'DOMAIN', multiple: true, help: 'a DKIM domain a record carries, to see how it changes the answer' },
      spf: { type: 'string', value: 'DOMAIN', multiple: true, help: 'an SPF domain a record carries, to see how it changes the answer' },
    },
    args: 'IP...',
    about: `What ruawatch knows of each address: the network (AS number and organisation) and the country
from the bundled data (or the [enrich] files), the known mail service that sends from it, and,
unless --no-dns, its reverse DNS name and whether that name resolves back to it. Needs no network
but for DNS. Prints the data's source and date, and the attribution it asks for.`,
    examples: ['ruawatch whois --no-dns 209.85.220.41 2a01:111:f400:fe0c::72b', 'ruawatch whois --json --dkim google.com 209.85.220.41'],
  },
  async ({ values, positionals }, io) => {
    if (positionals.length === 0) throw new RuawatchError('E_USAGE', `no address given\n${usageLine(whoisCommand.spec)}`);
    const app = appFor(values, io, { level: 'warn' });
    const settings = app.config.enrich;
    if (!settings.enabled) throw new RuawatchError('E_CONFIG', 'enrichment is switched off ([enrich] enabled = false)');
    // Loaded here, not at the top: other commands never read the enrichment code or data.
    const { createEnricher, parseAddress, confirmReverseName, systemForwardLookup } = await import('../enrich/index.js');
    for (const ip of positionals) {
      if (!parseAddress(ip)) throw new RuawatchError('E_USAGE', `"${ip}" is not an IP address`);
    }
    // Compiled copies of CSV data files go beside the database, which ruawatch can write to.
    const cacheDir = path.dirname(path.resolve(app.dbFile));
    const enricher = createEnricher(settings, { cacheDir });
    // The App's reverse DNS: none when [analysis] reverse_dns is off.
    const reverse = values['no-dns'] ? null : app.lookup;
    const dns = reverse !== null;
    const forward = dns ? systemForwardLookup() : null;
    const results: WhoisResult[] = [];
    for (const ip of positionals) {
      let ptr: string | null = null;
      let ptrError: string | undefined;
      let confirmed: boolean | null = null;
      const special = enricher.enrich({ ip }).special;
      if (reverse && forward && !special) {
        try {
          ptr = await reverse(ip);
        } catch (err) {
          ptrError = errorMessage(err);
        }
        if (ptr) confirmed = await confirmReverseName(ip, ptr, forward);
      }
      const e = enricher.enrich({
        ip,
        ptr,
        ptrConfirmed: confirmed === true,
        dkimDomains: values.dkim ?? [],
        spfDomains: values.spf ?? [],
      });
      results.push({ ...e, ptr, ptr_confirmed: confirmed, ...(ptrError ? { ptr_error: ptrError } : {}) });
    }
    const data = enricher.data();
    const sources = [...data.asn, ...data.country].map((s) => ({
      kind: s.kind,
      file: s.file,
      format: s.format,
      source: s.description,
      built: s.built,
    }));
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ results, data: sources })}\n`);
      return EXIT_OK;
    }
    const out: string[] = [];
    for (const r of results) {
      out.push(r.ip);
      if (r.special) out.push(`  ${'special'.padEnd(9)} ${r.special}`);
      else {
        out.push(
          `  ${'network'.padEnd(9)} ${r.asn === null ? 'unknown (in no range of the data)' : `AS${r.asn}${r.as_org ? ` ${r.as_org}` : ''}`}`,
        );
        out.push(`  ${'country'.padEnd(9)} ${r.country ?? 'unknown'}`);
        const rdns = !dns
          ? 'not looked up'
          : r.ptr
            ? `${r.ptr} (${confirmWord(r.ptr_confirmed)})`
            : r.ptr_error
              ? `lookup failed: ${r.ptr_error}`
              : 'none';
        out.push(`  ${'reverse'.padEnd(9)} ${rdns}`);
      }
      const [best, ...more] = r.matches;
      out.push(`  ${'service'.padEnd(9)} ${best ? describeMatch(best) : 'not a known mail service'}`);
      for (const m of more) out.push(`  ${''.padEnd(9)} also ${describeMatch(m)}`);
    }
    out.push('');
    out.push(`data: ${sources.map((s) => `${s.kind} from ${s.source}${s.built ? `, built ${s.built}` : ''}`).join('; ')}`);
    // CC BY 4.0 asks for attribution wherever the data is shown (docs/enrichment.md, "Licences").
    if (sources.some((s) => s.source.startsWith('@ip-location-db/'))) out.push(ATTRIBUTION);
    io.stdout.write(`${out.join('\n')}\n`);
    return EXIT_OK;
  },
);

const ATTRIBUTION = 'network data: ip-location-db, from RouteViews (routeviews.org), NRO (nro.net) and DB-IP (db-ip.com), CC BY 4.0';

function confirmWord(c: boolean | null): string {
  return c === true ? 'forward-confirmed' : c === false ? 'does not resolve back to this address' : 'forward lookup failed';
}

const BY: Record<string, string> = {
  ip_range: 'address range',
  ptr: 'reverse DNS',
  asn: 'network',
  dkim: 'DKIM domain',
  spf: 'SPF domain',
  as_org: 'network name',
  ptr_unconfirmed: 'unconfirmed reverse DNS',
};

function describeMatch(m: { service: string; service_type: string; matched_by: string; evidence: string }): string {
  return `${m.service} (${m.service_type}; by ${BY[m.matched_by] ?? m.matched_by} ${m.evidence})`;
}
