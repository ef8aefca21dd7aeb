// The doculearn UI in a real browser (Debian's headless Chromium driven by
// playwright-core), against a real daemon that tests/ui.rs starts and
// controls. Run by tests/ui.rs, not on its own: it reads
//   BASE_URL      the daemon's http://host:port
//   TOKEN         a token for USER_ID (the dev-mode button mints the same user)
//   CORPUS        ../shared/corpus
//   SCREENSHOTS   where to keep a screenshot of each state
// To restart the daemon mid-job it prints "@@restart" and waits for
// "@@restarted" on stdin.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const BASE_URL = process.env.BASE_URL;
const TOKEN = process.env.TOKEN;
const CORPUS = process.env.CORPUS;
const SHOTS = process.env.SCREENSHOTS;
for (const [k, v] of Object.entries({ BASE_URL, TOKEN, CORPUS, SHOTS })) {
  if (!v) throw new Error(`${k} is not set; run this through tests/ui.rs (cargo test --test ui)`);
}
mkdirSync(SHOTS, { recursive: true });

const STAGES = ["queued", "downloading", "extracting", "chunking", "embedding", "storing", "completed"];

const stdinLines = createInterface({ input: process.stdin });
const waiting = [];
stdinLines.on("line", (line) => {
  const w = waiting.shift();
  if (w) w(line.trim());
});
function nextControlLine() {
  return new Promise((resolve) => waiting.push(resolve));
}

let browser;
let context;
let page;
const consoleErrors = [];
// Every console line, kept to explain a failure.
const consoleLines = [];
// File choosers the page opened. The listener is attached once, before any
// test, so Playwright's interception of the native dialog is already on when
// a key press opens one (attaching it in the same breath as the key press
// races the interception on a loaded machine).
const choosers = [];

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

function card(name) {
  return page.locator("article.card", { has: page.locator("h3", { hasText: name }) }).first();
}

async function progressOf(name) {
  return Number(await card(name).locator("[role=progressbar]").getAttribute("aria-valuenow"));
}

async function stageClasses(name) {
  return card(name).locator(".stages li").evaluateAll((lis) =>
    Object.fromEntries(lis.map((li) => [li.dataset.stage, li.className])));
}

async function uploadFiles(files) {
  await page.locator("#files").setInputFiles(files);
}

before(async () => {
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("console", (m) => {
    // The browser itself logs refused connections while the daemon restarts.
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION_REFUSED/.test(m.text())) {
      consoleErrors.push(m.text());
    }
  });
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("filechooser", (c) => choosers.push(c));
});

after(async () => {
  await browser?.close();
  stdinLines.close();
});

test("sign-in: the dev-mode button signs in without pasting a token, and a pasted token works too", async () => {
  await page.goto(BASE_URL);
  await page.locator("#signin").waitFor({ state: "visible" });
  await shot("01-sign-in");
  // A wrong token is refused with words, not a blank page.
  await page.fill("#token-input", "not-a-token");
  await page.click("#signin-form button[type=submit]");
  assert.match(await page.locator("#signin-error").textContent(), /not a valid token/);
  await page.locator("#dev-token").waitFor({ state: "visible" });
  await page.click("#dev-token");
  await page.locator("#app").waitFor({ state: "visible" });
  await page.locator("#conn.live").waitFor();
  assert.equal(await page.locator("#conn").textContent(), "Live");
  // Sign out, then paste the token the quick start printed.
  await page.click("#sign-out");
  await page.locator("#signin").waitFor({ state: "visible" });
  await page.fill("#token-input", TOKEN);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#conn.live").waitFor();
  assert.equal(await page.locator("#empty").isVisible(), true, "a new user has no documents");
});

