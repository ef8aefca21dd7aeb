// The UI in a real browser (Debian's headless Chromium, playwright-core)
// behind nginx in front of two API instances, while tests/cluster.rs
// restarts both instances one after the other. Run by tests/cluster.rs:
//   BASE_URL      nginx's http://host:port
//   TOKEN         the user's token
//   SCREENSHOTS   where the final screenshot goes
// It records every WebSocket frame the page receives (over every socket it
// opens), prints "@@ready" once the page is live, waits for "@@done <job
// ids>" on stdin, waits until the page has the final event of each of those
// jobs, and prints "@@frames <json>" (job_id, seq, type per event frame, and
// one {socket_opened} per socket) for the Rust side to check against the
// database's history.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const { BASE_URL, TOKEN, SCREENSHOTS } = process.env;
for (const [k, v] of Object.entries({ BASE_URL, TOKEN, SCREENSHOTS })) {
  if (!v) throw new Error(`${k} is not set; run this through tests/cluster.rs`);
}
mkdirSync(SCREENSHOTS, { recursive: true });

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", (l) => resolve(l.trim())));

const frames = [];
// The page's console, printed if something fails.
const consoleLines = [];
const ended = new Set();
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("websocket", (ws) => {
    frames.push({ socket_opened: true });
    ws.on("framereceived", (f) => {
      let v;
      try {
        v = JSON.parse(typeof f.payload === "string" ? f.payload : f.payload.toString());
      } catch {
        return;
      }
      if (v && v.job_id && typeof v.seq === "number") {
        frames.push({ job_id: v.job_id, seq: v.seq, type: v.type });
        if (v.type === "job_completed" || v.type === "job_failed") ended.add(v.job_id);
      }
    });
  });
  await page.goto(BASE_URL);
  await page.locator("#signin").waitFor({ state: "visible" });
  await page.fill("#token-input", TOKEN);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#conn.live").waitFor({ timeout: 30_000 });
  console.log("@@ready");

  const done = await nextLine();
  if (!done.startsWith("@@done ")) throw new Error(`unexpected control line: ${done}`);
  const jobs = done.slice("@@done ".length).split(",").filter(Boolean);
  const deadline = Date.now() + 45_000;
  while (!jobs.every((j) => ended.has(j)) && Date.now() < deadline) {
    await page.waitForTimeout(100);
  }
  // Live again after the restarts, and every card at its end.
  await page.locator("#conn.live").waitFor({ timeout: 30_000 });
  await page.screenshot({ path: join(SCREENSHOTS, "cluster-after-rolling-restart.png"), fullPage: true });
  console.log(`@@frames ${JSON.stringify(frames)}`);
} catch (e) {
  console.error(`page console:\n${consoleLines.join("\n")}`);
  throw e;
} finally {
  await browser.close();
  lines.close();
}
