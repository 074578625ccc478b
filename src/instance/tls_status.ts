/**
 * What status shows of a service's TLS: each certificate's names and
 * expiry (read once per config snapshot), the versions and ALPN it offers,
 * whether it asks for client certificates, and what its backends are
 * spoken to with. `node:crypto` is loaded only when some service has TLS.
 *
 * @module
 */
import type { Service, TlsCertificate } from "../config/schema.ts";
import { type CertificateFacts, certificateFacts } from "../config/certificates.ts";
import { usesTls } from "../engine/engine.ts";
import type { CertificateSample } from "../stats/metric_types.ts";

/** A certificate as status shows it. */
export interface CertificateStatus extends CertificateFacts {
  cert_file: string;
}

/** A service's TLS as status shows it. */
export interface TlsStatus {
  /** Terminated at bal (`tls:`): its certificates, the first the default. */
  certificates: CertificateStatus[];
  /** Routes' own certificates, by route name. */
  route_certificates: Record<string, CertificateStatus[]>;
  min_version: string;
  alpn: readonly string[];
  /** `required`, `optional`, or null when no client certificate is asked for. */
  client_auth: "required" | "optional" | null;
}

type Crypto = typeof import("node:crypto");

const facts = new WeakMap<TlsCertificate, CertificateStatus>();

function describe(crypto: Crypto, cert: TlsCertificate): CertificateStatus {
  let found = facts.get(cert);
  if (!found) {
    facts.set(
      cert,
      found = { cert_file: cert.cert_file, ...certificateFacts(crypto, cert.cert_pem) },
    );
  }
  return found;
}

/** Every certificate the services terminate with, for the metrics. */
export function certificateSamples(
  services: readonly Service[],
  tlsOf: (service: Service) => TlsStatus | null,
): CertificateSample[] {
  return services.flatMap((service) => {
    const tls = tlsOf(service);
    if (!tls) return [];
    const routes = Object.entries(tls.route_certificates);
    return [["", tls.certificates] as const, ...routes].flatMap(([route, certs]) =>
      certs.map((c) => ({
        service: service.name,
        route,
        cert_file: c.cert_file,
        names: c.names,
        not_after: Date.parse(c.not_after),
      }))
    );
  });
}

/** A function from service to its TLS status, with node:crypto loaded when `services` need it. */
export async function tlsStatusOf(
  services: Iterable<Service>,
): Promise<(service: Service) => TlsStatus | null> {
  if (![...services].some(usesTls)) return () => null;
  const crypto = await import("node:crypto");
  return (service) => {
    const tls = service.tls;
    if (!tls) return null;
    const list = (certs: readonly TlsCertificate[]) => certs.map((c) => describe(crypto, c));
    return {
      certificates: list(tls.certificates),
      route_certificates: Object.fromEntries(
        Object.entries(tls.route_certificates).map(([route, certs]) => [route, list(certs)]),
      ),
      min_version: tls.min_version,
      alpn: tls.alpn,
      client_auth: tls.client_ca ? tls.client_auth : null,
    };
  };
}
