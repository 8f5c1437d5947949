// The web terminal page in a real browser: Debian's Chromium driven by playwright-core.
//
// Run by tests/tests/web.rs against a real gateway (embedded default, local token enabled):
//
//   AETHER_WEB_URL=http://127.0.0.1:PORT AETHER_WEB_ARTIFACTS=dir node tests/web/e2e.mjs
//
// The gateway restart is done by the Rust test, on a line protocol over stdio:
//   script → stdout `STOP_GATEWAY`   Rust stops the gateway (SIGTERM) → stdin `stopped`
//   script → stdout `START_GATEWAY`  Rust starts it on the same address → stdin `started`
// Other stdout lines are progress (`STEP …`, `SCREENSHOT …`); the last one is `E2E OK`.
// Any failure exits non-zero after a `failure.png` screenshot and a dump of the page's state.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const BASE = process.env.AETHER_WEB_URL;
const ARTIFACTS = process.env.AETHER_WEB_ARTIFACTS || 'test-artifacts/web';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Generous: the machine is a loaded 2-core box and a wake includes a 1 s boot delay.
const TIMEOUT = Number(process.env.AETHER_WEB_TIMEOUT_MS || 60_000);

if (!BASE) {
  console.error('AETHER_WEB_URL is not set');
  process.exit(2);
}

// --- stdio line protocol with the Rust test --------------------------------------------------

const stdinLines = [];
const stdinWaiters = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter(line.trim());
  else stdinLines.push(line.trim());
});

async function ask(command, expected) {
  console.log(command);
  const line = stdinLines.length
    ? stdinLines.shift()
    : await withTimeout(new Promise((r) => stdinWaiters.push(r)), TIMEOUT, `reply to ${command}`);
  if (line !== expected) throw new Error(`expected "${expected}" after ${command}, got "${line}"`);
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const step = (name) => console.log(`STEP ${name}`);

// --- browser ---------------------------------------------------------------------------------

await mkdir(ARTIFACTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-gpu',
    '--no-first-run',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);

const problems = [];
const urls = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // Refused connections while the gateway restarts are expected errors; policy violations are not.
  if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) {
    problems.push(`console: ${m.text()}`);
  }
});
page.on('request', (r) => urls.push(r.url()));
page.on('websocket', (ws) => urls.push(ws.url()));
// Added by the test (outside the page's policy) to catch anything the policy blocks.
await context.addInitScript(() => {
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
  });
});

let shot = 0;
async function screenshot(name) {
  const file = path.join(ARTIFACTS, `${String(++shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  console.log(`SCREENSHOT ${file}`);
}

const tabs = () => page.evaluate(() => window.aetherTest.tabs());

// Polls `probe` (which returns a truthy value when done) until it succeeds.
async function until(what, probe, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const lines = (tab) => tab.text.split('\n').map((l) => l.trimEnd());

async function tab(index = 0) {
  const all = await tabs();
  if (!all[index]) throw new Error(`no tab ${index}`);
  return all[index];
}

// Types a command into the visible terminal and waits for an output line matching `re`
// (a line of its own, so the echoed command line does not count) that `accept` takes.
async function run(command, re, accept = () => true, index = 0) {
  const before = lines(await tab(index)).filter((l) => re.test(l)).length;
  await page.keyboard.type(command);
  await page.keyboard.press('Enter');
  return until(`output of \`${command}\``, async () => {
    const found = lines(await tab(index)).filter((l) => re.test(l));
    const last = found.at(-1);
    return found.length > before && accept(last) ? last : null;
  });
}

async function focusTerminal() {
  await page.locator('.tab-panel:not([hidden]) .xterm').click();
}

