// desk.ts: one accepted chat in the agent console: its tab in the list of the agent's chats and its
// panel (the transcript, the customer's details, the reply box), following the chat through the
// client package's subscription, sending through the outbox, until the chat ends, is transferred or
// is lost.
import { ChatEventType, Code, ParticipantType, toGmsError, type AgentChat, type ChatEvent, type FileLimits, type GmsError, type Participant, type SubscriptionState } from "@opengms/client";
import { h, icon, ICONS } from "../shared/dom.js";
import { accept, describeLimits, refusal, save } from "../shared/files.js";
import { Outbox } from "../shared/outbox.js";
import { Transcript, type Pending } from "../shared/transcript.js";
import { typingNotifier } from "../shared/typing.js";

/** Kept is what a reload needs to pick an accepted chat up again. */
export interface Kept {
  chatId: string;
  participantId: string;
  /** position is the last event shown. */
  position: number;
  customer: string;
  subject: string;
  email: string;
  endpoint: string;
  userData: Record<string, string>;
}

/** DeskHost is the console around a desk. */
export interface DeskHost {
  /** storageKey prefixes what the desk keeps in sessionStorage. */
  storageKey: string;
  select(chatId: string): void;
  isSelected(chatId: string): boolean;
  /** dismiss removes an ended chat from the console. */
  dismiss(chatId: string): void;
  /** changed says the desk's kept state changed (to be saved). */
  changed(): void;
  /** share and transfer open the console's dialogs for the selected chat. */
  share(): void;
  transfer(): void;
}

/** initial is a name's first letter, for an avatar. */
export function initial(name: string): string {
  return (name.trim()[0] ?? "?").toUpperCase();
}

/** Desk is one accepted chat: its tab on the left, its panel on the right. */
export class Desk {
  readonly tab: HTMLButtonElement;
  readonly panel: HTMLElement;
  readonly transcript: Transcript;
  readonly outbox: Outbox;
  over = false;
  private unread = 0;
  private stop: () => void = () => undefined;
  private limits: FileLimits | undefined;
  private readonly uploads = new Map<number, Pending>();
  private readonly preview = h("span", { class: "preview" });
  private readonly badge = h("span", { class: "badge", hidden: true });
  private readonly banner = h("div", { class: "banner", role: "status", hidden: true });
  private readonly typingLine = h("div", { class: "typing", "aria-live": "polite", hidden: true });
  private readonly composer: HTMLFormElement;
  private readonly message = h("textarea", { rows: "1", placeholder: "Write a reply…", "aria-label": "Reply" });
  private readonly file = h("input", { type: "file", "aria-label": "Send a file" });
  private readonly limitsLine = h("p", { class: "hint limits" });
  private readonly closed = h("div", { class: "closed", hidden: true });
  private readonly actions: HTMLButtonElement[];
  private lastText = "";
  private state: SubscriptionState = "connecting";
  private held = false;

