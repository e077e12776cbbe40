// The customer's chat widget (/chat/): start a chat, talk, send and receive files, leave. It calls
// opengms on the page's own origin without a key (the `app` role is public by default: see the
// README, "Chat widget and agent console"). The chat's id, secret and last position shown are kept
// in sessionStorage, so that a reload picks the same chat up and shows its transcript once; the
// client package's subscription resumes after any break, and the page says when it is reconnecting.
//
// Query parameters: service (a configured request-chat service), title, accent (#rgb or #rrggbb).
import "../shared/base.css";
import "./chat.css";
import { ChatEventType, Code, CustomerChat, ParticipantType, createTransport, type ChatEvent, type FileLimits, type SubscriptionState, toGmsError } from "@opengms/client";
import { byId } from "../shared/dom.js";
import { accept, describeLimits, refusal, save } from "../shared/files.js";
import { Outbox } from "../shared/outbox.js";
import { Transcript, type Pending } from "../shared/transcript.js";
import { typingNotifier } from "../shared/typing.js";

const params = new URLSearchParams(location.search);
const service = params.get("service") ?? "";
/** STORE is where the chat in progress is kept (per service: one tab may embed two). */
const STORE = `opengms.chat:${service}`;

/** Saved is what a reload needs to pick the chat up. */
interface Saved {
  chatId: string;
  secureKey: string;
  /** position is the last event the page showed. */
  position: number;
  nickname: string;
}

// The RPCs are on the origin that served the page, under the same prefix as /chat/ (a proxy may mount opengms under a path).
const gms = { transport: createTransport({ baseUrl: new URL("..", location.href).pathname.replace(/\/$/, "") }) };

const ui = {
  title: byId("title"),
  presence: byId("presence"),
  presenceDot: byId("presence-dot"),
  leave: byId<HTMLButtonElement>("leave"),
  banner: byId("banner"),
  start: byId("start"),
  startForm: byId<HTMLFormElement>("start-form"),
  nickname: byId<HTMLInputElement>("nickname"),
  subject: byId<HTMLInputElement>("subject"),
  startError: byId("start-error"),
  startButton: byId<HTMLButtonElement>("start-button"),
  conversation: byId("conversation"),
  scroller: byId("scroller"),
  transcript: byId<HTMLOListElement>("transcript"),
  typing: byId("typing"),
  typingText: byId("typing-text"),
  ended: byId("ended"),
  restart: byId<HTMLButtonElement>("restart"),
  composer: byId<HTMLFormElement>("composer"),
  attach: byId("attach"),
  file: byId<HTMLInputElement>("file"),
  message: byId<HTMLTextAreaElement>("message"),
  limits: byId("file-limits"),
};

// Branding from the embedding page.
const title = params.get("title");
if (title !== null && title.trim() !== "") {
  ui.title.textContent = title.slice(0, 80);
  document.title = title.slice(0, 80);
}
const accent = params.get("accent");
if (accent !== null && /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(accent)) {
  document.documentElement.style.setProperty("--brand", accent);
  document.documentElement.style.setProperty("--brand-strong", accent);
}
if (window.self !== window.top || params.has("embedded")) document.body.classList.add("embedded");

/** Session is the chat on the page. */
interface Session {
  chat: CustomerChat;
  transcript: Transcript;
  outbox: Outbox;
  stop: () => void;
  nickname: string;
  /** agents are the agents in the chat now, by participant id. */
  agents: Map<string, string>;
  limits: FileLimits | undefined;
  /** uploads are the files being sent, by the position their event will have. */
  uploads: Map<number, Pending>;
  over: boolean;
}

let session: Session | undefined;

function load(): Saved | undefined {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE) ?? "null") as Saved | null;
    return s !== null && typeof s.chatId === "string" && typeof s.secureKey === "string" ? s : undefined;
  } catch {
    return undefined;
  }
}

function keep(s: Session): void {
  const saved: Saved = { chatId: s.chat.chatId, secureKey: s.chat.secureKey, position: s.transcript.position, nickname: s.nickname };
  sessionStorage.setItem(STORE, JSON.stringify(saved));
}

function setPresence(text: string, dot: "online" | "waiting" | "off"): void {
  ui.presence.textContent = text;
  ui.presenceDot.className = `dot ${dot === "online" ? "" : dot}`;
}

function showPresence(s: Session): void {
  if (s.over) return setPresence("Chat ended", "off");
  const [first] = s.agents.values();
  if (first !== undefined) setPresence(`${first} is here to help`, "online");
  else setPresence("Waiting for an agent…", "waiting");
}

