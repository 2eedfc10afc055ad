// Drives Tollgate's /dashboard in headless Chromium (Debian's, through
// playwright-core) the way an operator would: sees the nodes, watches the
// request chart move, opens an invoice and one request's proof, and saves a
// screenshot. Prints what it saw as one JSON line for the calling test.
//
// usage: node dashboard.mjs BASE_URL SCREENSHOT.png NODE_ID...
import { chromium } from "playwright-core";

const [base, screenshot, ...nodes] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT.png NODE_ID...");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.TOLLGATE_CHROMIUM || "/usr/bin/chromium",
  // This machine's network is closed: without these Chromium keeps dialling out.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1400 } });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
try {
  await page.goto(`${base}/dashboard`);

  for (const id of nodes) {
    await page.locator(`#nodes tr[data-node="${id}"]`).waitFor({ timeout: 15000 });
  }
  const shownNodes = await page.$$eval("#nodes tbody tr", (rows) =>
    rows.map((r) => [...r.children].map((td) => td.textContent)));

  // The request chart must redraw with more requests than it first showed.
  const chart = page.locator("#chart-requests");
  await page.waitForFunction(() => Number(document.getElementById("chart-requests").dataset.draws) >= 1);
  const before = Number(await chart.getAttribute("data-total"));
  await page.waitForFunction(
    (b) => Number(document.getElementById("chart-requests").dataset.total) > b, before, { timeout: 30000 });
  const after = Number(await chart.getAttribute("data-total"));
  const draws = Number(await chart.getAttribute("data-draws"));

  // An invoice, its receipts, and one receipt's proof.
  const invoice = page.locator("#invoices tbody tr[data-batch]").first();
  await invoice.waitFor({ timeout: 60000 });
  const batch = await invoice.getAttribute("data-batch");
  await invoice.click();
  const receipt = page.locator("#receipts tbody tr[data-request]").first();
  await receipt.waitFor({ timeout: 15000 });
  const requestId = await receipt.getAttribute("data-request");
  await receipt.click();
  await page.locator("#proof-verified").filter({ hasText: /^yes/ }).waitFor({ timeout: 15000 });
  const proof = {
    request: await page.locator("#proof-request").textContent(),
    batch: await page.locator("#proof-batch").textContent(),
    root: await page.locator("#proof-root").textContent(),
    verified: await page.locator("#proof-verified").textContent(),
  };

  const policy = await page.locator("#policy").textContent();
  const accounts = await page.$$eval("#accounts tbody tr", (rows) => rows.map((r) => r.dataset.account));
  await page.screenshot({ path: screenshot, fullPage: true });
  // The chart's place in the document, which is what a full-page screenshot shows.
  const box = await page.evaluate(() => {
    const r = document.getElementById("chart-requests").getBoundingClientRect();
    return { x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height };
  });
  console.log(JSON.stringify({
    nodes: shownNodes, chart: { before, after, draws, box }, batch, requestId, proof, policy, accounts, consoleErrors,
  }));
} catch (e) {
  // What the page said is usually the reason.
  console.error(`${e.message}\npage errors: ${JSON.stringify(consoleErrors)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
