// format.ts: sizes, times and message text as people read them.
import type { Child } from "./dom.js";

/** bytes formats a size: "512 B", "12 KB", "4.8 MB" (powers of 1024, as the limits are configured). */
export function bytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${Math.round(v / 1024)} KB`;
  const mb = v / (1024 * 1024);
  return `${mb < 10 ? mb.toFixed(1).replace(/\.0$/, "") : Math.round(mb)} MB`;
}

/** Stamp is a protobuf Timestamp as the client package gives it. */
export interface Stamp {
  seconds: bigint;
  nanos: number;
}

/** dateOf is a Timestamp as a Date (now when absent). */
export function dateOf(t: Stamp | undefined): Date {
  return t === undefined ? new Date() : new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** time is a moment as the reader's clock shows it ("14:05", "2:05 PM"). */
export function time(t: Stamp | undefined): string {
  return clock.format(dateOf(t));
}

/** waited says how long ago a moment was, briefly: "just now", "3 min", "1 h 5 min". */
export function waited(since: Date, now = new Date()): string {
  const s = Math.max(0, Math.floor((now.getTime() - since.getTime()) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** URL_IN_TEXT finds web addresses in a message. */
const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/gi;

/** linkified is a message's text with its http(s) addresses as links (opening in a new tab, no referrer). */
export function linkified(text: string): Child[] {
  const out: Child[] = [];
  let at = 0;
  for (const m of text.matchAll(URL_IN_TEXT)) {
    out.push(text.slice(at, m.index));
    out.push(link(m[0], m[0]));
    at = m.index + m[0].length;
  }
  out.push(text.slice(at));
  return out;
}

/** safeUrl is an http(s) URL, or undefined for anything else (javascript:, data:...). */
export function safeUrl(text: string): string | undefined {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/** link is an anchor to an http(s) URL that opens in a new tab without telling it where it came from. */
export function link(href: string, text: string): HTMLAnchorElement {
  const a = document.createElement("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = text;
  return a;
}
