// The chat widget (/chat/) and the agent console (/agent/) in a real browser (Debian's chromium,
// driven by playwright-core) against a real opengms on MariaDB that serves them: customers and an
// agent sign in, talk both ways, see each other typing, send files both ways within the limits
// shown, share a page, transfer, end and leave; the customer reloads mid-chat (the transcript is
// shown once) and loses the network (a TCP proxy between the customer's browser and the server is
// cut and reopened) without a message lost or doubled, the page saying it is reconnecting and,
// in a quiet chat too, that it is back; the agent handles two chats at once.
// Screenshots of both pages go to test-artifacts/ (GMS_UPDATE_SCREENSHOTS=1: also docs/screenshots/,
// the README's).
import { execFileSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { systemClock } from "../src/clock.js";
import { DIALECTS } from "./helpers/databases.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const ROOT = join(import.meta.dirname, "..");
const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(ROOT, "test-artifacts");
const DESK_KEY = "desk-key-for-the-browser-tests-0123";
const WAIT = 30_000;
/** A cut connection is resumed after a backoff of up to 30 s (the client's bound): waits across it are longer. */
const WAIT_RECONNECT = 75_000;

/** embedSnippet is the README's HTML block marked `<!-- embed: name -->`, pointing at the server under test. */
function embedSnippet(name: string, serverUrl: string): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const m = new RegExp(`^<!-- embed: ${name} -->\n\`\`\`html\n([\\s\\S]*?)^\`\`\`$`, "m").exec(readme);
  if (m?.[1] === undefined) throw new Error(`README.md has no html block marked <!-- embed: ${name} -->`);
  return m[1].replaceAll("https://gms.example.com", serverUrl);
}

