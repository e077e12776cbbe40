// The agent console (/agent/): sign in as an agent, watch queues, accept chats, talk to several
// customers at once, share pages, send files, transfer and end chats. It calls opengms on the page's
// own origin with an agent-role API key typed in at sign-in (and, with a desk key that acts for
// agents, the agent id sent as gms-agent-id): both are kept in this tab's sessionStorage only, with
// the chats open, so that a reload picks everything up again (each transcript shown once).
import "../shared/base.css";
import "./agent.css";
import { AgentChat, Code, createTransport, toGmsError, type Connection, type GmsError, type WaitingChat } from "@opengms/client";
import { byId, h } from "../shared/dom.js";
import { dateOf, safeUrl, waited } from "../shared/format.js";
import { Desk, initial, type DeskHost, type Kept } from "./desk.js";

/** Identity is who signed in, kept for the tab's life. */
interface Identity {
  agentId: string;
  apiKey: string;
  nickname: string;
  endpoints: string[];
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

function showError(el: HTMLElement, text: string | undefined): void {
  el.hidden = text === undefined;
  el.textContent = text ?? "";
}

function keepChats(): void {
  sessionStorage.setItem(CHATS, JSON.stringify([...desks.values()].filter((d) => !d.over).map((d) => d.kept)));
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

/** host is what every desk is given of the console. */
const host: DeskHost = {
  storageKey: CHATS,
  select: (chatId) => select(chatId),
  isSelected: (chatId) => selected === chatId,
  dismiss: (chatId) => dismiss(chatId),
  changed: () => keepChats(),
  share: () => openPush(),
  transfer: () => openTransfer(),
};

function openDesk(chat: AgentChat, kept: Kept, shown: number, show: boolean): void {
  const d = new Desk(chat, kept, shown, host);
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
