// transcript.ts: a chat's transcript on a page, both sides': the events of the client package's
// subscription, each shown once at its position (an event at or below the last one shown is not
// shown again), messages being sent shown until their event arrives, and files and pushed links as
// cards. The list is the page's live region (role="log"): new entries are announced, not the ones
// replayed after a reload.
import { ChatEventType, ParticipantType, type ChatEvent } from "@opengms/client";
import { h, icon, ICONS, nearBottom } from "./dom.js";
import { bytes, dateOf, link, linkified, safeUrl, time } from "./format.js";

/** TranscriptOptions say where the transcript goes and whose it is. */
export interface TranscriptOptions {
  /** list is the page's <ol role="log">. */
  list: HTMLOListElement;
  /** scroller is the element that scrolls the list (kept at the end while the reader is there). */
  scroller: HTMLElement;
  /** viewer is the side the page is for. */
  viewer: "customer" | "agent";
  /** mine tells whether an event is the viewer's own (shown on the right). */
  mine(e: ChatEvent): boolean;
  /** download fetches and saves a file of the chat. */
  download(fileId: string, name: string): Promise<void>;
}

/** Pending is a message or a file on its way: shown at the end until its event arrives. */
export interface Pending {
  /** status shows how it is going: "Sending…", "Waiting for the connection…", "Not sent: …". */
  status(text: string, failed?: boolean): void;
  /** remove takes it away (its event has come, or it was given up). */
  remove(): void;
}

/** nameOf is how a participant is called in the transcript. */
function nameOf(e: ChatEvent, mine: boolean): string {
  if (mine) return "You";
  const nickname = e.from?.nickname ?? "";
  if (nickname !== "") return nickname;
  return e.from?.type === ParticipantType.CLIENT ? "The customer" : "An agent";
}

/** Transcript shows one chat's events. */
export class Transcript {
  /** position is the last event shown (0: none). */
  position = 0;
  private readonly pendings = new Map<string, HTMLLIElement>();

  constructor(private readonly o: TranscriptOptions) {}

  /** announce turns the announcing of new entries on or off (off while a reload replays the transcript). */
  announce(on: boolean): void {
    this.o.list.setAttribute("aria-live", on ? "polite" : "off");
  }

  /** add shows one stored event, unless it was shown already; false when it was. */
  add(e: ChatEvent): boolean {
    const position = Number(e.position);
    if (position <= this.position) return false;
    this.position = position;
    const pending = e.clientMessageId === "" ? undefined : this.pendings.get(e.clientMessageId);
    if (pending !== undefined) {
      pending.remove();
      this.pendings.delete(e.clientMessageId);
    }
    const item = this.render(e);
    if (item !== undefined) this.append(item, this.o.mine(e));
    return true;
  }

  /** pending shows a message of the viewer's on its way, under its client message id. */
  pending(clientMessageId: string, text: string): Pending {
    const status = h("span", { class: "status" }, "Sending…");
    const item = h("li", { class: "msg mine pending" }, h("div", { class: "bubble" }, h("p", { class: "text" }, ...linkified(text))), h("div", { class: "meta" }, status));
    this.pendings.set(clientMessageId, item);
    this.append(item, true);
    return this.handle(item, status, () => this.pendings.delete(clientMessageId));
  }

  /** uploading shows a file of the viewer's being sent. */
  uploading(name: string, size: number): Pending {
    const status = h("span", { class: "status" }, "Uploading…");
    const item = h("li", { class: "msg mine pending" }, this.fileCard(name, size, undefined), h("div", { class: "meta" }, status));
    this.append(item, true);
    return this.handle(item, status, () => undefined);
  }

  /** note shows a line of the page's own (not of the chat: an error, a hint), announced. */
  note(text: string, kind: "info" | "error" = "info"): void {
    this.append(h("li", { class: `notice ${kind}` }, kind === "error" ? icon(ICONS.alert) : null, text), true);
  }

  private handle(item: HTMLLIElement, status: HTMLElement, forget: () => void): Pending {
    return {
      status: (text, failed = false) => {
        status.textContent = text;
        item.classList.toggle("failed", failed);
      },
      remove: () => {
        forget();
        item.remove();
      },
    };
  }

  private append(item: HTMLLIElement, mine: boolean): void {
    const follow = mine || nearBottom(this.o.scroller);
    // Pending entries stay last: a stored event goes before them.
    const firstPending = this.o.list.querySelector(":scope > li.pending");
    if (firstPending !== null && !item.classList.contains("pending")) firstPending.before(item);
    else this.o.list.append(item);
    if (follow) this.o.scroller.scrollTop = this.o.scroller.scrollHeight;
  }

