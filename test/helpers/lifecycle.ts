import { rng } from '../../devtools/corpus.js';
import { DAY } from '../../src/analyse/index.js';
import { aggregateXml as scenarioXml, dayIso, tlsReportJson, type Rec } from './scenario.js';
import { gzip } from './synth.js';

/**
 * Ten weeks of daily reports for example.com (p=none), as a mail admin lives with them: aggregate
 * reports from Google and Yahoo, TLS reports from Google and Microsoft, volumes varying by ±20%,
 * Yahoo missing a day now and then, a forwarder, a mailing list, a printer that always fails a
 * little, a trickle of spam from ever-changing addresses, and a one-day blip. From day 36 on,
 * incidents that last 10-14 days each (INCIDENTS). Day 0 is a Monday.
 */

export const L0 = Date.UTC(2026, 6, 6) / 1000 / DAY; // Monday 2026-07-06
export const LAST_DAY = 71;
export const YAHOO = 'Yahoo';

export interface Incident {
  /** What happens, in a postmaster's words. */
  name: string;
  /** The alert keys it is expected to open. */
  keys: string[];
  /** The first day it shows in the reports, and the first day it no longer does. */
  start: number;
  end: number;
  /** How many days after `start` the alert may open (an evaluation sees the days before it). */
  detectWithin: number;
  /** Messages per channel for each of its alerts: opened, escalations or reminders, resolved. */
  messages: number;
}

export const INCIDENTS: Incident[] = [
  {
    name: 'forger: 203.0.113.99 sends mail signed s1 that fails, as example.com',
    keys: ['new_failing_source:example.com:203.0.113.99'],
    start: 36,
    end: 50,
    detectWithin: 1,
    messages: 2,
  },
  {
    // One alert: the selector's, which names the source it breaks DMARC for.
    name: 'CRM key broken: every message of 192.0.2.30 fails DKIM crm1, and DMARC',
    keys: ['dkim_selector_broken:example.com:example.com:crm1'],
    start: 40,
    end: 52,
    detectWithin: 1,
    messages: 2,
  },
  {
    name: 'mx2 certificate expired: about half of the sessions to mx2 fail, Google and Microsoft report',
    keys: ['tls_failures:example.com:mx2.example.com:certificate-expired'],
    start: 42,
    end: 54,
    detectWithin: 1,
    messages: 3,
  },
  {
    name: 'spoofer seen once on day 20: 200 failing messages a day, 800 from day 51',
    keys: ['new_failing_source:example.com:203.0.113.66'],
    start: 44,
    end: 58,
    detectWithin: 1,
    messages: 3,
  },
  {
    // 98% passing, 3 points less every day from day 40: 21 points down on day 46.
    name: 'gradual decline: the ESP signs ever more mail with its own domain (not aligned)',
    keys: ['pass_rate_drop:example.com:198.51.100.20'],
    start: 46,
    end: 58,
    detectWithin: 2,
    messages: 3,
  },
  {
    // Silent from day 50: reporter_silent needs silent_days (3) without a report.
    name: 'Yahoo silent for two weeks',
    keys: [`reporter_silent:dmarc:example.com:${YAHOO}`],
    start: 50,
    end: 64,
    detectWithin: 3,
    messages: 2,
  },
  {
    name: 's1 key rotated without DNS: the own servers fail DKIM s1 (SPF keeps DMARC passing)',
    keys: ['dkim_selector_broken:example.com:example.com:s1'],
    start: 56,
    end: 67,
    detectWithin: 1,
    messages: 2,
  },
];

/** The one-day blip: on day 38, 40% of the main server's mail fails DKIM and SPF. */
export const BLIP_DAY = 38;

const iso = (d: number) => dayIso(L0 + d);

/** Day d's aggregate report: days from L0, sources sending nothing that day left out, p=none. */
function aggregateXml(reporter: string, email: string, d: number, recs: Rec[]): string {
  return scenarioXml(
    reporter,
    email,
    L0 + d,
    recs.filter((r) => r.count > 0),
    'none',
  );
}

