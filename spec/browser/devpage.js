#!/usr/bin/env node
// devpage.js - clicks through flyte-host dev's web page in a real browser:
// Debian's chromium, headless, driven by playwright-core.
//
//   node spec/browser/devpage.js URL [--screenshot FILE] [--pack FILE]
//   node spec/browser/devpage.js URL --waiting
//
// --pack FILE: the pack file dev runs (a copy): it is broken, to see the
// page show the failed reload, then put back.
//
// It starts nothing itself: spec/host/devpage_spec.lua starts
// `flyte-host dev packs/jira.lua` (or, for --waiting, a stand-in that no
// pack has registered with) and passes its root URL. Exits 0 when every
// step passed, 1 naming the step that failed, 2 on a usage error.
// FLYTE_CHROMIUM overrides the browser (default /usr/bin/chromium).
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const STEP_TIMEOUT = 20000;  // ms for any one step (a loaded CI machine)
const TOTAL_TIMEOUT = 120000; // ms for the whole run
const CHROMIUM = process.env.FLYTE_CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
  "--disable-dev-shm-usage", "--no-first-run",
  "--disable-background-networking", "--disable-component-update",
  "--disable-sync"];

function usage(message) {
  console.error("devpage.js: " + message + "\nusage: node " +
    "spec/browser/devpage.js URL [--screenshot FILE] [--waiting]");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {url: null, screenshot: null, waiting: false, pack: null};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--waiting") opts.waiting = true;
    else if (argv[i] === "--screenshot" && i + 1 < argv.length)
      opts.screenshot = argv[++i];
    else if (argv[i] === "--pack" && i + 1 < argv.length)
      opts.pack = argv[++i];
    else if (!argv[i].startsWith("--") && opts.url === null) opts.url = argv[i];
    else usage("unexpected argument '" + argv[i] + "'");
  }
  if (opts.url === null) usage("the page's URL is required");
  return opts;
}

