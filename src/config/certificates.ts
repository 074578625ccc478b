/**
 * What bal checks in the certificate, key and CA files a config names,
 * once the file is read: each certificate parses, its key is its own, it
 * has not expired (an error) or does not expire within 14 days (a
 * warning); each CA file holds a certificate. `node:crypto` is loaded only
 * for a config that has such files. {@link certificateFacts} is what status
 * and the SNI choice read from a certificate.
 *
 * @module
 */
import type { PemCheck, PemRead } from "./tls.ts";
import { ConfigError } from "../errors.ts";

/** What a checked config holds that these checks read and add to. */
interface Checked {
  pems: PemCheck[];
  warnings: string[];
}
type Crypto = typeof import("node:crypto");

/** A certificate that expires sooner than this is warned about. */
const WARN_MS = 14 * 24 * 3600 * 1000;

/** `check` with its certificate files checked: errors, or the warnings added. */
export async function checkCertificates<C extends Checked>(
  check: C,
  now = Date.now(),
): Promise<C | { ok: false; errors: ConfigError[] }> {
  if (check.pems.length === 0) return check;
  const crypto = await import("node:crypto");
  const errors: ConfigError[] = [];
  const warnings = [...check.warnings];
  const fail = (read: PemRead, reason: string) =>
    errors.push(new ConfigError(read.location, read.path, reason));
  for (const pem of check.pems) {
    const said = problems(crypto, pem, now);
    for (const { read, reason, warning } of said) {
      if (warning) warnings.push(`${read.path}: ${reason}`);
      else fail(read, reason);
    }
  }
  return errors.length > 0 ? { ok: false, errors } : { ...check, warnings };
}

/** What is wrong with one certificate and its key, or one CA file. */
function problems(
  crypto: Crypto,
  pem: PemCheck,
  now: number,
): { read: PemRead; reason: string; warning?: true }[] {
  const cert = pem.kind === "pair" ? pem.cert : pem.ca;
  let x509: InstanceType<Crypto["X509Certificate"]>;
  try {
    x509 = new crypto.X509Certificate(cert.pem);
  } catch (err) {
    return [{ read: cert, reason: `${cert.file} holds no PEM certificate (${reasonOf(err)})` }];
  }
  const said: { read: PemRead; reason: string; warning?: true }[] = [];
  const end = Date.parse(x509.validTo);
  const day = new Date(end).toISOString().slice(0, 10);
  if (end < now) said.push({ read: cert, reason: `${cert.file} expired on ${day}` });
  else if (end - now < WARN_MS) {
    const days = Math.floor((end - now) / 86_400_000);
    said.push({
      read: cert,
      reason: `${cert.file} expires on ${day} (in ${days} days); renew it and reload`,
      warning: true,
    });
  }
  if (pem.kind === "ca") return said;
  try {
    const key = crypto.createPrivateKey(pem.key.pem);
    if (!x509.checkPrivateKey(key)) {
      said.push({ read: pem.key, reason: `${pem.key.file} is not the key of ${cert.file}` });
    }
  } catch (err) {
    said.push({
      read: pem.key,
      reason: `${pem.key.file} holds no PEM private key (${reasonOf(err)})`,
    });
  }
  return said;
}

function reasonOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** What status shows of a certificate, and the names SNI may choose it by. */
export interface CertificateFacts {
  /** Its DNS names (subjectAltName), or its common name when it has none; lowercase. */
  names: string[];
  /** When it expires, ISO 8601. */
  not_after: string;
}

/** The names and expiry of the first certificate in `pem` (node:crypto passed in, loaded). */
export function certificateFacts(crypto: Crypto, pem: string): CertificateFacts {
  const x509 = new crypto.X509Certificate(pem);
  const dns = (x509.subjectAltName ?? "").split(",").map((s) => s.trim())
    .filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4).toLowerCase());
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1]?.toLowerCase();
  return {
    names: dns.length > 0 ? dns : cn ? [cn] : [],
    not_after: new Date(Date.parse(x509.validTo)).toISOString(),
  };
}