/** connection is what the page knows of its connection: the subscription's state, and whether a message is held up. */
const connection: { state: SubscriptionState; held: boolean } = { state: "connecting", held: false };

function showConnection(): void {
  const text = connection.held || connection.state === "reconnecting" ? "Connection lost. Reconnecting…" : connection.state === "connecting" ? "Connecting…" : undefined;
  ui.banner.hidden = text === undefined;
  if (ui.banner.textContent !== (text ?? "")) ui.banner.textContent = text ?? "";
}

async function refreshLimits(s: Session): Promise<void> {
  try {
    s.limits = await s.chat.fileLimits();
  } catch {
    return; // shown again after the next file
  }
  showLimits(s);
}

function showLimits(s: Session): void {
  const l = s.limits;
  if (l === undefined) return;
  const waiting = l.requireAgent && s.agents.size === 0;
  ui.file.disabled = waiting || s.over;
  ui.attach.classList.toggle("disabled", ui.file.disabled);
  ui.file.accept = accept(l);
  ui.limits.textContent = waiting ? "You can send files once an agent has joined." : `Files: ${describeLimits(l)}`;
}

/** open shows a chat and follows it; `shown` is the last position shown before a reload (0: none). */
function open(chat: CustomerChat, nickname: string, shown: number): void {
  ui.start.hidden = true;
  ui.conversation.hidden = false;
  ui.composer.hidden = false;
  ui.ended.hidden = true;
  ui.leave.hidden = false;
  ui.transcript.replaceChildren();
  connection.state = "connecting";
  connection.held = false;
  const transcript = new Transcript({
    list: ui.transcript,
    scroller: ui.scroller,
    viewer: "customer",
    mine: (e) => e.from?.type === ParticipantType.CLIENT,
    download: async (fileId) => {
      try {
        const file = await chat.download(fileId);
        if (file !== undefined) save(file);
      } catch {
        transcript.note("The file could not be downloaded. Please try again.", "error");
      }
    },
  });
  // What the page showed before the reload is shown again, not announced again.
  transcript.announce(shown === 0);
  const outbox = new Outbox({
    send: (text, id) => chat.send(text, { clientMessageId: id }),
    transcript,
    storageKey: `${STORE}:outbox`,
    waiting: (on) => {
      connection.held = on;
      showConnection();
    },
  });
  const s: Session = { chat, transcript, outbox, stop: () => undefined, nickname, agents: new Map(), limits: undefined, uploads: new Map(), over: false };
  session = s;
  setPresence("Connecting…", "waiting");
  s.stop = chat.subscribe({
    event(e: ChatEvent) {
      // Something came through: a message held up may go now.
      if (connection.held) outbox.retryNow();
      if (!transcript.add(e)) return;
      const position = Number(e.position);
      if (position >= shown) transcript.announce(true);
      s.uploads.get(position)?.remove();
      s.uploads.delete(position);
      const agent = e.from !== undefined && e.from.type !== ParticipantType.CLIENT;
      if (agent && e.type === ChatEventType.PARTICIPANT_JOINED) s.agents.set(e.from!.participantId, e.from!.nickname);
      if (agent && e.type === ChatEventType.PARTICIPANT_LEFT) s.agents.delete(e.from!.participantId);
      // The files of the chat count against its limits, whoever sent them.
      if (position > shown && (e.type === ChatEventType.FILE_UPLOADED || e.type === ChatEventType.FILE_DELETED)) void refreshLimits(s);
      if (e.type === ChatEventType.PARTICIPANT_JOINED || e.type === ChatEventType.PARTICIPANT_LEFT) {
        showPresence(s);
        showLimits(s);
      }
      keep(s);
    },
    typing(who, on) {
      if (who.type === ParticipantType.CLIENT) return;
      ui.typing.hidden = !on;
      ui.typingText.textContent = on ? `${who.nickname || "The agent"} is typing…` : "";
    },
    state(state) {
      connection.state = state;
      showConnection();
      if (state === "live" || state === "polling") {
        showPresence(s);
        outbox.retryNow();
      }
    },
    ended() {
      finish(s, "ended");
    },
    error(e) {
      // The chat is gone (expired, or its secret no longer valid): start afresh.
      transcript.note(e.code === Code.PermissionDenied ? "This chat is no longer available." : `The chat stopped: ${e.rawMessage}`, "error");
      finish(s, "gone");
    },
  });
  outbox.restore();
  void refreshLimits(s);
  keep(s);
  if (shown === 0) ui.message.focus();
}