let currentStep = "starting";
async function step(name, fn) {
  currentStep = name;
  const started = Date.now();
  const value = await fn();
  console.log("ok   " + name + " (" + (Date.now() - started) + " ms)");
  return value;
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// "rgb(198, 40, 40)" -> whether it reads as red.
function isRed(css) {
  const m = /rgba?\((\d+), (\d+), (\d+)/.exec(css || "");
  return !!m && +m[1] >= 150 && +m[2] <= 100 && +m[3] <= 100;
}

// The page before any pack has registered.
async function checkWaiting(page) {
  await step("says it is waiting for the pack to register", async () => {
    await page.locator("#pack")
      .getByText("Waiting for the pack to register").waitFor();
  });
  await step("offers no command and no Send until then", async () => {
    check(await page.locator("#command").isDisabled(),
      "the command <select> is enabled with no pack registered");
    check(await page.locator("#send").isDisabled(),
      "the Send button is enabled with no pack registered");
  });
}

// The page of a running `flyte-host dev packs/jira.lua`.
async function checkSendAction(page, opts) {
  const results = page.locator("#results");
  await step("shows the pack's command createIssue", async () => {
    await page.locator("#commands").getByText("createIssue").waitFor();
    await page.locator("#command option[value=createIssue]")
      .waitFor({state: "attached"});
    check(await page.locator("#command").inputValue() === "createIssue",
      "createIssue is not the command selected");
  });
  await step("offers {} as the input's placeholder before any action",
    async () => {
      check(await page.locator("#input").getAttribute("placeholder") === "{}",
        "the placeholder is " +
        await page.locator("#input").getAttribute("placeholder"));
    });
  await step("says which code serves", async () => {
    await page.locator("#code").getByText("Serving the code loaded at")
      .waitFor();
  });
  await step("shows the pack's events", async () => {
    const text = await page.locator("#pack-events").innerText();
    check(text.includes("IssueCreated") && text.includes("IssueCreationError"),
      "the pack's events are not listed: " + JSON.stringify(text));
  });
  await step("says when the input is not JSON, and will not send it",
    async () => {
      await page.locator("#input").fill('{"project": FOO}');
      await page.locator("#input-error").getByText("not JSON").waitFor();
      check(await page.locator("#input").getAttribute("aria-invalid")
        === "true", "the input is not marked aria-invalid");
      check(await page.locator("#send").isDisabled(),
        "Send is enabled with an input that is not JSON");
    });
  let id;
  await step("sends createIssue {\"project\": \"FOO\"} with Send", async () => {
    await page.locator("#input").fill('{"project": "FOO"}');
    check(await page.locator("#input-error").innerText() === "",
      "a validation message stays for valid JSON");
    await page.locator("#send").click();
    const status = page.locator("#send-status");
    await status.getByText(/queued action #\d+/).waitFor();
    id = (await status.innerText()).match(/#(\d+)/)[1];
  });
  await step("shows its result, IssueCreated for FOO", async () => {
    const entry = results.locator(`.entry[data-action-id="${id}"]`);
    await entry.filter({hasText: "IssueCreated"}).waitFor();
    const text = await entry.innerText();
    check(text.includes('"project": "FOO"'),
      "the result is not pretty-printed JSON naming FOO: " + text);
    check(text.includes("createIssue") && text.includes("DONE"),
      "the entry does not name its command and state: " + text);
    check(!(await entry.getAttribute("class")).includes("fatal"),
      "an IssueCreated result is styled as FATAL");
  });
  let fatalId;
  await step("shows a FATAL result (unknown command), newest first",
    async () => {
      fatalId = await page.evaluate(async () => {
        const res = await fetch("/dev/actions", {method: "POST",
          body: JSON.stringify({command: "nope", input: {},
            any_command: true})});
        return (await res.json()).id;
      });
      const entry = results.locator(`.entry[data-action-id="${fatalId}"]`);
      await entry.filter({hasText: "FATAL"}).waitFor();
      const text = await entry.innerText();
      check(text.includes("nope") && text.includes("is unknown"),
        "the FATAL entry does not show the host's message: " + text);
      const first = await results.locator(".entry").first()
        .getAttribute("data-action-id");
      check(first === String(fatalId),
        "the newest result is not first (first is #" + first + ")");
    });
  await step("styles the FATAL result red", async () => {
    const entry = results.locator(`.entry[data-action-id="${fatalId}"]`);
    check((await entry.getAttribute("class")).split(/\s+/).includes("fatal"),
      "the FATAL entry has no 'fatal' class");
    const colors = await entry.evaluate((node) => {
      const style = getComputedStyle(node);
      return {border: style.borderLeftColor,
        text: getComputedStyle(node.querySelector("pre:last-of-type")).color};
    });
    check(isRed(colors.border) && isRed(colors.text),
      "the FATAL entry is not red: " + JSON.stringify(colors));
  });
  await step("offers the input last sent to the command as its placeholder",
    async () => {
      await page.locator("#input").fill("");
      const placeholder = await page.locator("#input")
        .getAttribute("placeholder");
      check(JSON.parse(placeholder).project === "FOO",
        "the placeholder is " + placeholder);
    });
  if (opts.pack) {
    const good = fs.readFileSync(opts.pack, "utf8");
    await step("shows a failed reload in red, and which code serves",
      async () => {
        fs.writeFileSync(opts.pack, good + "\nthis is not Lua\n");
        const code = page.locator("#code.failed");
        await code.getByText("Reload failed").waitFor();
        const text = await code.innerText();
        check(text.includes("still serving the code loaded at"),
          "the banner does not say which code serves: " + text);
        check(isRed(await code.evaluate((n) => getComputedStyle(n).color)),
          "the failed reload is not red");
      });
    await step("clears it once a reload works", async () => {
      fs.writeFileSync(opts.pack, good);
      await page.locator("#code:not(.failed)")
        .getByText("Serving the code loaded at").waitFor();
    });
  }
  if (opts.screenshot) {
    await step("takes a screenshot to " + opts.screenshot, async () => {
      await page.screenshot({path: opts.screenshot, fullPage: true});
    });
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let chromium;
  try {
    ({chromium} = require("playwright-core"));
  } catch (err) {
    console.error("devpage.js: playwright-core is not installed: run " +
      "`npm ci` in spec/browser (make browser-deps)");
    process.exit(1);
  }
  const timer = setTimeout(() => {
    console.error(`devpage.js: FAILED: no end after ${TOTAL_TIMEOUT} ms ` +
      `(at step: ${currentStep})`);
    process.exit(1);
  }, TOTAL_TIMEOUT);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "flyte-chromium-"));
  const problems = [];
  let context;
  try {
    context = await step("starts " + CHROMIUM, () =>
      chromium.launchPersistentContext(profile, {executablePath: CHROMIUM,
        headless: true, args: CHROMIUM_ARGS,
        viewport: {width: 1280, height: 800},
        reducedMotion: "reduce"})); // no new-entry highlight in screenshots
    context.setDefaultTimeout(STEP_TIMEOUT);
    const page = context.pages()[0] || await context.newPage();
    // Any script error or refused resource (the page's CSP) fails the run.
    page.on("pageerror", (err) => problems.push("page error: " + err.message));
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push("console: " + msg.text());
    });
    await step("loads " + opts.url, async () => {
      const res = await page.goto(opts.url);
      check(res.status() === 200, "HTTP " + res.status());
      check(res.headers()["content-type"] === "text/html; charset=utf-8",
        "Content-Type is " + res.headers()["content-type"]);
    });
    if (opts.waiting) await checkWaiting(page);
    else await checkSendAction(page, opts);
    currentStep = "checking the browser console";
    check(problems.length === 0, problems.join("\n"));
  } catch (err) {
    console.error(`devpage.js: FAILED at step: ${currentStep}\n  ` +
      String(err.message || err).split("\n").join("\n  "));
    if (problems.length) console.error("browser console:\n  " +
      problems.join("\n  "));
    process.exitCode = 1;
  } finally {
    clearTimeout(timer);
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, {recursive: true, force: true});
  }
}

main();
