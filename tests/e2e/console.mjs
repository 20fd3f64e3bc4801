// End-to-end: `sealfs console` in Debian's Chromium (headless), driven by
// playwright-core. Stores a secret, finds it in the table, reveals it,
// deletes it after confirming, and checks the vault through the CLI at
// each step. Run by tests/console.rs, which starts the console and passes
// CONSOLE_URL, SEALFS_BIN, SEALFS_VAULT_DIR and optionally SCREENSHOT.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.CONSOLE_URL;
const bin = process.env.SEALFS_BIN;
const REF = "global/e2e_token";
const VALUE = "e2e-secret-value-123";

function cli(args, input) {
  return execFileSync(bin, args, { input: input ?? "", encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
}

function cliFails(args) {
  try {
    execFileSync(bin, args, { stdio: ["pipe", "pipe", "pipe"] });
  } catch (e) {
    return e.stderr.toString();
  }
  throw new Error(`sealfs ${args.join(" ")} succeeded`);
}

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log("ok:", what);
}

const profile = mkdtempSync(join(tmpdir(), "sealfs-e2e-"));
// A fresh profile (Playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
  ],
});
try {
  await browser.grantPermissions(["clipboard-read", "clipboard-write"]);
  const page = await browser.newPage();
  // A clock the test moves, for the reveal's 30 s auto-hide.
  await page.clock.install();
  const errors = [];
  // A 4xx answer the page handles shows up as "Failed to load resource": not a page error.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("Failed to load resource")) errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));

  await page.goto(url);
  await page.waitForFunction(() => location.hash === "" && location.search === "");
  check(true, "the token and the page key left the address bar");
  await page.waitForSelector('tr[data-ref="global/seed"]');
  check(true, "the table lists the vault's secrets");
  check(!(await page.content()).includes("sk-openai"), "no value is in the page as loaded");

  // Configured refs (tests/console.rs passes a --config naming three).
  // Waits until the field's status reads `want` (the table is refreshed
  // after each action); fails after 5 s.
  const status = async (field, want) => {
    const cell = page.locator("#config tbody tr", { hasText: field }).locator("td").nth(2);
    try {
      await cell.filter({ hasText: new RegExp(`^${want}$`) }).waitFor({ timeout: 5000 });
      return true;
    } catch (_) {
      console.log(`status of ${field}: ${await cell.textContent().catch(() => "(no row)")}`);
      return false;
    }
  };
  check(await status("openai_api_key_vault_ref", "resolved"), "a configured ref that resolves says so");
  check(await status("e2e_token_vault_ref", "missing"), "a configured ref with no secret is missing");
  check(await status("broken_vault_ref", "invalid"), "a malformed configured ref is invalid");

  // Store.
  await page.fill("#store-ref", REF);
  await page.fill("#store-value", VALUE);
  await page.click("#store-form button[type=submit]");
  await page.waitForSelector(`tr[data-ref="${REF}"]`);
  check((await page.inputValue("#store-value")) === "", "the value field is cleared after storing");
  check(cli(["get", REF]) === VALUE, "the CLI reads the stored value");
  check(!(await page.content()).includes(VALUE), "the value is nowhere in the page");
  check(await status("e2e_token_vault_ref", "resolved"), "the configured ref resolves once stored");

  // Filter and sort.
  await page.fill("#filter", "e2e_");
  check((await page.locator("#secrets tbody tr").count()) === 1, "the filter narrows the table");
  await page.fill("#filter", "");
  const order = () => page.locator("#secrets tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.ref));
  const ascending = ["global/e2e_token", "global/openai_api_key", "global/seed"];
  check(JSON.stringify(await order()) === JSON.stringify(ascending), "the table starts sorted by ref");
  await page.click('th button[data-sort="ref"]');
  check(JSON.stringify(await order()) === JSON.stringify([...ascending].reverse()), "a click on Ref sorts descending");
  check(await page.getAttribute('th:has(button[data-sort="ref"])', "aria-sort") === "descending", "aria-sort says so");
  await page.click('th button[data-sort="length"]');
  const lengths = await page.locator("#secrets tbody tr td:nth-child(2)").allTextContents();
  check(JSON.stringify(lengths) === JSON.stringify(["9", "10", "20"]), "a click on Length sorts by length");

  // Reveal: masked first, shown on a second click.
  await page.click(`button[aria-label="Reveal ${REF}"]`);
  await page.waitForSelector("#reveal-panel:not([hidden])");
  const masked = await page.textContent("#reveal-value");
  check(masked.length > 0 && !masked.includes(VALUE), "the revealed value starts masked");
  await page.click("#reveal-show");
  check((await page.textContent("#reveal-value")) === VALUE, "a second click shows the value");
  await page.click("#reveal-copy");
  check(await page.evaluate(() => navigator.clipboard.readText()) === VALUE, "Copy puts the value on the clipboard");
  const log = cli(["audit-log", "--json"]);
  check(log.split("\n").some((l) => l.includes('"source":"console"') && l.includes('"op":"reveal"') && l.includes(REF)),
    "the reveal is in the audit log with the console as its source");
  check(!log.includes(VALUE), "the audit log holds no value");
  await page.click("#reveal-hide");
  check(!(await page.content()).includes(VALUE), "hiding removes the value from the page");
  // Left alone, a revealed value goes after 30 s.
  await page.click(`button[aria-label="Reveal ${REF}"]`);
  await page.click("#reveal-show");
  check((await page.textContent("#reveal-value")) === VALUE, "revealed again");
  await page.clock.runFor(29_000);
  check(await page.isVisible("#reveal-panel"), "still shown after 29 s");
  await page.clock.runFor(2_000);
  check(await page.isHidden("#reveal-panel") && !(await page.content()).includes(VALUE), "hidden after 30 s");

  if (process.env.SCREENSHOT) {
    await page.click(`button[aria-label="Inspect ${REF}"]`);
    await page.waitForSelector("#inspect-panel:not([hidden])");
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    check(true, "screenshot saved");
  }

    // History and rollback: a wrong value written by the CLI is undone from
  // the page, after a confirmation naming the version.
  const WRONG = "wrong-value-from-the-cli";
  cli(["set", REF], WRONG);
  await page.click("#audit-refresh");
  await page.click(`button[aria-label="History of ${REF}"]`);
  await page.waitForSelector('#history-panel:not([hidden]) tr[data-version="2"]');
  const rows = await page.$$eval("#history tbody tr", (trs) => trs.map((tr) => tr.textContent));
  check(rows.length === 2 && rows[0].includes("current") && rows[0].includes("cli") && rows[1].includes("console"),
    "the history lists both versions, newest first, with who wrote each: " + JSON.stringify(rows));
  check(!(await page.content()).includes(VALUE) && !(await page.content()).includes(WRONG), "the history shows no value");
  check((await page.locator(`button[aria-label="Roll back ${REF} to version 2"]`).count()) === 0,
    "the current version has no Roll back");
  await page.click(`button[aria-label="Roll back ${REF} to version 1"]`);
  await page.waitForSelector("#confirm-rollback[open]");
  check((await page.textContent("#rollback-title")).includes(REF) && (await page.textContent("#rollback-version")) === "1",
    "the confirmation names the secret and the version");
  await page.click("#confirm-rollback button[value=cancel]");
  await page.waitForSelector("#confirm-rollback", { state: "hidden" });
  check(cli(["get", REF]) === WRONG, "Cancel rolls nothing back");
  await page.click(`button[aria-label="Roll back ${REF} to version 1"]`);
  await page.waitForSelector("#confirm-rollback[open]");
  await page.click("#rollback-yes");
  await page.waitForSelector('#history tr[data-version="3"]');
  check(cli(["get", REF]) === VALUE, "the rollback brought the value of version 1 back");
  check((await page.textContent('#history tr[data-version="3"]')).includes("rollback to 1"),
    "the history says version 3 is a rollback to 1");
  check(cli(["get", REF, "--version", "2"]) === WRONG, "the wrong value stays in the history");
  check(cli(["audit-log", "--json"]).split("\n").some((l) => l.includes('"source":"console"') && l.includes('"op":"rollback"') && l.includes(REF)),
    "the rollback is in the audit log");

  // Delete: Cancel keeps it; confirming deletes it.
  await page.click(`button[aria-label="Delete ${REF}"]`);
  await page.waitForSelector("#confirm-delete[open]");
  await page.click("#confirm-delete button[value=cancel]");
  await page.waitForSelector("#confirm-delete", { state: "hidden" });
  check(cli(["get", REF]) === VALUE, "Cancel deletes nothing");
  await page.click(`button[aria-label="Delete ${REF}"]`);
  await page.waitForSelector("#confirm-delete[open]");
  check((await page.textContent("#confirm-title")).includes(REF), "the confirmation names scope/key");
  await page.click("#confirm-yes");
  await page.waitForSelector(`tr[data-ref="${REF}"]`, { state: "detached" });
  check(cliFails(["get", REF]).includes("not found"), "the CLI no longer finds it");
  check(!cli(["list"]).includes(REF), "the CLI list no longer shows it");

  // A bad ref gets a clear message and changes nothing.
  await page.fill("#store-ref", "global/bad ref");
  await page.fill("#store-value", "x");
  await page.click("#store-form button[type=submit]");
  await page.locator("#message", { hasText: "bad ref" }).waitFor({ timeout: 5000 });
  check(true, "a bad ref is a clear message");
  check(!cli(["list"]).includes("bad"), "and nothing was stored");
  check(errors.length === 0, "no errors in the browser console: " + errors.join("; "));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log("e2e: all checks passed");