  constructor(
    readonly chat: AgentChat,
    readonly kept: Kept,
    shown: number,
    private readonly host: DeskHost,
  ) {
    const id = kept.chatId;
    this.tab = h(
      "button",
      { type: "button", class: "tab", role: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`, "aria-selected": "false", tabindex: "-1", onclick: () => this.host.select(id) },
      h("span", { class: "avatar", "aria-hidden": "true" }, initial(kept.customer)),
      h("span", { class: "tab-text" }, h("span", { class: "who" }, kept.customer), this.preview),
      this.badge,
    );
    this.preview.textContent = kept.subject || "New chat";
    const scroller = h("div", { class: "scroller" });
    const list = h("ol", { class: "transcript", role: "log", "aria-label": `Messages with ${kept.customer}`, "aria-live": "polite" });
    scroller.append(list);
    this.transcript = new Transcript({
      list,
      scroller,
      viewer: "agent",
      mine: (e) => e.from?.participantId === kept.participantId && kept.participantId !== "",
      download: async (fileId) => {
        try {
          const file = await chat.download(fileId);
          if (file !== undefined) save(file);
        } catch {
          this.transcript.note("The file could not be downloaded.", "error");
        }
      },
    });
    this.transcript.announce(shown === 0);
    this.outbox = new Outbox({
      send: (text, cid) => chat.send(text, { clientMessageId: cid }),
      transcript: this.transcript,
      storageKey: `${host.storageKey}:${id}:outbox`,
      waiting: (on) => {
        this.held = on;
        this.showConnection();
      },
    });
    const typing = typingNotifier((on) => chat.typing(on));
    const send = () => {
      const text = this.message.value.trim();
      if (text === "" || this.over) return;
      typing.sent();
      this.outbox.push(text);
      this.message.value = "";
      this.grow();
    };
    this.message.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        send();
      }
    });
    this.message.addEventListener("input", () => {
      this.grow();
      if (this.message.value.trim() !== "") typing.input();
    });
    this.file.addEventListener("change", () => void this.upload());
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (ev: Event) => (ev.preventDefault(), send()) },
      h("label", { class: "icon-button attach", title: "Send a file" }, icon(ICONS.clip), this.file),
      this.message,
      h("button", { type: "submit", class: "icon-button send", "aria-label": "Send" }, icon(ICONS.send)),
    );
    this.actions = [
      h("button", { type: "button", class: "button secondary small", onclick: () => this.host.share() }, icon(ICONS.link), "Share a page"),
      h("button", { type: "button", class: "button secondary small", onclick: () => this.host.transfer() }, "Transfer"),
      h("button", { type: "button", class: "button danger small", onclick: () => void this.end() }, "End chat"),
    ];
    const userData = Object.entries(kept.userData);
    this.panel = h(
      "section",
      { class: "chat-panel", role: "tabpanel", id: `panel-${id}`, "aria-labelledby": `tab-${id}`, hidden: true },
      h(
        "header",
        { class: "chat-head" },
        h("span", { class: "avatar", "aria-hidden": "true" }, initial(kept.customer)),
        h("div", {}, h("h2", {}, kept.customer), h("p", { class: "subject" }, kept.subject || "No subject")),
        h("div", { class: "actions" }, ...this.actions),
      ),
      this.banner,
      scroller,
      h(
        "aside",
        { class: "details", "aria-label": "Customer details" },
        h("h3", {}, "Customer"),
        h(
          "dl",
          {},
          h("dt", {}, "Name"),
          h("dd", {}, kept.customer),
          kept.email === "" ? null : h("dt", {}, "E-mail"),
          kept.email === "" ? null : h("dd", {}, kept.email),
          h("dt", {}, "Subject"),
          h("dd", {}, kept.subject || "—"),
          h("dt", {}, "Queue"),
          h("dd", {}, kept.endpoint),
        ),
        userData.length === 0 ? null : h("h3", {}, "Details"),
        userData.length === 0 ? null : h("dl", {}, ...userData.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("h3", {}, "Chat"),
        h("dl", {}, h("dt", {}, "Chat id"), h("dd", { class: "mono" }, id)),
      ),
      this.typingLine,
      this.closed,
      this.composer,
      this.limitsLine,
    );
    this.follow(shown);
    this.outbox.restore();
    void this.refreshLimits();
  }

  private grow(): void {
    this.message.style.height = "auto";
    this.message.style.height = `${Math.min(this.message.scrollHeight, 160)}px`;
  }

  /** follow subscribes to the chat; `shown` is the last position shown before a reload. */
  private follow(shown: number): void {
    this.stop = this.chat.subscribe({
      event: (e) => this.event(e, shown),
      typing: (who: Participant, on) => {
        if (who.type !== ParticipantType.CLIENT) return;
        this.typingLine.hidden = !on;
        this.typingLine.replaceChildren(h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")), on ? `${who.nickname || "The customer"} is typing…` : "");
        this.preview.classList.toggle("typing-now", on);
        this.preview.textContent = on ? "typing…" : this.lastText || this.kept.subject || "New chat";
      },
      state: (s: SubscriptionState) => {
        this.state = s;
        this.showConnection();
        if (s === "live" || s === "polling") this.outbox.retryNow();
      },
      ended: () => this.finish("The chat has ended."),
      error: (e: GmsError) => this.finish(e.code === Code.PermissionDenied ? "This chat is no longer yours." : `The chat stopped: ${e.rawMessage}`),
    });
  }

  /** showConnection says when the chat's connection is lost (its subscription reconnecting, or a reply held up). */
  private showConnection(): void {
    const lost = !this.over && (this.held || this.state === "reconnecting");
    this.banner.hidden = !lost;
    this.banner.textContent = lost ? "Connection lost. Reconnecting…" : "";
  }

  private event(e: ChatEvent, shown: number): void {
    const id = this.kept.chatId;
    if (this.held) this.outbox.retryNow();
    if (!this.transcript.add(e)) return;
    const position = Number(e.position);
    if (position >= shown) this.transcript.announce(true);
    this.kept.position = position;
    this.uploads.get(position)?.remove();
    this.uploads.delete(position);
    if (position > shown && (e.type === ChatEventType.FILE_UPLOADED || e.type === ChatEventType.FILE_DELETED)) void this.refreshLimits();
    const theirs = e.from?.type === ParticipantType.CLIENT;
    if (e.type === ChatEventType.MESSAGE) {
      this.lastText = `${theirs ? "" : "You: "}${e.text}`;
      if (!this.preview.classList.contains("typing-now")) this.preview.textContent = this.lastText;
      if (theirs && position > shown && !this.host.isSelected(id)) this.setUnread(this.unread + 1);
    }
    this.host.changed();
  }

  setUnread(n: number): void {
    this.unread = n;
    this.badge.hidden = n === 0;
    this.badge.textContent = String(n);
    this.badge.setAttribute("aria-label", `${n} unread`);
  }

  focus(): void {
    this.setUnread(0);
    if (!this.over) this.message.focus();
  }

  private async refreshLimits(): Promise<void> {
    try {
      this.limits = await this.chat.fileLimits();
    } catch {
      return;
    }
    if (this.limits === undefined || this.over) return;
    this.file.accept = accept(this.limits);
    this.limitsLine.textContent = `Files: ${describeLimits(this.limits)}`;
  }

  private async upload(): Promise<void> {
    const file = this.file.files?.[0];
    this.file.value = "";
    if (file === undefined || this.over) return;
    await this.refreshLimits();
    const why = this.limits === undefined ? undefined : refusal(this.limits, file);
    if (why !== undefined) return this.transcript.note(why, "error");
    const pending = this.transcript.uploading(file.name, file.size);
    try {
      const { position } = await this.chat.upload(file.name, file.type, new Uint8Array(await file.arrayBuffer()));
      if (this.transcript.position >= position) pending.remove();
      else this.uploads.set(position, pending);
    } catch (err) {
      pending.status(`Not sent: ${toGmsError(err).rawMessage}`, true);
    }
    await this.refreshLimits();
  }

  async pushUrl(url: string): Promise<void> {
    await this.chat.pushUrl(url);
  }

  async transfer(endpoint: string): Promise<void> {
    await this.chat.transfer(endpoint);
    this.finish(`You transferred the chat to “${endpoint}”.`);
  }

  private async end(): Promise<void> {
    this.actions.forEach((b) => (b.disabled = true));
    try {
      await this.chat.end();
    } catch (err) {
      this.actions.forEach((b) => (b.disabled = false));
      this.transcript.note(`The chat could not be ended: ${toGmsError(err).rawMessage}`, "error");
    }
  }

  /** leave gives the chat back to its queue (signing out). */
  async leave(): Promise<void> {
    if (this.over) return;
    await this.chat.leave().catch(() => undefined);
    this.finish("You left the chat.");
  }

  /** finish closes the chat on the console: its end, a transfer, or its loss. */
  finish(why: string): void {
    if (this.over) return;
    this.over = true;
    this.stop();
    this.outbox.close("the chat is over");
    this.typingLine.hidden = true;
    this.banner.hidden = true;
    this.composer.hidden = true;
    this.limitsLine.hidden = true;
    this.actions.forEach((b) => (b.disabled = true));
    this.tab.classList.add("ended");
    this.tab.querySelector(".tab-text")?.after(h("span", { class: "tag" }, "Ended"));
    this.preview.classList.remove("typing-now");
    this.closed.replaceChildren(h("span", {}, why), h("button", { type: "button", class: "button secondary small", onclick: () => this.host.dismiss(this.kept.chatId) }, "Close"));
    this.closed.hidden = false;
    sessionStorage.removeItem(`${this.host.storageKey}:${this.kept.chatId}:outbox`);
    this.host.changed();
  }

  dispose(): void {
    this.stop();
    this.tab.remove();
    this.panel.remove();
  }
}