test("the socket dies mid-job (daemon killed and restarted): the card still reaches its final state without a reload", { timeout: 180_000 }, async () => {
  const name = "debian-manifesto.txt";
  await page.evaluate(() => { window.__sameDocument = true; });
  await uploadFiles(join(CORPUS, name));
  // The daemon is configured to hang once at the start of embedding.
  await card(name).locator('.stages li[data-stage="embedding"].active').waitFor({ timeout: 60_000 });
  const before = await progressOf(name);
  assert.ok(before >= 40 && before < 100, `progress before the restart: ${before}`);
  await shot("02-running-before-restart");
  console.log("@@restart");
  // The page notices the dead socket and backs off.
  await page.locator("#conn.down").waitFor({ timeout: 20_000 });
  assert.match(await page.locator("#conn").textContent(), /Reconnecting in \d+ s/);
  await shot("03-socket-down");
  assert.equal(await nextControlLine(), "@@restarted");
  await card(name).locator(".badge", { hasText: "completed" }).waitFor({ timeout: 120_000 });
  assert.equal(await progressOf(name), 100);
  const stages = await stageClasses(name);
  for (const s of STAGES) assert.equal(stages[s], "done", `stage ${s} is ticked`);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
  await page.locator("#conn.live").waitFor();
  await page.locator(".toast", { hasText: `${name} is ready` }).waitFor();
  await shot("04-completed-after-restart");
});

test("a real PDF: the card moves through every stage to 100 % with a success toast", { timeout: 180_000 }, async () => {
  // A short paper first (the search test looks for it), then the corpus's
  // biggest manual (1,100 chunks): long enough in embedding for the page to
  // be seen mid-way however fast the model runs.
  await uploadFiles(join(CORPUS, "jacow-latex-a4.pdf"));
  await card("jacow-latex-a4.pdf").locator(".badge", { hasText: "completed" }).waitFor({ timeout: 120_000 });
  const name = "gnuplot-manual.pdf";
  await uploadFiles(join(CORPUS, name));
  const c = card(name);
  await c.waitFor();
  // Sample the bar as it moves: it never goes backwards.
  const seen = [];
  let midShot = false;
  for (let i = 0; i < 1200; i++) {
    const p = await progressOf(name);
    seen.push(p);
    if (!midShot && p > 40 && p < 85) {
      await shot("05-pdf-embedding");
      midShot = true;
      assert.match(await c.locator(".message").textContent(), /chunk \d+\/\d+/i);
      // Earlier jobs gave the analytics numbers, so an ETA shows.
      assert.match(await c.locator(".times").textContent(), /Elapsed .* · ETA /);
    }
    if (p === 100) break;
    await page.waitForTimeout(100);
  }
  assert.ok(midShot, `the bar was seen mid-way through embedding (saw ${[...new Set(seen)].join(", ")})`);
  for (let i = 1; i < seen.length; i++) {
    assert.ok(seen[i] >= seen[i - 1], `the bar went back from ${seen[i - 1]} to ${seen[i]}`);
  }
  await c.locator(".badge", { hasText: "completed" }).waitFor({ timeout: 60_000 });
  const stages = await stageClasses(name);
  for (const s of STAGES) assert.equal(stages[s], "done", `stage ${s} is ticked`);
  const bar = c.locator("[role=progressbar]");
  assert.equal(await bar.getAttribute("aria-valuenow"), "100");
  assert.equal(await bar.getAttribute("aria-valuemin"), "0");
  assert.equal(await bar.getAttribute("aria-valuemax"), "100");
  assert.match(await c.locator(".times").textContent(), /Elapsed .* · \d+ chunks/);
  assert.equal(await c.locator("button[data-action=cancel]").isVisible(), false, "no Cancel on a finished card");
  await page.locator(".toast", { hasText: `${name} is ready` }).waitFor();
  await shot("06-pdf-completed");
});