const between = (d: number, from: number, to: number) => d >= from && d < to;

/** The reports of day `d`, as their reporters send them (gzip for Google and Microsoft). */
export function lifecycleReports(d: number): { name: string; bytes: Buffer }[] {
  const rnd = rng(1000 + d);
  const vary = (n: number) => Math.round(n * (0.8 + 0.4 * rnd()));
  const out: { name: string; bytes: Buffer }[] = [];
  const split = (n: number, share: number) => Math.round(n * share);

  // Per reporter: Google sees 75% of the mail, Yahoo 25%.
  const recsFor = (share: number, who: 'google' | 'yahoo'): Rec[] => {
    const recs: Rec[] = [];
    const s1 = between(d, 56, 67) ? 'fail' : 'pass';
    const signedS1 = (ip: string, n: number, dmarcFailing = 0) => {
      // The own servers: DKIM s1 and SPF aligned.
      recs.push({
        ip,
        count: n - dmarcFailing,
        dkim: [{ d: 'example.com', s: 's1', result: s1 }],
        spf: { d: 'example.com', result: 'pass' },
        dkimAligned: s1 === 'pass' ? 'pass' : 'fail',
        spfAligned: 'pass',
      });
      if (dmarcFailing)
        recs.push({
          ip,
          count: dmarcFailing,
          dkim: [{ d: 'example.com', s: 's1', result: 'fail' }],
          spf: { d: 'example.com', result: 'fail' },
          dkimAligned: 'fail',
          spfAligned: 'fail',
        });
    };
    const main = split(vary(400), share);
    signedS1('192.0.2.10', main, d === BLIP_DAY ? Math.round(main * 0.4) : 0);
    signedS1('192.0.2.40', split(vary(80), share));

    // The ESP: DKIM esp1 aligned; SPF with its own bounce domain. From day 40 it signs 3 points
    // more of the mail with its own domain every day, until day 58.
    const esp = split(vary(160), share);
    const unaligned = between(d, 40, 58) ? Math.min(1, 0.02 + 0.03 * (d - 39)) : 0.02;
    const espBad = Math.round(esp * unaligned);
    recs.push({
      ip: '198.51.100.20',
      count: esp - espBad,
      dkim: [{ d: 'example.com', s: 'esp1', result: 'pass' }],
      spf: { d: 'bounces.esp.example', result: 'pass' },
      dkimAligned: 'pass',
      spfAligned: 'fail',
    });
    recs.push({
      ip: '198.51.100.20',
      count: espBad,
      dkim: [{ d: 'esp.example', s: 'k1', result: 'pass' }],
      spf: { d: 'bounces.esp.example', result: 'pass' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
    });

    // The CRM: DKIM crm1 only; its key breaks on days 40-51.
    const crmBroken = between(d, 40, 52);
    recs.push({
      ip: '192.0.2.30',
      count: split(vary(100), share),
      dkim: [{ d: 'example.com', s: 'crm1', result: crmBroken ? 'fail' : 'pass' }],
      spf: { d: 'crm.example', result: 'pass' },
      dkimAligned: crmBroken ? 'fail' : 'pass',
      spfAligned: 'fail',
    });

    // The forwarder, relaying the people's mail (signed s2 by the mailbox server): DKIM survives,
    // SPF fails as always; some of it fails both, marked forwarded.
    recs.push({
      ip: '192.0.2.200',
      count: split(vary(50), share),
      dkim: [{ d: 'example.com', s: 's2', result: 'pass' }],
      spf: { d: 'forwarder.example', result: 'fail' },
      dkimAligned: 'pass',
      spfAligned: 'fail',
    });
    recs.push({
      ip: '192.0.2.200',
      count: split(vary(12), share),
      dkim: [{ d: 'example.com', s: 's2', result: 'fail' }],
      spf: { d: 'forwarder.example', result: 'fail' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
      reason: 'forwarded',
    });
    // A mailing list: most posts keep their signature, a third do not (marked mailing_list by Google only).
    const list = split(vary(45), share);
    recs.push({
      ip: '192.0.2.210',
      count: list - Math.round(list / 3),
      dkim: [{ d: 'example.com', s: 's2', result: 'pass' }],
      spf: { d: 'lists.example.org', result: 'pass' },
      dkimAligned: 'pass',
      spfAligned: 'fail',
    });
    recs.push({
      ip: '192.0.2.210',
      count: Math.round(list / 3),
      dkim: [{ d: 'example.com', s: 's2', result: 'fail' }],
      spf: { d: 'lists.example.org', result: 'pass' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
      ...(who === 'google' ? { reason: 'mailing_list' } : {}),
    });
    // The office printer: SPF only, and 15% of it from a misconfigured relay that fails.
    const printer = split(vary(30), share);
    recs.push({
      ip: '192.0.2.50',
      count: printer - Math.round(printer * 0.15),
      dkim: [],
      spf: { d: 'example.com', result: 'pass' },
      dkimAligned: 'fail',
      spfAligned: 'pass',
    });
    recs.push({
      ip: '192.0.2.50',
      count: Math.round(printer * 0.15),
      dkim: [],
      spf: { d: 'example.com', result: 'softfail' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
    });
    // A trickle of spam: a few messages a day from addresses that change every day.
    for (let i = 0; i < 3; i++) {
      recs.push({
        ip: `203.0.113.${128 + Math.floor(rnd() * 120)}`,
        count: 1 + Math.floor(rnd() * 3),
        dkim: [],
        spf: { d: 'example.com', result: 'fail' },
        dkimAligned: 'fail',
        spfAligned: 'fail',
      });
    }
    // The spoofer: seen once with a handful on day 20, then 200 a day, 800 from day 51.
    const spoof = d === 20 ? 5 : between(d, 44, 51) ? vary(200) : between(d, 51, 58) ? vary(800) : 0;
    recs.push({
      ip: '203.0.113.66',
      count: split(spoof, share),
      dkim: [],
      spf: { d: 'example.com', result: 'fail' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
    });
    // The forger: claims s=s1; d=example.com, which never verifies.
    recs.push({
      ip: '203.0.113.99',
      count: between(d, 36, 50) ? split(vary(150), share) : 0,
      dkim: [{ d: 'example.com', s: 's1', result: 'fail' }],
      spf: { d: 'forger.example', result: 'none' },
      dkimAligned: 'fail',
      spfAligned: 'fail',
    });
    return recs;
  };

  out.push({
    name: `google-${d}.xml.gz`,
    bytes: gzip(aggregateXml('google.com', 'noreply-dmarc-support@google.com', d, recsFor(0.75, 'google'))),
  });
  const yahooAway = [9, 17, 26, 33, 41, 47].includes(d) || between(d, 50, 64);
  if (!yahooAway)
    out.push({ name: `yahoo-${d}.xml`, bytes: Buffer.from(aggregateXml(YAHOO, 'dmarchelp@yahooinc.com', d, recsFor(0.25, 'yahoo'))) });

  // TLS: sessions to mx1 and mx2 in equal numbers; while mx2's certificate is expired (days
  // 42-53), 60-75% of the sessions to mx2 fail: about half of mx2's sessions as the rollups count.
  for (const [org, contact, sessions] of [
    ['Google Inc.', 'smtp-tls-reporting@google.com', 1000],
    ['Microsoft Corporation', 'tlsrpt-noreply@microsoft.com', 400],
  ] as const) {
    const n = vary(sessions);
    const failed = between(d, 42, 54) ? Math.round((n / 2) * (0.6 + 0.15 * rnd())) : 0;
    out.push({
      name: `${org.split(' ')[0]!.toLowerCase()}-tls-${d}.json.gz`,
      bytes: gzip(
        tlsReportJson({
          org,
          contact,
          reportId: `${org}-${iso(d)}`,
          day: L0 + d,
          successful: n - failed,
          failures: failed ? [{ mx: 'mx2.example.com', type: 'certificate-expired', sessions: failed }] : [],
        }),
      ),
    });
  }
  return out;
}
