/**
 * Small pieces of operator-facing text: quoting the operator's input,
 * counting and pluralizing. Shared by errors, the CLI and log messages.
 *
 * @module
 */

/** Longest piece of the operator's input an error message quotes. */
export const QUOTE_LIMIT = 80;

/**
 * `text` as a JSON string, cut to {@link QUOTE_LIMIT} characters with an
 * ellipsis and its full length: garbage input never floods a message.
 */
export function quote(text: string): string {
  if (text.length <= QUOTE_LIMIT) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, QUOTE_LIMIT))}… (${text.length} characters)`;
}

/**
 * `n` with thousands separators: 10,000. Not `toLocaleString`: it loads
 * ICU's locale data, about 5 MB of resident memory for a log line.
 */
export function count(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** A byte count as KiB, or MiB from 1 MiB up: `2.0 KiB`, `3.5 MiB`. */
export function kib(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** `1 backend`, `2 backends`: `n` (with thousands separators) and the noun agreeing with it. */
export function plural(n: number, noun: string): string {
  return `${count(n)} ${noun}${n === 1 ? "" : "s"}`;
}

/** The first few of a list, and how many more: `a, b, c, d, e and 3 more`. */
export function firstFew(items: readonly string[], limit = 5): string {
  if (items.length <= limit) return items.join(", ");
  return `${items.slice(0, limit).join(", ")} and ${count(items.length - limit)} more`;
}