test("a broken PDF fails with a reason in words and offers Retry", { timeout: 120_000 }, async () => {
  const name = "broken-report.pdf";
  await uploadFiles({ name, mimeType: "application/pdf", buffer: Buffer.from("%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a PDF body\n") });
  const c = card(name);
  await c.locator(".badge", { hasText: "failed in" }).waitFor({ timeout: 60_000 });
  const reason = (await c.locator(".reason").textContent()).trim();
  assert.match(reason, /PDF/i, `reason: ${reason}`);
  assert.doesNotMatch(reason, /panicked|unwrap|Error\(|\{/, `reason reads like internals: ${reason}`);
  await page.locator(".toast.failed", { hasText: name }).waitFor();
  const retry = c.locator("button[data-action=retry]");
  assert.equal(await retry.isVisible(), true);
  assert.equal(await c.locator("button[data-action=cancel]").isVisible(), false);
  await shot("07-broken-failed");
  // Retry runs it again; a broken file fails again, with the same reason.
  await retry.click();
  await page.locator(".toast", { hasText: `Retrying ${name}` }).waitFor();
  await page.waitForFunction((n) => {
    const cards = [...document.querySelectorAll("article.card")];
    const el = cards.find((x) => x.querySelector("h3")?.textContent === n);
    return el && el.classList.contains("failed") &&
      [...document.querySelectorAll(".toast.failed")].filter((t) => t.textContent.includes(n)).length >= 2;
  }, name, { timeout: 60_000 });
  assert.equal((await c.locator(".reason").textContent()).trim(), reason);
});

test("a PDF with a page whose text cannot be decoded completes with a warning on its card", { timeout: 60_000 }, async () => {
  const name = "private-font.pdf";
  await uploadFiles(process.env.WARN_PDF);
  const c = card(name);
  await c.locator(".badge", { hasText: "completed" }).waitFor({ timeout: 45_000 });
  const warning = c.locator(".warning");
  await warning.waitFor();
  assert.match(await warning.textContent(), /1 of 3 pages had text that could not be decoded \(page 2\)/);
  assert.equal(await warning.getAttribute("role"), "status");
  await page.locator(".toast", { hasText: `${name} is ready` }).filter({ hasText: "could not be decoded" }).waitFor();
  // A clean document's card has none.
  assert.equal(await card("jacow-latex-a4.pdf").locator(".warning").isVisible(), false);
  await shot("07b-warning");
});

test("search finds the PDF's chunk and names the document", { timeout: 60_000 }, async () => {
  await page.fill("#search-input", "margin specifications for A4 paper");
  await page.press("#search-input", "Enter");
  const first = page.locator("#results li.hit").first();
  await first.waitFor({ timeout: 30_000 });
  assert.equal(await first.locator(".hit-title").textContent(), "jacow-latex-a4.pdf");
  assert.match(await first.locator("blockquote").textContent(), /margin/i);
  assert.match(await first.locator(".hit-meta").textContent(), /page \d+ · /);
  // The query's words are marked in the snippet (hybrid search, the default mode).
  const marks = await first.locator("blockquote mark").allTextContents();
  assert.ok(marks.length > 0, "some query word is highlighted");
  for (const m of marks) assert.match(m, /^(margin|specifications|for|a4|paper)$/i);
  await shot("08-search");
  // Keyword mode: only chunks holding a query word.
  await page.selectOption("#search-mode", "keyword");
  await page.fill("#search-input", "JACoW");
  await page.press("#search-input", "Enter");
  await page.locator("#results li.hit mark").first().waitFor({ timeout: 30_000 });
  for (const m of await page.locator("#results li.hit").first().locator("mark").allTextContents()) {
    assert.match(m, /^jacow$/i);
  }
  await page.selectOption("#search-mode", "hybrid");
});

test("a file uploaded again is not stored twice: its card says it was already uploaded", { timeout: 60_000 }, async () => {
  const name = "jacow-latex-a4.pdf";
  const before = await page.locator("article.card:not(.batch)").count();
  await uploadFiles(join(CORPUS, name));
  const c = card(name);
  await c.locator(".duplicate", { hasText: "Already uploaded" }).waitFor({ timeout: 30_000 });
  assert.equal(await c.locator(".badge").textContent(), "completed", "the existing document's state");
  await page.locator(".toast", { hasText: `${name} was already uploaded (completed)` }).waitFor();
  assert.equal(await page.locator("article.card:not(.batch)").count(), before, "no new card");
  assert.equal(await page.locator("article.card:not(.batch) h3").first().textContent(), name, "its card is on top");
  await shot("08b-already-uploaded");
});

test("many files become a batch with one aggregated bar", { timeout: 120_000 }, async () => {
  const files = ["a", "b", "c"].map((x) => ({
    name: `notes-${x}.md`, mimeType: "text/markdown",
    buffer: Buffer.from(`# Notes ${x}\n\nSome *markdown* about batch ${x}.\n`.repeat(20)),
  }));
  await uploadFiles(files);
  const batch = page.locator("article.card.batch").first();
  await batch.waitFor();
  await batch.locator(".badge", { hasText: "finished" }).waitFor({ timeout: 90_000 });
  const bar = batch.locator("[role=progressbar]");
  assert.equal(await bar.getAttribute("aria-valuenow"), "100");
  assert.match(await bar.getAttribute("aria-valuetext"), /3 of 3 completed, 0 failed/);
  for (const f of files) await card(f.name).locator(".badge", { hasText: "completed" }).waitFor();
  await shot("09-batch");
});

test("Cancel stops a queued or running job", { timeout: 60_000 }, async () => {
  // A batch of six keeps the workers busy, so the last file is still queued
  // or early in its run when Cancel is pressed.
  const files = Array.from({ length: 6 }, (_, i) => ({
    name: `bulk-${i}.txt`, mimeType: "text/plain",
    // About 350 chunks each: seconds of work for the workers however fast the model runs.
    buffer: Buffer.from(`Bulk text ${i}. `.repeat(20000)),
  }));
  await uploadFiles(files);
  const last = card("bulk-5.txt");
  await last.waitFor();
  const cancel = last.locator("button[data-action=cancel]");
  await cancel.click();
  await last.locator(".badge", { hasText: "cancelled" }).waitFor({ timeout: 30_000 });
  await page.locator(".toast", { hasText: "bulk-5.txt was cancelled" }).waitFor();
  assert.match(await last.locator(".reason").textContent(), /cancel/i);
  assert.equal(await last.locator("button[data-action=retry]").isVisible(), true);
});

test("the list survives a reload, and the page works at phone width with the keyboard", { timeout: 60_000 }, async () => {
  const before = await page.locator("article.card:not(.batch)").count();
  await page.reload();
  await page.locator("#conn.live").waitFor();
  await card("jacow-latex-a4.pdf").locator(".badge", { hasText: "completed" }).waitFor();
  assert.equal(await page.locator("article.card:not(.batch)").count(), before);
  assert.equal(await progressOf("jacow-latex-a4.pdf"), 100);
  assert.match(await card("broken-report.pdf").locator(".reason").textContent(), /PDF/i);
  // The warning comes back from the document list, not only from the event.
  assert.match(await card("private-font.pdf").locator(".warning").textContent(), /could not be decoded/);

  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px at 375px`);
  await shot("10-phone");

  // The drop zone is reachable with Tab and opens the file picker with Enter.
  await page.locator("#drop").focus();
  assert.equal(await page.evaluate(() => document.activeElement?.id), "drop", "the drop zone takes focus");
  await page.evaluate(() => {
    window.__pickerClicks = 0;
    document.getElementById("files").addEventListener("click", () => window.__pickerClicks++);
  });
  const seen = choosers.length;
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => window.__pickerClicks > 0, null, { timeout: 10_000 });
  const deadline = Date.now() + 20_000;
  while (choosers.length === seen && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(
    choosers.length > seen,
    `Enter on the drop zone clicked the file input but no file chooser opened; console:\n${consoleLines.slice(-20).join("\n")}`,
  );
  assert.equal(choosers.at(-1).isMultiple(), true, "the picker takes many files");
  let tabbed = false;
  await page.locator("body").focus();
  for (let i = 0; i < 12 && !tabbed; i++) {
    await page.keyboard.press("Tab");
    tabbed = await page.evaluate(() => document.activeElement?.id === "search-input");
  }
  assert.ok(tabbed, "the search box is reachable with Tab");
  assert.deepEqual(consoleErrors, [], "no script errors in the console");
});
