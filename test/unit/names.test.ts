import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  analyseUnnamed,
  DAY,
  defaultSettings,
  mention,
  mentionedIn,
  nameFindings,
  type Finding,
  type SourceDay,
} from '../../src/analyse/index.js';

function finding(summary: string, sourceIp: string | null = null): Finding {
  return {
    key: 'k',
    kind: 'new_failing_source',
    severity: 'warning',
    domain: 'example.com',
    source_ip: sourceIp,
    source_name: null,
    reporter: null,
    summary,
    details: { n: 1 },
  };
}

describe('addresses in messages are named after the rules ran', () => {
  it('a mark becomes the address, with its label when there is one', () => {
    const f = finding(`most: ${mention('192.0.2.1')} 40, ${mention('192.0.2.10')} 30, ${mention('2001:db8::1')} 2`);
    const labels = new Map([
      ['192.0.2.1', 'mx1.example.net'],
      ['2001:db8::1', 'AS64500 Example, DE'],
    ]);
    nameFindings([f], { label: (ip) => labels.get(ip) });
    // 192.0.2.10 starts with 192.0.2.1 and stays bare: marks are whole addresses, not text matches.
    assert.equal(f.summary, 'most: 192.0.2.1 (mx1.example.net) 40, 192.0.2.10 30, 2001:db8::1 (AS64500 Example, DE) 2');
    assert.deepEqual(f.details, { n: 1 });
  });

  it('without labels the addresses are written bare, and no mark is ever left', () => {
    const f = finding(`new source ${mention('203.0.113.66')} sent 400 messages`, '203.0.113.66');
    nameFindings([f]);
    assert.equal(f.summary, 'new source 203.0.113.66 sent 400 messages');
    assert.equal(f.source_name, null);
    assert.doesNotMatch(f.summary, /[\uE000\uE001]/u);
  });

  it("source_name is the finding's own source's name; mark characters a report brought in are dropped", () => {
    // A selector from a hostile report carrying the mark characters around text that is not an address.
    const f = finding(`DKIM selector \uE000<script>\uE001 of ${mention('198.51.100.20')} fails \uE000`, '198.51.100.20');
    nameFindings([f], { label: () => 'out.esp.example', name: (ip) => (ip === '198.51.100.20' ? 'out.esp.example' : null) });
    assert.equal(f.summary, 'DKIM selector <script> of 198.51.100.20 (out.esp.example) fails ');
    assert.equal(f.source_name, 'out.esp.example');
  });

  it('a mark spelled out by a report is text: its address is neither named nor looked up', () => {
    const f = finding(`DKIM selector \uE000203.0.113.9\uE001 of ${mention('198.51.100.20')} fails`, '198.51.100.20');
    assert.deepEqual([...mentionedIn([f])], ['198.51.100.20']);
    nameFindings([f], { label: (ip) => `name of ${ip}` });
    assert.equal(f.summary, 'DKIM selector 203.0.113.9 of 198.51.100.20 (name of 198.51.100.20) fails');
  });

  it('mentionedIn lists the addresses the rules wrote, once each, in order', () => {
    const fs = [finding(`${mention('192.0.2.5')} and ${mention('192.0.2.6')}`), finding(`again ${mention('192.0.2.5')}, \uE000junk\uE001`)];
    assert.deepEqual([...mentionedIn(fs)], ['192.0.2.5', '192.0.2.6']);
  });

  it('the rules write marks: an unnamed evaluation names each source it mentions, and only through them', () => {
    const sources: SourceDay[] = [];
    for (let day = 60; day < 100; day++) {
      sources.push({
        domain: 'example.com',
        day,
        sourceIp: '192.0.2.10',
        headerFrom: 'example.com',
        messages: 100,
        dmarcPass: day >= 95 ? 10 : 100,
        dkimAlignedPass: day >= 95 ? 10 : 100,
        spfAlignedPass: 0,
        forwarded: 0,
        reject: 0,
        quarantine: 0,
        none: 100,
      });
    }
    const [f] = analyseUnnamed({ sources, dkim: [], tls: [], tlsFailures: [], coverage: [], policies: [] }, 100 * DAY, defaultSettings);
    assert.ok(f, 'a drop of the source');
    assert.deepEqual([...mentionedIn([f])], ['192.0.2.10']);
    nameFindings([f], { label: (ip) => `name of ${ip}` });
    assert.match(f.summary, /^mail from 192\.0\.2\.10 \(name of 192\.0\.2\.10\) for example\.com passing DMARC fell/);
  });
});
