// End-to-end test of the shoprank console in a real headless Chromium (Debian's package).
//
//   PORT=18181 node console_test.mjs      (a `shoprank serve` must answer on 127.0.0.1:PORT)
//
// Loads the page, searches, moves weight sliders and checks that the order changes, compares
// two profiles, asks for a profile's eval numbers, saves and deletes a merchandising rule,
// and saves a screenshot to $SCREENSHOT
// (default target/console/console.png, relative to the repository root).
// Env: PORT (required), CHROMIUM (default /usr/bin/chromium), SCREENSHOT, QUERY (default 手机壳),
// CONSOLE_USER (optional user id to personalize with), EXPECT_EVAL=1 (the server has an eval set).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const port = process.env.PORT;
if (!port) {
  console.error("error: set PORT to the port of a running `shoprank serve` on 127.0.0.1");
  process.exit(2);
}
const origin = "http" + "://127.0.0.1:" + port;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const screenshot = resolve(repo, process.env.SCREENSHOT || "target/console/console.png");
const query = process.env.QUERY || "手机壳";
const user = process.env.CONSOLE_USER || "";
// EXPECT_EVAL=1: the server has an evaluation set, so the eval panel must show numbers.
const expectEval = process.env.EXPECT_EVAL === "1";
const TIMEOUT = 15000;

let passed = 0;
let failed = 0;
const failures = [];
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    failures.push(name);
    console.log(`FAIL ${name}: ${e && e.message ? e.message.split("\n")[0] : e}`);
    throw e;
  }
}
function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

