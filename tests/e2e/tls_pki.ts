/**
 * A test's own certificates, made with the openssl CLI in a temp dir: a
 * CA, server certificates for names, client certificates, all ECDSA P-256
 * (quick to make). Used by tls_test.ts.
 */
import { runCommand } from "../helpers.ts";

/** A certificate and its key, as files. */
export interface Issued {
  cert: string;
  key: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const r = await runCommand("openssl", args, { cwd: dir });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** A self-signed CA named `name` in `dir`. */
export async function makeCa(dir: string, name: string): Promise<Issued> {
  const out = { cert: `${dir}/${name}.crt`, key: `${dir}/${name}.key` };
  await openssl(dir, [
    "req",
    "-x509",
    ...EC,
    "-keyout",
    out.key,
    "-out",
    out.cert,
    "-subj",
    `/CN=${name}`,
    "-days",
    "30",
  ]);
  return out;
}

/**
 * A certificate for `cn` (and the DNS names in `names`, for a server)
 * signed by `ca`, valid `days` days (negative: expired `-days` ago).
 */
export async function issue(
  dir: string,
  ca: Issued,
  cn: string,
  options: { names?: string[]; days?: number; file?: string } = {},
): Promise<Issued> {
  const base = `${dir}/${options.file ?? cn}`;
  const out = { cert: `${base}.crt`, key: `${base}.key` };
  await openssl(dir, [
    "req",
    ...EC,
    "-keyout",
    out.key,
    "-out",
    `${base}.csr`,
    "-subj",
    `/CN=${cn}`,
  ]);
  const ext = `${base}.ext`;
  const names = options.names ?? [];
  Deno.writeTextFileSync(
    ext,
    names.length ? `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\n` : "\n",
  );
  // openssl takes a negative count: a certificate that expired that many days ago.
  const validity = ["-days", String(options.days ?? 30)];
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${base}.csr`,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-CAcreateserial",
    "-out",
    out.cert,
    "-extfile",
    ext,
    ...validity,
  ]);
  return out;
}