try {
  // 1. The page signs in with a local token, without typing.
  step('open the page');
  const response = await page.goto(BASE);
  // The policy the page runs under is the one under test: without it, "no violations" means nothing.
  const csp = response.headers()['content-security-policy'] || '';
  for (const directive of ["script-src 'self'", "connect-src 'self'", "default-src 'none'"]) {
    if (!csp.split(';').map((d) => d.trim()).includes(directive)) throw new Error(`CSP lacks ${directive}: ${csp}`);
  }
  if (response.headers()['x-content-type-options'] !== 'nosniff') throw new Error('no nosniff on the page');
  await page.locator('#auth-user', { hasText: 'local user' }).waitFor();
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('aether.token')).token);
  if (!token || token.split('.').length !== 3) throw new Error('no JWT in sessionStorage');
  await screenshot('signed-in');

  // 2. Create a workspace: it appears stopped.
  step('create a workspace');
  await page.locator('#create').click();
  const row = page.locator('.ws[data-status="stopped"]').first();
  await row.waitFor();
  const workspaceId = await row.getAttribute('data-id');
  await screenshot('created');

  // 3. Open it: the page reports stopped → starting → running, then attaches a terminal.
  step('wake it');
  await row.locator('[data-action="open"]').click();
  await until('the wake to begin', async () => (await tab()).statusLog.includes('starting'));
  await screenshot('waking');
  await until('the terminal to attach', async () => (await tab()).state === 'attached');
  const woke = await tab();
  const order = ['stopped', 'starting', 'running'].map((s) => woke.statusLog.indexOf(s));
  if (order.some((i) => i < 0) || !(order[0] < order[1] && order[1] < order[2])) {
    throw new Error(`statuses seen: ${woke.statusLog.join(' → ')}; expected stopped → starting → running`);
  }
  step(`statuses: ${woke.statusLog.join(' → ')}`);
  await until('a prompt', async () => (await tab()).text.trim().length > 0);
  await screenshot('running');

  // 4. Type into the shell.
  step('echo hello');
  await focusTerminal();
  await run('echo hello', /^hello$/);
  const mark = `m${Math.random().toString(36).slice(2, 10)}`;
  await page.keyboard.type(`export AETHER_E2E_MARK=${mark}`);
  await page.keyboard.press('Enter');
  const pid = (await run('echo PID=$$', /^PID=\d+$/)).slice(4);
  await screenshot('hello');

  // 5. The PTY follows the viewport.
  step('resize');
  const first = await tab();
  await run('echo SZ=$(stty size)', /^SZ=\d+ \d+$/, (l) => l === `SZ=${first.rows} ${first.cols}`);
  await page.setViewportSize({ width: 980, height: 620 });
  const resized = await until('the terminal to refit', async () => {
    const t = await tab();
    return t.cols !== first.cols && t.rows !== first.rows ? t : null;
  });
  await run('echo SZ=$(stty size)', /^SZ=\d+ \d+$/, (l) => l === `SZ=${resized.rows} ${resized.cols}`);
  step(`stty size followed ${first.rows}x${first.cols} → ${resized.rows}x${resized.cols}`);
  await screenshot('resized');

  // 6. Restart the gateway: the page shows "reconnecting", then re-attaches to the same shell and
  // replays only what it missed.
  step('restart the gateway');
  const sessionId = (await tab()).sessionId;
  await ask('STOP_GATEWAY', 'stopped');
  await until('the reconnecting state', async () => (await tab()).state === 'reconnecting');
  await page.locator('.tab-panel:not([hidden]) .overlay', { hasText: 'Reconnecting' }).waitFor();
  await screenshot('reconnecting');
  await ask('START_GATEWAY', 'started');
  await until('the terminal to re-attach', async () => (await tab()).state === 'attached');
  const back = await tab();
  if (back.sessionId !== sessionId) throw new Error('the tab changed sessions');
  if (!back.stateLog.includes('reconnecting')) throw new Error(`states: ${back.stateLog.join(' → ')}`);
  const hellos = lines(back).filter((l) => l === 'hello').length;
  if (hellos !== 1) throw new Error(`"hello" appears ${hellos} times after re-attaching: the replay was not limited to what was missed`);
  await focusTerminal();
  await run('echo MARK=$AETHER_E2E_MARK', /^MARK=/, (l) => {
    if (l !== `MARK=${mark}`) throw new Error(`a different shell: ${l}, expected MARK=${mark}`);
    return true;
  });
  await run('echo PID=$$', /^PID=\d+$/, (l) => {
    if (l !== `PID=${pid}`) throw new Error(`a different shell: ${l}, expected PID=${pid}`);
    return true;
  });
  await screenshot('reattached');

  // 6b. Reloading the page restores the tab: it re-attaches to the same session and replays the
  // output the session still holds into the fresh terminal.
  step('reload the page');
  await page.reload();
  await until('the restored tab to attach', async () => (await tabs())[0]?.state === 'attached');
  await until('the replayed output', async () => {
    const t = await tab();
    return t.sessionId === sessionId && lines(t).includes(`MARK=${mark}`) && lines(t).includes('hello');
  });
  await screenshot('reloaded');

  // 7. A second tab on the same workspace; the list counts both connections.
  step('second tab');
  const liveRow = page.locator(`.ws[data-id="${workspaceId}"]`);
  await liveRow.locator('[data-action="open"]').click();
  await until('the second terminal', async () => (await tabs())[1]?.state === 'attached');
  await liveRow.locator('.conns', { hasText: '2 connected' }).waitFor();
  await screenshot('two-tabs');

  // 8. Close both tabs: nobody is connected, so the idle-stop countdown shows; then stop it.
  step('idle countdown and stop');
  for (;;) {
    const close = page.locator('.tab .tab-close').first();
    if ((await close.count()) === 0) break;
    await close.click();
  }
  await liveRow.locator('.conns', { hasText: '0 connected' }).waitFor();
  await liveRow.locator('.idle', { hasText: /idle-stop in \d/ }).waitFor();
  await screenshot('idle-countdown');
  await liveRow.locator('[data-action="stop"]').click();
  await page.locator(`.ws[data-id="${workspaceId}"][data-status="stopped"]`).waitFor();
  await screenshot('stopped');

  // 9. Nothing was blocked by the policy, nothing threw, no token went into a URL.
  const violations = await page.evaluate(() => window.__cspViolations);
  problems.push(...violations.map((v) => `CSP violation: ${v}`));
  for (const u of urls) if (u.includes(token)) problems.push(`token in a URL: ${u.slice(0, 80)}…`);
  if (problems.length) throw new Error(`problems:\n  ${problems.join('\n  ')}`);
  console.log('E2E OK');
} catch (e) {
  console.error(`E2E FAILED: ${e.stack || e}`);
  try {
    await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png') });
    console.error(`screenshot: ${path.join(ARTIFACTS, 'failure.png')}`);
    const state = await tabs();
    for (const t of state) {
      console.error(`tab ${t.id}: state=${t.state} states=${t.stateLog.join('→')} statuses=${t.statusLog.join('→')} error=${t.error}`);
      console.error(`--- terminal ---\n${t.text.trimEnd()}\n---`);
    }
    if (problems.length) console.error(problems.join('\n'));
  } catch {
    /* the page is gone */
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
