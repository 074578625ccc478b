/**
 * A service's `allow:` and `deny:` lists: CIDR blocks or single addresses,
 * each checked with its own position.
 *
 * @module
 */
import { isScalar, isSeq, type Node } from "./yaml.ts";
import { type Acl, type Cidr, OPEN_ACL, parseCidr } from "../route/acl.ts";
import { describeNode, type Field, type Report } from "./fields.ts";

/** The ACL from a service's `allow` and `deny` fields (either may be absent). */
export function aclOf(
  allow: Field | undefined,
  deny: Field | undefined,
  key: (k: string) => string,
  at: Report,
): Acl {
  if (!allow && !deny) return OPEN_ACL;
  return {
    allow: allow ? cidrList(allow, key("allow"), at) : null,
    deny: deny ? cidrList(deny, key("deny"), at) : [],
  };
}

/** A list of addresses or CIDR blocks, each checked with its own position. */
export function cidrList(field: Field, path: string, at: Report): Cidr[] {
  if (!isSeq(field.value)) {
    at(
      field.value ?? field.key,
      path,
      `expected a list of addresses or CIDR blocks, e.g. ["10.0.0.0/8", "::1"], got ${
        describeNode(field.value)
      }`,
    );
    return [];
  }
  const list: Cidr[] = [];
  field.value.items.forEach((item, i) => {
    const node = item as Node;
    const text = isScalar(node) && typeof node.value === "string" ? node.value : undefined;
    const parsed = text === undefined ? "is not text" : parseCidr(text);
    if (typeof parsed !== "string") return list.push(parsed);
    at(node, `${path}[${i}]`, `${describeNode(node)} ${parsed}`);
  });
  return list;
}
