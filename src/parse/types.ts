/**
 * The normalised shapes every parser produces and the store consumes. Normalised once, here:
 * results lower-case in RFC spelling, domains, DKIM selectors and MX hosts lower-case without a
 * trailing dot, IPs canonical, times in UTC epoch seconds.
 */

export type ReportKind = 'dmarc' | 'tlsrpt' | 'failure';

/** The natural key a report is deduplicated on. */
export interface ReportKey {
  kind: ReportKind;
  reporter: string;
  reportId: string;
  policyDomain: string;
  begin: number;
  end: number;
}

export interface DmarcHeader extends ReportKey {
  kind: 'dmarc';
  /**
   * '2.0' for RFC 9990 (its namespace, or 2.0-only elements such as np, testing,
   * discovery_method, generator); '1.0' for RFC 7489 and the pre-RFC draft, which share a shape.
   */
  schema: '1.0' | '2.0';
  /** The <version> text as sent, if any. */
  version: string | null;
  reporterEmail: string | null;
  extraContactInfo: string | null;
  generator: string | null;
  errors: string[];
  policy: DmarcPolicyPublished;
}

export interface DmarcPolicyPublished {
  domain: string;
  adkim: string | null;
  aspf: string | null;
  p: string | null;
  sp: string | null;
  np: string | null;
  pct: number | null;
  fo: string | null;
  testing: string | null;
  discoveryMethod: string | null;
}

export interface DmarcRecord {
  /** Canonical IP (a report with a source IP that is not an IP address is refused). */
  sourceIp: string;
  count: number;
  disposition: string | null;
  /** policy_evaluated dkim and spf: DMARC-aligned results, 'pass' or 'fail'. */
  dkim: string | null;
  spf: string | null;
  reasons: { type: string | null; comment: string | null }[];
  headerFrom: string | null;
  envelopeFrom: string | null;
  envelopeTo: string | null;
  dkimResults: { domain: string | null; selector: string | null; result: string | null; humanResult: string | null }[];
  spfResults: { domain: string | null; scope: string | null; result: string | null; humanResult: string | null }[];
}

export interface TlsReport extends ReportKey {
  kind: 'tlsrpt';
  contactInfo: string | null;
  policies: TlsPolicy[];
}

export interface TlsPolicy {
  policyType: string;
  policyDomain: string | null;
  policyStrings: string[];
  mxHosts: string[];
  successful: number;
  failed: number;
  failures: TlsFailure[];
}

export interface TlsFailure {
  resultType: string;
  sendingMtaIp: string | null;
  receivingMxHostname: string | null;
  receivingMxHelo: string | null;
  receivingIp: string | null;
  failedSessions: number;
  additionalInformation: string | null;
  failureReasonCode: string | null;
}

/**
 * A DMARC failure report (RFC 9991 / RFC 6591), kept in summary form: no message bodies.
 * `begin` and `end` both hold the arrival time of the reported message.
 */
export interface FailureReport extends ReportKey {
  kind: 'failure';
  format: 'arf' | 'text';
  feedbackType: string;
  reporterEmail: string | null;
  sourceIp: string | null;
  reportedDomain: string;
  originalMailFrom: string | null;
  originalRcptTo: string | null;
  headerFrom: string | null;
  authFailure: string | null;
  deliveryResult: string | null;
  dkimDomain: string | null;
  dkimSelector: string | null;
  spfDns: string | null;
  identityAlignment: string | null;
  authenticationResults: string | null;
}
