// The agent console (/agent/): sign in as an agent, watch queues, accept chats, talk to several
// customers at once, share pages, send files, transfer and end chats. It calls opengms on the page's
// own origin with an agent-role API key typed in at sign-in (and, with a desk key that acts for
// agents, the agent id sent as gms-agent-id): both are kept in this tab's sessionStorage only, with
// the chats open, so that a reload picks everything up again (each transcript shown once).
import "../shared/base.css";
import "./agent.css";
import {
  AgentChat,
  ChatEventType,
  Code,
  ParticipantType,
  createTransport,
  toGmsError,
  type ChatEvent,
  type Connection,
  type FileLimits,
  type GmsError,
  type Participant,
  type SubscriptionState,
  type WaitingChat,
} from "@opengms/client";
import { byId, h, icon, ICONS } from "../shared/dom.js";
import { accept, describeLimits, refusal, save } from "../shared/files.js";
import { dateOf, safeUrl, waited } from "../shared/format.js";
import { Outbox } from "../shared/outbox.js";
import { Transcript, type Pending } from "../shared/transcript.js";
import { typingNotifier } from "../shared/typing.js";

/** Identity is who signed in, kept for the tab's life. */
interface Identity {
  agentId: string;
  apiKey: string;
  nickname: string;
  endpoints: string[];
}