  private meta(e: ChatEvent, mine: boolean): HTMLElement {
    return h("div", { class: "meta", "aria-hidden": "true" }, mine ? null : h("span", { class: "who" }, nameOf(e, false)), h("time", { datetime: dateOf(e.time).toISOString() }, time(e.time)));
  }

  /** said is the screen reader's "Bob, 14:05:" before a message (the visible meta is hidden from it). */
  private said(e: ChatEvent, mine: boolean): HTMLElement {
    return h("span", { class: "visually-hidden" }, `${nameOf(e, mine)}, ${time(e.time)}: `);
  }

  private notice(e: ChatEvent, text: string): HTMLLIElement {
    return h("li", { class: "notice", "data-position": String(e.position) }, text, h("time", { datetime: dateOf(e.time).toISOString() }, ` · ${time(e.time)}`));
  }

  private fileCard(name: string, size: number | bigint, download: (() => void) | undefined): HTMLElement {
    return h(
      "div",
      { class: "bubble file-card" },
      icon(ICONS.file),
      h("div", { class: "file-text" }, h("span", { class: "file-name" }, name), h("span", { class: "file-size" }, bytes(size))),
      download === undefined ? null : h("button", { type: "button", class: "icon-button download", "aria-label": `Download ${name}`, title: "Download", onclick: download }, icon(ICONS.download)),
    );
  }

  private render(e: ChatEvent): HTMLLIElement | undefined {
    const mine = this.o.mine(e);
    const who = nameOf(e, mine);
    const client = e.from?.type === ParticipantType.CLIENT;
    switch (e.type) {
      case ChatEventType.MESSAGE:
        return h(
          "li",
          { class: `msg ${mine ? "mine" : "theirs"}`, "data-position": String(e.position) },
          h("div", { class: "bubble" }, this.said(e, mine), h("p", { class: "text" }, ...linkified(e.text))),
          this.meta(e, mine),
        );
      case ChatEventType.PARTICIPANT_JOINED:
        if (client) return this.notice(e, this.o.viewer === "customer" ? "You started the chat" : `${who} started the chat`);
        return this.notice(e, mine ? "You joined the chat" : `${who} joined the chat`);
      case ChatEventType.PARTICIPANT_LEFT:
        return this.notice(e, mine ? "You left the chat" : `${who} left the chat`);
      case ChatEventType.CHAT_ENDED:
        return this.notice(e, "The chat has ended");
      case ChatEventType.NICKNAME_UPDATED:
        return this.notice(e, mine ? `You are now “${e.text}”` : `${client ? "The customer" : "The agent"} is now “${e.text}”`);
      case ChatEventType.CUSTOM_NOTICE:
        return e.text === "" ? undefined : this.notice(e, e.text);
      case ChatEventType.USER_DATA_UPDATED:
        return this.o.viewer === "agent" ? this.notice(e, "The customer's details were updated") : undefined;
      case ChatEventType.PUSH_URL: {
        const url = safeUrl(e.text);
        return h(
          "li",
          { class: `msg ${mine ? "mine" : "theirs"}`, "data-position": String(e.position) },
          h(
            "div",
            { class: "bubble link-card" },
            this.said(e, mine),
            icon(ICONS.link),
            h("div", { class: "link-text" }, h("span", { class: "link-label" }, mine ? "You shared a page" : `${who} shared a page`), url === undefined ? h("span", {}, e.text) : link(url, url)),
          ),
          this.meta(e, mine),
        );
      }
      case ChatEventType.FILE_UPLOADED: {
        const name = e.fileName || "file";
        return h(
          "li",
          { class: `msg ${mine ? "mine" : "theirs"}`, "data-position": String(e.position), "data-file-id": e.fileId },
          h("span", { class: "visually-hidden" }, `${who} sent a file, ${time(e.time)}: `),
          this.fileCard(name, e.fileSize, () => void this.o.download(e.fileId, name)),
          this.meta(e, mine),
        );
      }
      case ChatEventType.FILE_DELETED: {
        const card = this.o.list.querySelector(`li[data-file-id="${CSS.escape(e.fileId)}"]`);
        card?.classList.add("removed");
        card?.querySelector("button.download")?.remove();
        return this.notice(e, mine ? "You removed a file" : `${who} removed a file`);
      }
      default:
        // Read receipts, and anything newer than this page: not shown.
        return undefined;
    }
  }
}
