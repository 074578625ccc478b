/**
 * DNS messages on the wire (RFC 1035 §4, RFC 2782 for SRV, RFC 3596 for
 * AAAA): a query out, the answers with their TTLs in. Pure: bytes in and
 * out, every length checked. bal asks its own questions because
 * `Deno.resolveDns` does not say how long an answer may be kept, and
 * discovery re-resolves by the records' TTL.
 *
 * @module
 */
import { ipText } from "./address.ts";

/** Record types bal asks for. */
export const RR = { A: 1, CNAME: 5, AAAA: 28, SRV: 33 } as const;
/** A record type bal asks for. */
export type RecordType = "A" | "AAAA" | "SRV";

/** One answer record. */
export type Answer =
  | { type: "A" | "AAAA"; name: string; ttl: number; address: string }
  | {
    type: "SRV";
    name: string;
    ttl: number;
    priority: number;
    weight: number;
    port: number;
    target: string;
  }
  | { type: "CNAME"; name: string; ttl: number; target: string };

/** A response: its id, its status code (0 no error, 3 no such name) and its answers. */
export interface Response {
  id: number;
  rcode: number;
  /** TC: the answer did not fit in a UDP message. */
  truncated: boolean;
  answers: Answer[];
  /** The lowest SOA minimum in the authority section (how long "no records" may be kept), or null. */
  negativeTtl: number | null;
}

/** A query for `name`'s records of `type`, recursion desired. */
export function encodeQuery(id: number, name: string, type: RecordType): Uint8Array {
  const labels = name.replace(/\.$/, "").split(".").filter((l) => l.length > 0);
  const qname = labels.reduce((n, l) => n + 1 + new TextEncoder().encode(l).length, 1);
  const out = new Uint8Array(12 + qname + 4);
  const view = new DataView(out.buffer);
  view.setUint16(0, id);
  view.setUint16(2, 0x0100); // RD
  view.setUint16(4, 1); // one question
  let at = 12;
  for (const label of labels) {
    const bytes = new TextEncoder().encode(label);
    if (bytes.length > 63) throw new RangeError(`DNS label longer than 63 bytes in ${name}`);
    out[at++] = bytes.length;
    out.set(bytes, at);
    at += bytes.length;
  }
  out[at++] = 0;
  view.setUint16(at, RR[type]);
  view.setUint16(at + 2, 1); // IN
  return out;
}

/** A response, or why it cannot be read. */
export function decodeResponse(buf: Uint8Array): Response | string {
  if (buf.length < 12) return "DNS response shorter than its header";
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = view.getUint16(2);
  if (!(flags & 0x8000)) return "not a DNS response";
  const counts = [view.getUint16(4), view.getUint16(6), view.getUint16(8)];
  let at = 12;
  for (let i = 0; i < counts[0]; i++) {
    const name = readName(buf, at);
    if (typeof name === "string") return name;
    at = name.end + 4;
  }
  const answers: Answer[] = [];
  let negativeTtl: number | null = null;
  for (let i = 0; i < counts[1] + counts[2]; i++) {
    const rr = readRecord(buf, view, at);
    if (typeof rr === "string") return rr;
    at = rr.end;
    if (i < counts[1] && rr.answer) answers.push(rr.answer);
    if (i >= counts[1] && rr.soaMinimum !== null) {
      negativeTtl = Math.min(negativeTtl ?? Infinity, rr.soaMinimum, rr.ttl);
    }
  }
  return {
    id: view.getUint16(0),
    rcode: flags & 0xf,
    truncated: (flags & 0x0200) !== 0,
    answers,
    negativeTtl,
  };
}

/** One resource record at `at`: an answer bal uses (or null), the SOA minimum, where it ends. */
function readRecord(
  buf: Uint8Array,
  view: DataView,
  at: number,
): { answer: Answer | null; soaMinimum: number | null; ttl: number; end: number } | string {
  const owner = readName(buf, at);
  if (typeof owner === "string") return owner;
  const head = owner.end;
  if (head + 10 > buf.length) return "DNS record cut short";
  const type = view.getUint16(head);
  const ttl = view.getUint32(head + 4);
  const size = view.getUint16(head + 8);
  const data = head + 10;
  const end = data + size;
  if (end > buf.length) return "DNS record longer than the response";
  const base = { name: owner.name, ttl, end };
  let answer: Answer | null = null;
  let soaMinimum: number | null = null;
  if (type === RR.A && size === 4) {
    answer = { type: "A", name: owner.name, ttl, address: ipText(buf.subarray(data, end)) };
  } else if (type === RR.AAAA && size === 16) {
    answer = { type: "AAAA", name: owner.name, ttl, address: ipText(buf.subarray(data, end)) };
  } else if (type === RR.SRV && size >= 7) {
    const target = readName(buf, data + 6);
    if (typeof target === "string") return target;
    answer = {
      type: "SRV",
      name: owner.name,
      ttl,
      priority: view.getUint16(data),
      weight: view.getUint16(data + 2),
      port: view.getUint16(data + 4),
      target: target.name,
    };
  } else if (type === RR.CNAME) {
    const target = readName(buf, data);
    if (typeof target === "string") return target;
    answer = { type: "CNAME", name: owner.name, ttl, target: target.name };
  } else if (type === 6 && size >= 22) {
    soaMinimum = view.getUint32(end - 4);
  }
  return { ...base, answer, soaMinimum };
}

/** A (possibly compressed) name at `at`, and where it ends in place; or why it cannot be read. */
function readName(buf: Uint8Array, at: number): { name: string; end: number } | string {
  const labels: string[] = [];
  let end = -1;
  let jumps = 0;
  let total = 0;
  for (let i = at;;) {
    if (i >= buf.length) return "DNS name runs past the response";
    const len = buf[i];
    if (len === 0) {
      if (end < 0) end = i + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (i + 1 >= buf.length) return "DNS name pointer cut short";
      // A pointer loop would never end: at most as many jumps as the message has bytes / 2.
      if (++jumps > buf.length / 2) return "DNS name pointers loop";
      if (end < 0) end = i + 2;
      i = ((len & 0x3f) << 8) | buf[i + 1];
      continue;
    }
    if (len > 63) return "DNS label longer than 63 bytes";
    if (i + 1 + len > buf.length) return "DNS label runs past the response";
    total += len + 1;
    if (total > 255) return "DNS name longer than 255 bytes";
    labels.push(new TextDecoder().decode(buf.subarray(i + 1, i + 1 + len)));
    i += 1 + len;
  }
  return { name: labels.join(".").toLowerCase(), end };
}
