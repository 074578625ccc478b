/**
 * DNS messages built byte by byte for the tests (RFC 1035 wire form, with
 * name compression): names, pointers, records and whole responses.
 */
/** A name in wire form, or a pointer to an earlier offset. */
export const name = (n: string) => [
  ...n.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]),
  0,
];
export const pointer = (offset: number) => [0xc0 | (offset >> 8), offset & 0xff];
export const u16 = (n: number) => [n >> 8, n & 0xff];
export const u32 = (n: number) => [n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** A response to `question` with `records` (each already in wire form). */
export function response(id: number, question: number[], answers: number[][], flags = 0x8180) {
  return new Uint8Array([
    ...u16(id),
    ...u16(flags),
    ...u16(1),
    ...u16(answers.length),
    ...u16(0),
    ...u16(0),
    ...question,
    ...answers.flat(),
  ]);
}
export const rr = (owner: number[], type: number, ttl: number, data: number[]) => [
  ...owner,
  ...u16(type),
  ...u16(1),
  ...u32(ttl),
  ...u16(data.length),
  ...data,
];