let browser;
const pageErrors = [];
let exitCode = 0;
try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      // playwright gives every launch a fresh temporary user-data-dir of its own
    ],
    timeout: 60000,
  });
  const context = await browser.newContext({ viewport: { width: 1480, height: 1000 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    // HTTP errors the test provokes (400, 503) are logged by Chromium as failed loads; the page
    // shows those itself. Anything else logged as an error is a bug.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push("console: " + m.text());
  });
  // The page must need nothing but the server it came from.
  const foreign = [];
  page.on("request", (r) => {
    if (!r.url().startsWith(origin + "/") && !r.url().startsWith("data:")) foreign.push(r.url());
  });

  const ids = () => page.$$eval("#results li.hit", (els) => els.map((e) => e.dataset.id));
  const seq = () => page.$eval("#results", (e) => Number(e.dataset.seq || 0));
  const waitRendered = (after) =>
    page.waitForFunction(
      (n) => {
        const r = document.querySelector("#results");
        return Number(r.dataset.seq || 0) > n && r.dataset.state !== "loading";
      },
      after,
      { timeout: TIMEOUT },
    );
  const errorShown = () => page.$eval("#error", (e) => !e.hidden && e.textContent.trim() !== "");

  await step("load the console at /", async () => {
    const res = await page.goto(origin + "/", { waitUntil: "domcontentloaded" });
    assert(res && res.ok(), `GET / answered ${res && res.status()}`);
    await page.waitForSelector("body[data-ready='1']");
    const sliders = await page.$$eval("#weights input[type=range]", (els) => els.map((e) => e.dataset.feature));
    assert(sliders.includes("popularity") && sliders.includes("bm25"), `weight sliders: ${sliders.join(",")}`);
    const profiles = await page.$$eval("#profile option", (els) => els.map((e) => e.value));
    assert(profiles.includes("default") && profiles.includes("bm25"), `profiles: ${profiles.join(",")}`);
  });

  let before = [];
  await step(`search "${query}" (Enter)`, async () => {
    await page.fill("#q", query);
    if (user) await page.fill("#user", user);
    const n = await seq();
    await page.press("#q", "Enter");
    await waitRendered(n);
    before = await ids();
    assert(before.length >= 3, `expected at least 3 hits, got ${before.length}`);
    const bars = await page.$$eval("#results li.hit .bars .track", (els) => els.length);
    assert(bars > 0, "no explain bars rendered");
    if (user) {
      // The list shows the pseudonyms ids are stored under; the profile names this one's.
      const profile = await (await fetch(`${origin}/users/${encodeURIComponent(user)}/profile`)).json();
      const users = await page.$$eval("#users-list option", (els) => els.map((e) => e.value));
      assert(users.includes(profile.pseudonym), `user ${user} (${profile.pseudonym}) is not offered by the user selector (${users.join(",")})`);
      assert(/personalized yes/.test(await page.textContent("#summary")), `search as ${user} is not personalized`);
    }
    const total = await page.textContent("#summary");
    assert(/ms/.test(total), `no timing in the summary: ${total}`);
    assert(!(await errorShown()), "error box shown: " + (await page.textContent("#error")));
  });

  await step("the Search button searches too", async () => {
    const n = await seq();
    await page.click("#go");
    await waitRendered(n);
    const again = await ids();
    assert(JSON.stringify(again) === JSON.stringify(before), "same search, different order");
  });

  let after = [];
  await step("move sliders (popularity 2, bm25 0, semantic 0): the order changes", async () => {
    const n = await seq();
    await page.fill("#w-popularity", "2");
    await page.fill("#w-bm25", "0");
    await page.fill("#w-semantic", "0");
    await waitRendered(n);
    // Debounced: wait until the request carrying all three overrides has rendered.
    await page.waitForFunction(() => {
      const r = document.querySelector("#request").textContent;
      return r.includes("w.popularity=2") && r.includes("w.bm25=0") && r.includes("w.semantic=0") && document.querySelector("#results").dataset.state === "ready";
    });
    after = await ids();
    assert(after.length >= 3, `expected hits after re-ranking, got ${after.length}`);
    assert(JSON.stringify(after) !== JSON.stringify(before), `order did not change: ${before.slice(0, 5).join(",")}`);
    const weight = await page.$eval("#results li.hit .bars .track[data-feature='popularity']", (e) => e.title);
    assert(/weight 2\.0000/.test(weight), `explain does not show the override: ${weight}`);
    const moved = await page.$$eval("#results li.hit .move", (els) => els.map((e) => e.textContent));
    assert(moved.some((m) => m.startsWith("↑") || m.startsWith("↓")), "no rank movement shown against the profile's own order");
    assert(!(await errorShown()), "error box shown: " + (await page.textContent("#error")));
  });

  await step("compare default vs bm25", async () => {
    await page.selectOption("#cmp-a", "default");
    await page.selectOption("#cmp-b", "bm25");
    await page.click("#compare");
    await page.waitForSelector("#compare-result .cols li[data-id]");
    const a = await page.$$eval("#compare-result [data-side=a] li", (els) => els.length);
    const b = await page.$$eval("#compare-result [data-side=b] li", (els) => els.length);
    assert(a > 0 && b > 0, `compare columns: ${a} and ${b} rows`);
    const marks = await page.$$eval("#compare-result [data-side=b] li .m", (els) => els.map((e) => e.textContent));
    assert(marks.length === b && marks.every((m) => /^(↑\d+|↓\d+|=|new)$/.test(m)), `movement marks: ${marks.join(" ")}`);
    const heads = await page.$$eval("#compare-result h3", (els) => els.map((e) => e.textContent));
    assert(heads.join("|").includes("default") && heads.join("|").includes("bm25"), `column heads: ${heads.join("|")}`);
    assert(!(await errorShown()), "error box shown: " + (await page.textContent("#error")));
  });

  await step(expectEval ? "eval panel shows the profile's numbers" : "eval panel answers (numbers, or the server's reason)", async () => {
    await page.click("#eval");
    await page.waitForSelector(expectEval ? "#eval-result td[data-profile=default]" : "#eval-result table, #eval-result .err");
    const text = (await page.textContent("#eval-result")).trim();
    assert(/MRR@10/.test(text) || /:/.test(text), `eval panel: ${text}`);
    if (expectEval) {
      const cells = await page.$$eval("#eval-result td[data-metric]", (els) => els.map((e) => [e.dataset.metric, e.textContent]));
      for (const k of ["mrr@10", "ndcg@10", "recall@10", "queries"]) {
        const c = cells.find(([m]) => m === k);
        assert(c && /^\d+(\.\d+)?$/.test(c[1]), `eval ${k}: ${c ? c[1] : "missing"}`);
      }
    }
    const shown = await page.$$eval("#eval-result td[data-metric]", (els) => els.map((e) => e.dataset.metric + "=" + e.textContent).join(" "));
    console.log(`     eval: ${(shown || text.replace(/\s+/g, " ")).slice(0, 160)}`);
    assert(!(await errorShown()), "eval errors belong in the eval panel, not the error box");
  });

  await step("an unknown feature override shows the API error", async () => {
    const res = await page.evaluate(async () => {
      const r = await fetch("/search?q=x&w.no_such_feature=1");
      return { status: r.status, body: await r.json() };
    });
    assert(res.status === 400 && res.body.code && res.body.message, `expected a 400 JSON error, got ${JSON.stringify(res)}`);
  });

  await step("an API error (query over 256 characters) shows in #error", async () => {
    await page.fill("#q", "手".repeat(300));
    await page.press("#q", "Enter");
    await page.waitForSelector("#error:not([hidden])");
    const text = await page.textContent("#error");
    assert(/400/.test(text) && /invalid_query/.test(text), `error box: ${text}`);
    await page.fill("#q", query);
  });

  await step("reset restores the profile's order", async () => {
    const n = await seq();
    await page.click("#reset");
    await waitRendered(n);
    await page.waitForFunction(() => !document.querySelector("#request").textContent.includes("w."));
    const reset = await ids();
    assert(!(await errorShown()), "the error box stays after a good search");
    assert(JSON.stringify(reset) === JSON.stringify(before), "order after reset differs from the first search");
  });

  await step("switching the profile loads its weights and re-ranks", async () => {
    let n = await seq();
    await page.selectOption("#profile", "bm25");
    await waitRendered(n);
    const w = await page.$eval("#w-bm25", (e) => e.value);
    const p = await page.$eval("#w-popularity", (e) => e.value);
    assert(Number(w) === 1 && Number(p) === 0, `bm25 profile weights on the sliders: bm25=${w} popularity=${p}`);
    const r = await page.textContent("#request");
    assert(r.includes("profile=bm25") && !r.includes("w."), `request: ${r}`);
    if (expectEval) {
      await page.click("#eval");
      await page.waitForSelector("#eval-result td[data-profile=bm25]");
      const cols = await page.$$eval("#eval-result td[data-profile]", (els) => els.map((e) => e.dataset.profile));
      assert(cols.join(",") === "default,bm25", `eval columns: ${cols.join(",")}`);
    }
    n = await seq();
    await page.selectOption("#profile", "default");
    await waitRendered(n);
    const back = await ids();
    assert(JSON.stringify(back) === JSON.stringify(before), "back on default, the order differs from the first search");
  });

  await step("a rule saved in the rules panel pins a product first, shows why, and is deleted", async () => {
    const last = before[before.length - 1];
    await page.click("#rule-new");
    await page.fill("#rule-name", "console-pin");
    await page.fill("#rule-text", `description = "console test"\n[when]\nquery_equals = [${JSON.stringify(query)}]\n[[then.pin]]\nid = ${JSON.stringify(last)}\nposition = 1\n`);
    let n = await seq();
    await page.click("#rule-save");
    await waitRendered(n);
    const pinned = await ids();
    assert(pinned[0] === last, `the pinned ${last} is not first: ${pinned.slice(0, 3).join(",")}`);
    const chip = await page.textContent("#results li.hit:first-child .chip.rule");
    assert(/pinned 1/.test(chip) && /console-pin/.test(chip), `rule chip: ${chip}`);
    assert(/console-pin/.test(await page.textContent("#summary")), "the summary does not name the rule");
    assert(/console-pin/.test(await page.textContent("#rules-list")), "the rule is not listed");
    // A bad rule is refused with the server's reason, in the panel.
    await page.fill("#rule-text", "[then]\nshuffle = true\n");
    await page.click("#rule-save");
    await page.waitForSelector("#rule-status.err");
    assert(/invalid_rule/.test(await page.textContent("#rule-status")), "no reason for the refused rule");
    n = await seq();
    await page.click("#rule-delete");
    await waitRendered(n);
    const back = await ids();
    assert(JSON.stringify(back) === JSON.stringify(before), "after deleting the rule, the order differs from the first search");
    assert(!(await errorShown()), "error box shown: " + (await page.textContent("#error")));
  });

  await step("move sliders again for the screenshot", async () => {
    // Re-ranked results with their movement against the profile's own order.
    const m = await seq();
    await page.fill("#w-popularity", "2");
    await page.fill("#w-bm25", "0");
    await waitRendered(m);
    await page.waitForFunction(() => document.querySelector("#request").textContent.includes("w.bm25=0") && document.querySelector("#results").dataset.state === "ready");
  });

  await step("no page errors and no requests beyond the server", async () => {
    assert(pageErrors.length === 0, `page errors: ${pageErrors.join(" | ")}`);
    assert(foreign.length === 0, `requests to other hosts: ${foreign.join(" ")}`);
  });

  await step(`screenshot ${screenshot}`, async () => {
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: false });
  });
} catch (e) {
  exitCode = 1;
  if (failures.length === 0) {
    failed++;
    console.log(`FAIL setup: ${e && e.message ? e.message.split("\n")[0] : e}`);
  }
  if (pageErrors.length) console.log(`page errors: ${pageErrors.join(" | ")}`);
  // A screenshot of the failure helps more than none.
  try {
    if (browser) {
      const pages = browser.contexts().flatMap((c) => c.pages());
      if (pages.length) {
        mkdirSync(dirname(screenshot), { recursive: true });
        const p = screenshot.replace(/\.png$/, "") + ".failed.png";
        await pages[0].screenshot({ path: p });
        console.log(`failure screenshot: ${p}`);
      }
    }
  } catch (_) {
    /* best effort */
  }
} finally {
  if (browser) await browser.close().catch(() => {});
}
console.log(`console: ${passed} passed, ${failed} failed`);
process.exit(exitCode || (failed ? 1 : 0));