/** Kept is what a reload needs to pick an accepted chat up again. */
interface Kept {
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

const IDENTITY = "opengms.agent";
const CHATS = "opengms.agent.chats";
const BASE_URL = new URL("..", location.href).pathname.replace(/\/$/, "");

const ui = {
  signin: byId("signin"),
  signinForm: byId<HTMLFormElement>("signin-form"),
  agentId: byId<HTMLInputElement>("agent-id"),
  apiKey: byId<HTMLInputElement>("api-key"),
  displayName: byId<HTMLInputElement>("display-name"),
  endpoints: byId<HTMLInputElement>("endpoints"),
  signinError: byId("signin-error"),
  signinButton: byId<HTMLButtonElement>("signin-button"),
  app: byId("app"),
  queueState: byId("queue-state"),
  meAvatar: byId("me-avatar"),
  meName: byId("me-name"),
  meId: byId("me-id"),
  signout: byId<HTMLButtonElement>("signout"),
  queueList: byId<HTMLUListElement>("queue-list"),
  queueCount: byId("queue-count"),
  queueEmpty: byId("queue-empty"),
  accept: byId<HTMLButtonElement>("accept"),
  acceptError: byId("accept-error"),
  tabs: byId("tabs"),
  tabsEmpty: byId("tabs-empty"),
  mineCount: byId("mine-count"),
  workspace: byId("workspace"),
  placeholder: byId("placeholder"),
  pushDialog: byId<HTMLDialogElement>("push-dialog"),
  pushForm: byId<HTMLFormElement>("push-form"),
  pushUrl: byId<HTMLInputElement>("push-url"),
  pushError: byId("push-error"),
  transferDialog: byId<HTMLDialogElement>("transfer-dialog"),
  transferForm: byId<HTMLFormElement>("transfer-form"),
  transferEndpoint: byId<HTMLInputElement>("transfer-endpoint"),
  transferError: byId("transfer-error"),
  knownEndpoints: byId<HTMLDataListElement>("known-endpoints"),
};

let gms: Connection | undefined;
let me: Identity | undefined;
/** watches stop the queue watches. */
let watches: (() => void)[] = [];
const queues = new Map<string, WaitingChat[]>();
const queueStates = new Map<string, string>();
const desks = new Map<string, Desk>();
let selected: string | undefined;

function initial(name: string): string {
  return (name.trim()[0] ?? "?").toUpperCase();
}

function showError(el: HTMLElement, text: string | undefined): void {
  el.hidden = text === undefined;
  el.textContent = text ?? "";
}

function keepChats(): void {
  sessionStorage.setItem(CHATS, JSON.stringify([...desks.values()].filter((d) => !d.over).map((d) => d.kept)));
}

/** Desk is one accepted chat: its tab on the left, its panel on the right. */
class Desk {
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
  ) {
    const id = kept.chatId;
    this.tab = h(
      "button",
      { type: "button", class: "tab", role: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`, "aria-selected": "false", tabindex: "-1", onclick: () => select(id) },
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
      storageKey: `${CHATS}:${id}:outbox`,
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
      h("button", { type: "button", class: "button secondary small", onclick: () => openPush() }, icon(ICONS.link), "Share a page"),
      h("button", { type: "button", class: "button secondary small", onclick: () => openTransfer() }, "Transfer"),
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
      if (theirs && position > shown && selected !== this.kept.chatId) this.setUnread(this.unread + 1);
    }
    keepChats();
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
    this.closed.replaceChildren(h("span", {}, why), h("button", { type: "button", class: "button secondary small", onclick: () => dismiss(this.kept.chatId) }, "Close"));
    this.closed.hidden = false;
    sessionStorage.removeItem(`${CHATS}:${this.kept.chatId}:outbox`);
    keepChats();
  }

  dispose(): void {
    this.stop();
    this.tab.remove();
    this.panel.remove();
  }
}

function renderTabs(): void {
  ui.tabsEmpty.hidden = desks.size > 0;
  const open = [...desks.values()].filter((d) => !d.over).length;
  ui.mineCount.textContent = String(open);
  ui.placeholder.hidden = selected !== undefined;
}

function select(chatId: string | undefined): void {
  selected = chatId;
  for (const [id, d] of desks) {
    const on = id === chatId;
    d.tab.setAttribute("aria-selected", String(on));
    d.tab.tabIndex = on ? 0 : -1;
    d.panel.hidden = !on;
  }
  if (chatId !== undefined) desks.get(chatId)?.focus();
  renderTabs();
}

/** dismiss removes an ended chat from the console. */
function dismiss(chatId: string): void {
  desks.get(chatId)?.dispose();
  desks.delete(chatId);
  keepChats();
  select(desks.keys().next().value);
}

function openDesk(chat: AgentChat, kept: Kept, shown: number, show: boolean): void {
  const d = new Desk(chat, kept, shown);
  desks.set(kept.chatId, d);
  ui.tabs.append(d.tab);
  ui.workspace.append(d.panel);
  keepChats();
  if (show || selected === undefined) select(kept.chatId);
  renderTabs();
}

// Tabs: the arrow keys move between them.
ui.tabs.addEventListener("keydown", (ev) => {
  if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
  const ids = [...desks.keys()];
  const at = selected === undefined ? -1 : ids.indexOf(selected);
  const next = ids[(at + (ev.key === "ArrowDown" ? 1 : -1) + ids.length) % ids.length];
  if (next === undefined) return;
  ev.preventDefault();
  select(next);
  desks.get(next)?.tab.focus();
});

function current(): Desk | undefined {
  return selected === undefined ? undefined : desks.get(selected);
}

/* The queue */

function waitingChats(): (WaitingChat & { endpoint: string })[] {
  return [...queues.entries()].flatMap(([endpoint, list]) => list.map((w) => ({ ...w, endpoint }))).sort((a, b) => dateOf(a.queuedAt).getTime() - dateOf(b.queuedAt).getTime());
}

function renderQueue(): void {
  const all = waitingChats();
  const several = (me?.endpoints.length ?? 0) > 1;
  ui.queueList.replaceChildren(
    ...all.map((w) =>
      h(
        "li",
        { class: "queue-item" },
        h("span", { class: "avatar", "aria-hidden": "true" }, initial(w.nickname)),
        h("span", {}, h("span", { class: "who" }, w.nickname || "Customer"), h("span", { class: "what" }, [several ? w.endpoint : "", w.subject].filter((s) => s !== "").join(" · ") || "No subject")),
        h("span", { class: "since", title: `Waiting since ${dateOf(w.queuedAt).toLocaleTimeString()}` }, waited(dateOf(w.queuedAt))),
      ),
    ),
  );
  ui.queueEmpty.hidden = all.length > 0;
  ui.queueCount.textContent = String(all.length);
  ui.queueCount.classList.toggle("hot", all.length > 0);
  document.title = all.length > 0 ? `(${all.length}) Agent console` : "Agent console";
}

function renderQueueState(): void {
  const states = [...queueStates.values()];
  const live = states.length > 0 && states.every((s) => s === "live");
  const trouble = states.some((s) => s === "reconnecting" || s === "ended");
  ui.queueState.textContent = live ? "Online" : trouble ? "Reconnecting…" : "Connecting…";
  ui.queueState.className = `pill ${live ? "live" : trouble ? "trouble" : ""}`;
}

setInterval(() => {
  if (me !== undefined) renderQueue();
}, 20_000);

ui.accept.addEventListener("click", () => {
  if (gms === undefined || me === undefined) return;
  const connection = gms;
  const identity = me;
  showError(ui.acceptError, undefined);
  ui.accept.disabled = true;
  // The queue whose oldest chat has waited longest first, then the others.
  const order = [...new Set([...waitingChats().map((w) => w.endpoint), ...identity.endpoints])];
  void (async () => {
    try {
      for (const endpoint of order) {
        try {
          const chat = await AgentChat.accept(connection, { endpoint, nickname: identity.nickname });
          const a = chat.accepted!;
          openDesk(
            chat,
            { chatId: chat.chatId, participantId: a.participantId, position: 0, customer: a.customer?.nickname || "Customer", subject: a.subject, email: a.emailAddress, endpoint, userData: { ...a.userData } },
            0,
            true,
          );
          return;
        } catch (err) {
          if (toGmsError(err).code !== Code.NotFound) throw err;
        }
      }
      showError(ui.acceptError, "Nobody is waiting right now.");
    } catch (err) {
      showError(ui.acceptError, `The chat could not be accepted: ${toGmsError(err).rawMessage}`);
    } finally {
      ui.accept.disabled = false;
    }
  })();
});

/* Sharing a page, transferring */

function openPush(): void {
  showError(ui.pushError, undefined);
  ui.pushUrl.value = "";
  ui.pushDialog.showModal();
}

function openTransfer(): void {
  showError(ui.transferError, undefined);
  ui.knownEndpoints.replaceChildren(...(me?.endpoints ?? []).map((e) => h("option", { value: e })));
  ui.transferEndpoint.value = "";
  ui.transferDialog.showModal();
}

for (const dialog of [ui.pushDialog, ui.transferDialog]) {
  dialog.querySelector("[data-close]")?.addEventListener("click", () => dialog.close());
}

ui.pushForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const url = safeUrl(ui.pushUrl.value.trim());
  const d = current();
  if (url === undefined) return showError(ui.pushError, "Enter a web address starting with https:// or http://.");
  if (d === undefined) return ui.pushDialog.close();
  d.pushUrl(url).then(
    () => ui.pushDialog.close(),
    (err: unknown) => showError(ui.pushError, toGmsError(err).rawMessage),
  );
});

ui.transferForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const endpoint = ui.transferEndpoint.value.trim();
  const d = current();
  if (endpoint === "") return showError(ui.transferError, "Name the queue to transfer the chat to.");
  if (d === undefined) return ui.transferDialog.close();
  d.transfer(endpoint).then(
    () => ui.transferDialog.close(),
    (err: unknown) => showError(ui.transferError, toGmsError(err).rawMessage),
  );
});

/* Signing in and out */

function readIdentity(): Identity | undefined {
  try {
    const s = JSON.parse(sessionStorage.getItem(IDENTITY) ?? "null") as Identity | null;
    return s !== null && typeof s.nickname === "string" && Array.isArray(s.endpoints) ? s : undefined;
  } catch {
    return undefined;
  }
}

function readChats(): Kept[] {
  try {
    const list = JSON.parse(sessionStorage.getItem(CHATS) ?? "[]") as Kept[];
    return Array.isArray(list) ? list.filter((k) => typeof k.chatId === "string") : [];
  } catch {
    return [];
  }
}

/** signInMessage says why credentials were refused, in an agent's words. */
function signInMessage(e: GmsError): string {
  if (e.code === Code.Unauthenticated) return `The key was not accepted (${e.rawMessage}).`;
  if (e.code === Code.PermissionDenied) return `This key may not act as an agent (${e.rawMessage}).`;
  return `Could not sign in: ${e.rawMessage}`;
}

/**
 * signIn watches the identity's queues; it resolves once the first of them answers, which proves
 * the credentials (a refusal rejects, as does a server that cannot be reached).
 */
function signIn(identity: Identity): Promise<void> {
  const connection: Connection = { transport: createTransport({ baseUrl: BASE_URL, apiKey: identity.apiKey || undefined, agent: identity.agentId === "" ? undefined : { id: identity.agentId } }) };
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const fail = (e: GmsError) => {
      if (settled) return;
      settled = true;
      stopWatches();
      reject(e);
    };
    for (const endpoint of identity.endpoints) {
      watches.push(
        AgentChat.watchQueue(connection, endpoint, {
          update(q) {
            queues.set(endpoint, q.waiting);
            if (!settled) {
              settled = true;
              gms = connection;
              me = identity;
              resolve();
            }
            renderQueue();
          },
          state(s) {
            queueStates.set(endpoint, s);
            renderQueueState();
            if (s === "reconnecting" && !settled) fail(toGmsError(new Error("the server cannot be reached")));
          },
          error(e) {
            if (!settled) return fail(e);
            showError(ui.acceptError, `The queue “${endpoint}” is not available: ${e.rawMessage}`);
          },
        }),
      );
    }
  });
}

function stopWatches(): void {
  for (const stop of watches) stop();
  watches = [];
  queues.clear();
  queueStates.clear();
}

function enter(identity: Identity): void {
  ui.signin.hidden = true;
  ui.app.hidden = false;
  ui.meName.textContent = identity.nickname;
  ui.meId.textContent = identity.agentId === "" ? "" : `(${identity.agentId})`;
  ui.meAvatar.textContent = initial(identity.nickname);
  renderQueue();
  renderTabs();
  // The chats open before a reload, each transcript shown again from its start.
  for (const kept of readChats()) {
    if (!desks.has(kept.chatId)) openDesk(AgentChat.resume(gms!, { chatId: kept.chatId, position: 0 }), kept, kept.position, false);
  }
}

function showSignIn(error?: string): void {
  ui.app.hidden = true;
  ui.signin.hidden = false;
  showError(ui.signinError, error);
  (ui.displayName.value === "" ? ui.displayName : ui.signinButton).focus();
}

ui.signinForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const identity: Identity = {
    agentId: ui.agentId.value.trim(),
    apiKey: ui.apiKey.value.trim(),
    nickname: ui.displayName.value.trim(),
    endpoints: [...new Set(ui.endpoints.value.split(",").map((e) => e.trim()).filter((e) => e !== ""))],
  };
  if (identity.nickname === "") {
    showError(ui.signinError, "Enter the name customers will see.");
    return ui.displayName.focus();
  }
  if (identity.endpoints.length === 0) identity.endpoints = ["default"];
  ui.signinButton.disabled = true;
  ui.signinButton.textContent = "Signing in…";
  showError(ui.signinError, undefined);
  signIn(identity)
    .then(() => {
      sessionStorage.setItem(IDENTITY, JSON.stringify(identity));
      ui.apiKey.value = "";
      enter(identity);
    })
    .catch((e: unknown) => showError(ui.signinError, signInMessage(toGmsError(e))))
    .finally(() => {
      ui.signinButton.disabled = false;
      ui.signinButton.textContent = "Sign in";
    });
});

ui.signout.addEventListener("click", () => {
  ui.signout.disabled = true;
  // Open chats go back to their queues: no customer is left waiting on a console that is gone.
  void Promise.all([...desks.values()].map((d) => d.leave())).finally(() => {
    for (const d of desks.values()) d.dispose();
    desks.clear();
    selected = undefined;
    stopWatches();
    gms = undefined;
    me = undefined;
    sessionStorage.removeItem(IDENTITY);
    sessionStorage.removeItem(CHATS);
    ui.signout.disabled = false;
    document.title = "Agent console";
    showSignIn();
  });
});

// A signed-in tab (a reload) goes straight back to its desk.
const saved = readIdentity();
if (saved !== undefined) {
  ui.agentId.value = saved.agentId;
  ui.displayName.value = saved.nickname;
  ui.endpoints.value = saved.endpoints.join(", ");
  signIn(saved).then(
    () => enter(saved),
    (e: unknown) => showSignIn(signInMessage(toGmsError(e))),
  );
} else {
  showSignIn();
}