/** finish closes the chat on the page: it ended, or it is gone. */
function finish(s: Session, how: "ended" | "gone"): void {
  if (s.over) return;
  s.over = true;
  s.stop();
  s.outbox.close("the chat has ended");
  sessionStorage.removeItem(STORE);
  ui.typing.hidden = true;
  ui.banner.hidden = true;
  ui.composer.hidden = true;
  ui.limits.textContent = "";
  ui.leave.hidden = true;
  ui.ended.hidden = false;
  setPresence(how === "ended" ? "Chat ended" : "Not connected", "off");
  ui.restart.focus();
}

function showStart(error?: string): void {
  session = undefined;
  ui.conversation.hidden = true;
  ui.leave.hidden = true;
  ui.banner.hidden = true;
  ui.start.hidden = false;
  ui.startError.hidden = error === undefined;
  ui.startError.textContent = error ?? "";
  setPresence("We usually answer within minutes", "online");
  ui.nickname.focus();
}

ui.startForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const nickname = ui.nickname.value.trim();
  if (nickname === "") {
    ui.nickname.setAttribute("aria-invalid", "true");
    ui.startError.textContent = "Please tell us your name.";
    ui.startError.hidden = false;
    ui.nickname.focus();
    return;
  }
  ui.nickname.removeAttribute("aria-invalid");
  ui.startError.hidden = true;
  ui.startButton.disabled = true;
  ui.startButton.textContent = "Connecting…";
  CustomerChat.start(gms, { nickname, subject: ui.subject.value.trim(), service })
    .then((chat) => open(chat, nickname, 0))
    .catch((err: unknown) => {
      const e = toGmsError(err);
      ui.startError.textContent = !navigator.onLine
        ? "You seem to be offline. Please check your connection and try again."
        : e.code === Code.ResourceExhausted
          ? "We are very busy right now. Please try again in a moment."
          : `We could not start the chat (${e.rawMessage}). Please try again.`;
      ui.startError.hidden = false;
    })
    .finally(() => {
      ui.startButton.disabled = false;
      ui.startButton.textContent = "Start chat";
    });
});

const typing = typingNotifier((on) => (session === undefined || session.over ? Promise.resolve() : session.chat.typing(on)));

function grow(): void {
  ui.message.style.height = "auto";
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 140)}px`;
}

function send(): void {
  const s = session;
  const text = ui.message.value.trim();
  if (s === undefined || s.over || text === "") return;
  typing.sent();
  s.outbox.push(text);
  ui.message.value = "";
  grow();
  ui.message.focus();
}

ui.composer.addEventListener("submit", (ev) => {
  ev.preventDefault();
  send();
});
ui.message.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    send();
  }
});
ui.message.addEventListener("input", () => {
  grow();
  if (ui.message.value.trim() !== "") typing.input();
});

ui.file.addEventListener("change", () => {
  const s = session;
  const file = ui.file.files?.[0];
  ui.file.value = "";
  if (s === undefined || file === undefined) return;
  void (async () => {
    await refreshLimits(s);
    const why = s.limits === undefined ? undefined : refusal(s.limits, file);
    if (why !== undefined) return s.transcript.note(why, "error");
    const pending = s.transcript.uploading(file.name, file.size);
    try {
      const { position } = await s.chat.upload(file.name, file.type, new Uint8Array(await file.arrayBuffer()));
      if (s.transcript.position >= position) pending.remove();
      else s.uploads.set(position, pending);
    } catch (err) {
      pending.status(`Not sent: ${toGmsError(err).rawMessage}`, true);
    }
    await refreshLimits(s);
  })();
});

ui.leave.addEventListener("click", () => {
  const s = session;
  if (s === undefined) return;
  ui.leave.disabled = true;
  s.chat
    .leave()
    .then(() => finish(s, "ended"))
    .catch(() => s.transcript.note("We could not end the chat just now. Please try again.", "error"))
    .finally(() => (ui.leave.disabled = false));
});

ui.restart.addEventListener("click", () => showStart());

// A chat in progress in this tab (a reload) is picked up; else the form.
const saved = load();
if (saved !== undefined) {
  ui.nickname.value = saved.nickname;
  open(CustomerChat.resume(gms, { chatId: saved.chatId, secureKey: saved.secureKey, position: 0 }), saved.nickname, saved.position);
} else {
  showStart();
}