/** shopServer serves one page, a shop's, on another origin than opengms's (another port). */
async function shopServer(body: string): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><head><title>Shop</title></head><body><h1>A shop</h1>${body}</body></html>`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

/** shot saves a page's screenshot as an artifact (and for the README when asked). */
async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.mouse.move(0, 0); // no button left hovered
  await page.screenshot({ path });
  if (process.env["GMS_UPDATE_SCREENSHOTS"] === "1") {
    mkdirSync(join(ROOT, "docs", "screenshots"), { recursive: true });
    copyFileSync(path, join(ROOT, "docs", "screenshots", `${name}.png`));
  }
}

/** entries are the transcript's stored events as shown (the text of each, in order; not the page's own notes). */
async function entries(list: Locator): Promise<string[]> {
  return list.locator(":scope > li[data-position]").allInnerTexts();
}

/** positions are the transcript's stored events as shown, by position (data-position). */
async function positions(list: Locator): Promise<number[]> {
  return (await list.locator(":scope > li[data-position]").all().then((items) => Promise.all(items.map((i) => i.getAttribute("data-position"))))).map(Number);
}

/** expectOnce waits for exactly one transcript message with the text, and that it stays one. */
async function expectOnce(list: Locator, text: string, timeout = WAIT): Promise<void> {
  const item = list.locator(":scope > li.msg:not(.pending)", { hasText: text });
  await item.first().waitFor({ timeout });
  expect(await item.count()).toBe(1);
}

/** expectGapless checks the stored events shown are 1, 2, 3, … each once. */
async function expectGapless(list: Locator): Promise<void> {
  const shown = await positions(list);
  expect(shown.length).toBeGreaterThan(0);
  expect(shown).toEqual(Array.from({ length: shown.length }, (_, i) => i + 1));
}

describe.runIf(DIALECTS.includes("mysql"))("the chat widget and the agent console in a browser, on MariaDB", () => {
  let out: string;
  let s: TestServer;
  let proxy: TcpProxy;
  let browser: Browser;
  let annContext: BrowserContext;
  let ann: Page;
  let alice: Page;
  let bruno: Page;
  let bob: Page;
  /** problems are what the pages reported: uncaught errors, and console errors (a CSP refusal is one) other than failed loads, which a cut connection and a refused key cause. */
  const problems: string[] = [];
  const watch = (page: Page, name: string): Page => {
    page.on("pageerror", (e) => problems.push(`${name}: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`${name}: ${m.text()}`);
    });
    return page;
  };
  const annList = () => ann.locator("#transcript");
  const panelOf = (page: Page, customer: string) => page.locator(".chat-panel", { has: page.locator(".chat-head h2", { hasText: customer }) });
  const aliceList = (customer: string) => panelOf(alice, customer).locator("ol.transcript");

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (.ci/run does)`);
    out = mkdtempSync(join(tmpdir(), "opengms-web-build-"));
    execFileSync(process.execPath, [join(ROOT, "scripts", "build-web.mjs"), "--out", out], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
    s = await startTestServer("mysql", {
      clock: systemClock,
      config: {
        // Heartbeats rarer than the tests' waits (and than the client's 75 s watchdog): a quiet
        // chat's stream shows open by its opening heartbeat, not by the first periodic one.
        server: { web: { dir: out }, streams: { heartbeat_seconds: 45 } },
        auth: { api_keys: [{ name: "desk", key: DESK_KEY, roles: ["agent"], acts_for_agents: true }], public_roles: ["app"] },
        chat: { files: { max_file_bytes: 65_536, allowed_extensions: ["txt", "png"] } },
      },
    });
    // The customer reaches the server through a proxy that the test cuts: a dropped connection.
    proxy = new TcpProxy("127.0.0.1", s.server.port);
    await proxy.start();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
    annContext = await browser.newContext({ viewport: { width: 560, height: 800 } });
    ann = watch(await annContext.newPage(), "ann");
    alice = watch(await (await browser.newContext({ viewport: { width: 1360, height: 820 } })).newPage(), "alice");
    bruno = watch(await (await browser.newContext({ viewport: { width: 560, height: 800 } })).newPage(), "bruno");
    bob = watch(await (await browser.newContext({ viewport: { width: 1360, height: 820 } })).newPage(), "bob");
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
    await s?.close();
    if (out !== undefined) rmSync(out, { recursive: true, force: true });
  });

  it("a customer starts a chat; an agent signs in, sees it waiting and accepts it", async () => {
    await ann.goto(`http://127.0.0.1:${proxy.port}/chat/`);
    await ann.getByLabel("Your name").fill("Ann");
    await ann.getByLabel("What is it about?").fill("Order 10442 has not arrived");
    await ann.getByRole("button", { name: "Start chat" }).click();
    await ann.locator("#presence", { hasText: "Waiting for an agent" }).waitFor();

    await alice.goto(`${s.server.url}/agent/`);
    await alice.getByLabel("Agent ID").fill("alice");
    await alice.getByLabel("API key").fill(DESK_KEY);
    await alice.getByLabel("Your name for customers").fill("Alice");
    await alice.getByRole("button", { name: "Sign in" }).click();
    await alice.locator(".queue-item", { hasText: "Ann" }).waitFor();
    expect(await alice.locator(".queue-item", { hasText: "Order 10442 has not arrived" }).count()).toBe(1);
    await alice.getByRole("button", { name: "Accept next chat" }).click();
    await panelOf(alice, "Ann").waitFor();
    expect(await alice.getByRole("tab", { name: /Ann/ }).getAttribute("aria-selected")).toBe("true");
    await alice.locator("#queue-empty").waitFor();
    await ann.locator("#presence", { hasText: "Alice is here to help" }).waitFor();
    await ann.locator("#transcript li.notice", { hasText: "Alice joined the chat" }).waitFor();
  });

  it("a wrong key is refused at sign-in, saying so", async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${s.server.url}/agent/`);
    await page.getByLabel("Agent ID").fill("mallory");
    await page.getByLabel("API key").fill("not-a-key-of-this-server-at-all");
    await page.getByLabel("Your name for customers").fill("Mallory");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#signin-error", { hasText: "The key was not accepted" }).waitFor();
    expect(await page.locator("#app").isHidden()).toBe(true);
    await page.context().close();
  });

  it("messages go both ways, each shown once; each side sees the other typing", async () => {
    await ann.getByRole("textbox", { name: "Message" }).fill("Hello, my parcel has not arrived yet. Can you check?");
    await ann.getByRole("textbox", { name: "Message" }).press("Enter");
    await expectOnce(aliceList("Ann"), "Hello, my parcel has not arrived yet");

    const reply = panelOf(alice, "Ann").getByLabel("Reply");
    await reply.pressSequentially("Let me look", { delay: 20 });
    await ann.locator("#typing", { hasText: "Alice is typing" }).waitFor();
    await reply.fill("Hi Ann, I am looking at order 10442 now. It left our warehouse this morning: https://track.example.com/10442");
    await reply.press("Enter");
    await expectOnce(annList(), "It left our warehouse this morning");
    // The server stops the agent's typing notice when the message is sent.
    await ann.locator("#typing").waitFor({ state: "hidden" });
    const tracking = annList().getByRole("link", { name: "https://track.example.com/10442" });
    expect(await tracking.getAttribute("rel")).toBe("noopener noreferrer");

    await ann.getByRole("textbox", { name: "Message" }).pressSequentially("Great", { delay: 20 });
    await panelOf(alice, "Ann").locator(".typing", { hasText: "Ann is typing" }).waitFor();
    await ann.getByRole("textbox", { name: "Message" }).fill("Great, thank you!");
    await ann.getByRole("button", { name: "Send", exact: true }).click();
    await expectOnce(aliceList("Ann"), "Great, thank you!");
    await expectOnce(annList(), "Great, thank you!");
    await expectGapless(annList());
    await expectGapless(aliceList("Ann"));
  });

  it("files go both ways within the limits shown before sending", async () => {
    await ann.locator("#file-limits", { hasText: "Up to 64 KB per file · TXT, PNG" }).waitFor();
    expect(await ann.locator("#file").getAttribute("accept")).toBe(".txt,.png");

    const receipt = Buffer.from("Order 10442\nPaid 49.90 EUR\n");
    await ann.locator("#file").setInputFiles({ name: "receipt.txt", mimeType: "text/plain", buffer: receipt });
    const card = panelOf(alice, "Ann").locator("li[data-file-id]", { hasText: "receipt.txt" });
    await card.waitFor({ timeout: WAIT });
    const [download] = await Promise.all([alice.waitForEvent("download"), card.getByRole("button", { name: "Download receipt.txt" }).click()]);
    expect(download.suggestedFilename()).toBe("receipt.txt");
    expect(readFileSync(await download.path())).toEqual(receipt);

    const label = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
    await panelOf(alice, "Ann").locator("input[type=file]").setInputFiles({ name: "return-label.png", mimeType: "image/png", buffer: label });
    const labelCard = annList().locator("li[data-file-id]", { hasText: "return-label.png" });
    await labelCard.waitFor({ timeout: WAIT });
    expect(await labelCard.innerText()).toContain("3 KB");
    const [got] = await Promise.all([ann.waitForEvent("download"), labelCard.getByRole("button", { name: "Download return-label.png" }).click()]);
    expect(got.suggestedFilename()).toBe("return-label.png");
    expect(readFileSync(await got.path())).toEqual(label);
    await ann.locator("#file-limits", { hasText: "8 files left" }).waitFor();
  });

  it("the agent shares a page; the customer gets it as a link", async () => {
    await panelOf(alice, "Ann").getByRole("button", { name: "Share a page" }).click();
    await alice.getByLabel("Address").fill("javascript:alert(1)");
    await alice.locator("#push-dialog").getByRole("button", { name: "Share" }).click();
    await alice.locator("#push-error", { hasText: "https://" }).waitFor();
    await alice.getByLabel("Address").fill("https://shop.example.com/returns");
    await alice.locator("#push-dialog").getByRole("button", { name: "Share" }).click();
    await alice.locator("#push-dialog").waitFor({ state: "hidden" });
    const card = annList().locator("li .link-card", { hasText: "Alice shared a page" });
    await card.waitFor();
    expect(await card.getByRole("link").getAttribute("href")).toBe("https://shop.example.com/returns");
    await ann.getByRole("textbox", { name: "Message" }).pressSequentially("Thanks", { delay: 20 });
    await panelOf(alice, "Ann").locator(".typing", { hasText: "Ann is typing" }).waitFor();
    await shot(ann, "chat-widget");
    await shot(alice, "agent-console");
    await ann.getByRole("textbox", { name: "Message" }).fill("");
  });

  it("a file over the limits is refused on the page, saying why; nothing is sent", async () => {
    await ann.locator("#file").setInputFiles({ name: "photo.txt", mimeType: "text/plain", buffer: Buffer.alloc(70_000, 65) });
    await annList().locator("li.notice.error", { hasText: "files may be up to 64 KB" }).waitFor();
    await ann.locator("#file").setInputFiles({ name: "notes.pdf", mimeType: "application/pdf", buffer: Buffer.from("%PDF-1.4") });
    await annList().locator("li.notice.error", { hasText: "cannot be sent here" }).waitFor();
    // Everything since shows after the refusals: nothing else was added to the chat.
    await panelOf(alice, "Ann").getByLabel("Reply").fill("Anything else I can do?");
    await panelOf(alice, "Ann").getByLabel("Reply").press("Enter");
    await expectOnce(annList(), "Anything else I can do?");
    expect(await panelOf(alice, "Ann").locator("li[data-file-id]").count()).toBe(2);
    await ann.locator("#file-limits", { hasText: "8 files left" }).waitFor();
  });

  it("the customer reloads mid-chat: the transcript is shown once, and the chat goes on", async () => {
    const before = await entries(annList());
    const stored = await positions(annList());
    expect(stored.length).toBeGreaterThanOrEqual(8);
    await ann.reload();
    await annList().locator(`li[data-position="${stored.at(-1)}"]`).waitFor();
    // Once shown, give anything doubled the time to arrive: the next message must come after all of it.
    await panelOf(alice, "Ann").getByLabel("Reply").fill("Are you still there?");
    await panelOf(alice, "Ann").getByLabel("Reply").press("Enter");
    await expectOnce(annList(), "Are you still there?");
    const after = await entries(annList());
    expect(after.slice(0, before.length)).toEqual(before);
    expect(after.length).toBe(before.length + 1);
    await expectGapless(annList());
    await ann.locator("#presence", { hasText: "Alice is here to help" }).waitFor();
    // The session keeps the chat, and the page's own secret: nothing else.
    const kept = await ann.evaluate(() => Object.keys((globalThis as unknown as { sessionStorage: Record<string, string> }).sessionStorage));
    expect(kept).toEqual(["opengms.chat:"]);
  });

  it("the customer's connection is cut and restored: every message arrives once, both ways", async () => {
    await proxy.cut();
    // The subscription says it is reconnecting (it never takes an outage for a network that blocks streams).
    await ann.locator("#banner", { hasText: "Reconnecting" }).waitFor({ timeout: WAIT });
    // Both sides write while the customer is cut off.
    await panelOf(alice, "Ann").getByLabel("Reply").fill("I have asked the courier.");
    await panelOf(alice, "Ann").getByLabel("Reply").press("Enter");
    await panelOf(alice, "Ann").getByLabel("Reply").fill("They will call you today.");
    await panelOf(alice, "Ann").getByLabel("Reply").press("Enter");
    await ann.getByRole("textbox", { name: "Message" }).fill("Hello? Are you there?");
    await ann.getByRole("textbox", { name: "Message" }).press("Enter");
    await annList().locator("li.pending", { hasText: "Hello? Are you there?" }).waitFor();
    await annList().locator("li.pending .status", { hasText: "Waiting for the connection" }).waitFor({ timeout: WAIT });
    // While a message cannot go out for want of a connection, the page still says it is reconnecting.
    expect(await ann.locator("#banner").innerText()).toContain("Reconnecting");
    await proxy.reopen();
    await expectOnce(annList(), "I have asked the courier.", WAIT_RECONNECT);
    await expectOnce(annList(), "They will call you today.", WAIT_RECONNECT);
    await expectOnce(aliceList("Ann"), "Hello? Are you there?", WAIT_RECONNECT);
    await ann.locator("#banner").waitFor({ state: "hidden", timeout: WAIT_RECONNECT });
    await annList().locator("li.pending").waitFor({ state: "detached", timeout: WAIT });
    await expectOnce(annList(), "Hello? Are you there?");
    await expectGapless(annList());
    await expectGapless(aliceList("Ann"));
    // The two transcripts agree, message for message.
    const said = async (list: Locator) => (await list.locator(":scope > li.msg .text").allInnerTexts()).map((t) => t.trim());
    expect(await said(annList())).toEqual(await said(aliceList("Ann")));
  }, WAIT_RECONNECT * 3);

  it("a quiet chat's connection is cut and restored: the page shows it back with nobody saying anything", async () => {
    await ann.locator("#banner").waitFor({ state: "hidden", timeout: WAIT });
    const before = await entries(annList());
    await proxy.cut();
    await ann.locator("#banner", { hasText: "Reconnecting" }).waitFor({ timeout: WAIT });
    await proxy.reopen();
    // The resumed stream has nothing to replay: its opening heartbeat is what says it is back (the
    // next periodic one is 45 s away, longer than this wait).
    await ann.locator("#banner").waitFor({ state: "hidden", timeout: WAIT });
    expect(await entries(annList())).toEqual(before);
  });

  it("the agent takes a second chat: two tabs, each chat's messages in its own, unread counted", async () => {
    await bruno.goto(`${s.server.url}/chat/?title=Acme%20Support`);
    expect(await bruno.locator("h1").innerText()).toBe("Acme Support");
    await bruno.getByLabel("Your name").fill("Bruno");
    await bruno.getByRole("button", { name: "Start chat" }).click();
    await alice.locator(".queue-item", { hasText: "Bruno" }).waitFor();
    await alice.getByRole("button", { name: "Accept next chat" }).click();
    await panelOf(alice, "Bruno").waitFor();
    expect(await alice.getByRole("tab").count()).toBe(2);
    // Back to Ann's chat; Bruno writes: his tab counts it.
    await alice.getByRole("tab", { name: /Ann/ }).click();
    await bruno.getByRole("textbox", { name: "Message" }).fill("Hi, I want to change my delivery address.");
    await bruno.getByRole("textbox", { name: "Message" }).press("Enter");
    await alice.getByRole("tab", { name: /Bruno/ }).locator(".badge", { hasText: "1" }).waitFor();
    await alice.getByRole("tab", { name: /Bruno/ }).click();
    await alice.getByRole("tab", { name: /Bruno/ }).locator(".badge").waitFor({ state: "hidden" });
    await expectOnce(aliceList("Bruno"), "change my delivery address");
    await panelOf(alice, "Bruno").getByLabel("Reply").fill("Billing handles that, one moment.");
    await panelOf(alice, "Bruno").getByLabel("Reply").press("Enter");
    await expectOnce(bruno.locator("#transcript"), "Billing handles that");
    expect(await annList().locator("li.msg", { hasText: "Billing handles that" }).count()).toBe(0);
    expect(await aliceList("Ann").locator("li.msg", { hasText: "delivery address" }).count()).toBe(0);
  });

  it("the agent reloads the console: both chats come back, each transcript shown once", async () => {
    const before = { ann: await entries(aliceList("Ann")), bruno: await entries(aliceList("Bruno")) };
    const last = { ann: (await positions(aliceList("Ann"))).at(-1), bruno: (await positions(aliceList("Bruno"))).at(-1) };
    await alice.reload();
    await aliceList("Ann").locator(`li[data-position="${last.ann}"]`).waitFor({ state: "attached" });
    await aliceList("Bruno").locator(`li[data-position="${last.bruno}"]`).waitFor({ state: "attached" });
    expect(await alice.getByRole("tab").count()).toBe(2);
    // A message after the reload lands once, after everything replayed.
    await bruno.getByRole("textbox", { name: "Message" }).fill("Thank you.");
    await bruno.getByRole("textbox", { name: "Message" }).press("Enter");
    await alice.getByRole("tab", { name: /Bruno/ }).click();
    await expectOnce(aliceList("Bruno"), "Thank you.");
    expect(await entries(aliceList("Ann"))).toEqual(before.ann);
    const after = await entries(aliceList("Bruno"));
    expect(after.slice(0, before.bruno.length)).toEqual(before.bruno);
    expect(after.length).toBe(before.bruno.length + 1);
    await expectGapless(aliceList("Ann"));
    await expectGapless(aliceList("Bruno"));
  });

  it("the agent transfers a chat to another queue, where another agent takes it", async () => {
    await panelOf(alice, "Bruno").getByRole("button", { name: "Transfer" }).click();
    await alice.getByLabel("Queue", { exact: true }).fill("billing");
    await alice.locator("#transfer-dialog").getByRole("button", { name: "Transfer" }).click();
    await panelOf(alice, "Bruno").locator(".closed", { hasText: "You transferred the chat to “billing”" }).waitFor();
    await bruno.locator("#presence", { hasText: "Waiting for an agent" }).waitFor();

    await bob.goto(`${s.server.url}/agent/`);
    await bob.getByLabel("Agent ID").fill("bob");
    await bob.getByLabel("API key").fill(DESK_KEY);
    await bob.getByLabel("Your name for customers").fill("Bob");
    await bob.getByLabel("Queues").fill("billing");
    await bob.getByRole("button", { name: "Sign in" }).click();
    await bob.locator(".queue-item", { hasText: "Bruno" }).waitFor();
    await bob.getByRole("button", { name: "Accept next chat" }).click();
    // Bob sees the whole transcript, Alice's part included.
    await expectOnce(panelOf(bob, "Bruno").locator("ol.transcript"), "Billing handles that");
    await bruno.locator("#presence", { hasText: "Bob is here to help" }).waitFor();
  });

  it("the customer leaves: the agent's chat shows it ended", async () => {
    await bruno.getByRole("button", { name: "End chat" }).click();
    await bruno.getByRole("button", { name: "Start a new chat" }).waitFor();
    await panelOf(bob, "Bruno").locator(".closed", { hasText: "The chat has ended" }).waitFor();
    expect(await bob.getByRole("tab", { name: /Bruno/ }).locator(".tag").innerText()).toBe("Ended");
  });

  it("the README's script tag puts the widget on a shop's page (another origin): a chat through it survives the shop's page reloading", async () => {
    const shop = await shopServer(embedSnippet("script", s.server.url));
    const carla = watch(await (await browser.newContext({ viewport: { width: 1100, height: 800 } })).newPage(), "carla");
    try {
      await carla.goto(shop.url);
      await carla.getByRole("button", { name: "Talk to us" }).click();
      const widget = carla.frameLocator("#opengms-chat iframe");
      expect(await widget.locator("h1").innerText()).toBe("Talk to us");
      await widget.getByLabel("Your name").fill("Carla");
      await widget.getByRole("button", { name: "Start chat" }).click();
      await alice.locator(".queue-item", { hasText: "Carla" }).waitFor();
      await alice.getByRole("button", { name: "Accept next chat" }).click();
      await widget.getByRole("textbox", { name: "Message" }).fill("Do you ship to Norway?");
      await widget.getByRole("textbox", { name: "Message" }).press("Enter");
      await expectOnce(aliceList("Carla"), "Do you ship to Norway?");
      await panelOf(alice, "Carla").getByLabel("Reply").fill("We do, in 3 to 5 days.");
      await panelOf(alice, "Carla").getByLabel("Reply").press("Enter");
      await expectOnce(widget.locator("#transcript"), "We do, in 3 to 5 days.");
      const before = await entries(widget.locator("#transcript"));
      // The shop's page reloads: the widget opens again by itself, on the same chat.
      await carla.reload();
      const again = carla.frameLocator("#opengms-chat iframe");
      await expectOnce(again.locator("#transcript"), "We do, in 3 to 5 days.");
      expect(await entries(again.locator("#transcript"))).toEqual(before);
      expect(await carla.getByRole("button", { name: "Close the chat" }).getAttribute("aria-expanded")).toBe("true");
    } finally {
      await carla.context().close();
      await new Promise((resolve) => shop.server.close(resolve));
    }
  });

  it("the README's frame shows the widget on a shop's page", async () => {
    const shop = await shopServer(embedSnippet("iframe", s.server.url));
    const page = await (await browser.newContext()).newPage();
    try {
      await page.goto(shop.url);
      const widget = page.frameLocator("iframe");
      await widget.getByRole("button", { name: "Start chat" }).waitFor();
      expect(await widget.locator("h1").innerText()).toBe("Talk to us");
    } finally {
      await page.context().close();
      await new Promise((resolve) => shop.server.close(resolve));
    }
  });

  it("the agent ends a chat: the customer sees it ended, and a reload starts afresh", async () => {
    await alice.getByRole("tab", { name: /Ann/ }).click();
    await panelOf(alice, "Ann").getByRole("button", { name: "End chat" }).click();
    await ann.locator("#transcript li.notice", { hasText: "The chat has ended" }).waitFor();
    await ann.getByRole("button", { name: "Start a new chat" }).waitFor();
    expect(await ann.locator("#composer").isHidden()).toBe(true);
    await panelOf(alice, "Ann").locator(".closed", { hasText: "The chat has ended" }).waitFor();
    await ann.reload();
    await ann.getByRole("button", { name: "Start chat" }).waitFor();
    expect(await ann.evaluate(() => (globalThis as unknown as { sessionStorage: { length: number } }).sessionStorage.length)).toBe(0);
  });

  it("signing out gives the agent's open chats back to their queue and forgets the key", async () => {
    // Carla's chat (the embedded widget's) is still Alice's.
    expect(await alice.getByRole("tab", { name: /Carla/ }).locator(".tag").count()).toBe(0);
    await alice.getByRole("button", { name: "Sign out" }).click();
    await alice.getByRole("button", { name: "Sign in" }).waitFor();
    expect(await alice.evaluate(() => (globalThis as unknown as { sessionStorage: { length: number } }).sessionStorage.length)).toBe(0);
    expect(await alice.getByLabel("API key").inputValue()).toBe("");
    await alice.getByLabel("API key").fill(DESK_KEY);
    await alice.getByRole("button", { name: "Sign in" }).click();
    await alice.locator(".queue-item", { hasText: "Carla" }).waitFor();
    expect(await alice.getByRole("tab").count()).toBe(0);
  });

  it("the pages reported no error (no script failed, no content security policy refusal)", () => {
    expect(problems).toEqual([]);
  });
});
