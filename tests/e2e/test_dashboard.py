"""The operators' dashboard in headless Chromium: nodes, a live chart, an invoice's proof,
and a screenshot whose chart region the test inspects."""

import json
import shutil
import subprocess
import threading
from pathlib import Path

import openai
from PIL import Image

from harness import DEPLOYER_KEY, KEY, PAYER, PROVIDER, REPO, Anvil, chain_section

SCRIPT = REPO / "tests/browser/dashboard.mjs"
CHROMIUM = Path("/usr/bin/chromium")
# The request chart's line colour (dashboard.js).
LINE = (0x2F, 0x6F, 0xE4)


def tollgate_node(n, node_id, price):
    return {"id": node_id, "kind": "tollgate", "url": n.root, "region": "eu-west", "hardware": "cpu",
            "provider": PROVIDER, "prices": {"input_per_1m": price, "output_per_1m": price}}


def test_the_dashboard_shows_nodes_a_live_chart_and_an_invoice_proof(start, procs, tmp_path):
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make e2e` installs it (scripts/system-deps browser)"
    anvil = Anvil(start.tmp, fund={PAYER: "10"})
    procs.append(anvil)
    a = start.node("node-a")
    gw = start.gateway({
        "accounts": [{"id": "acme", "payer": PAYER}],
        "nodes": [tollgate_node(a, "node-a", "0.1")],
        "chain": chain_section(anvil, batch_max_receipts=3, batch_max_age_s=1),
    }, policies={"default.yaml": {"policies": [{"name": "cheap-first", "strategy": "cheapest"}],
                                  "aliases": [{"name": "gpt-4o-mini", "model": "smollm2"}]}},
        env={"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=60)
    for _ in range(3):
        assert client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=2).choices
    gw.wait_for(lambda: any(b["state"] == "settled" for b in gw.batches()), timeout=60, what="a settled invoice")

    # Traffic while the page is open, so its chart has something new to draw:
    # bounded in count and time, and stopped as soon as the browser is done.
    done = threading.Event()

    def traffic():
        for _ in range(60):
            if done.wait(0.25):
                return
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    shot = tmp_path / "dashboard.png"
    try:
        run = subprocess.run([shutil.which("node") or "node", str(SCRIPT), gw.base, str(shot), "node-a"],
                             capture_output=True, text=True, timeout=150, cwd=REPO)
    finally:
        done.set()
        sender.join(timeout=30)
    assert run.returncode == 0, run.stderr + run.stdout
    seen = json.loads(run.stdout.strip().splitlines()[-1])

    # Nodes with region, prices, trust, health and placement.
    [node_row] = seen["nodes"]
    assert node_row[0] == "node-a" and node_row[2] == "eu-west" and node_row[4] == "0.1 / 0.1", node_row
    assert node_row[6].startswith("up") and node_row[8] == "whole model on the node (cpu)", node_row
    assert seen["accounts"] == ["acme"]
    # The chart updated live: more requests than at first, over several redraws.
    assert seen["chart"]["after"] > seen["chart"]["before"] and seen["chart"]["draws"] >= 2, seen["chart"]
    # The proof view: a receipt of an on-chain invoice, checked by the contract.
    assert seen["proof"]["request"] == seen["requestId"] and seen["proof"]["batch"] == seen["batch"]
    assert seen["proof"]["verified"].startswith("yes")
    receipt = next(r for r, _, batch in gw.ledger_rows() if r["request_id"] == seen["requestId"])
    assert receipt["node"] == "node-a"
    # The current policy and aliases are shown.
    assert "cheap-first" in seen["policy"] and "gpt-4o-mini" in seen["policy"]
    assert seen["consoleErrors"] == [], seen["consoleErrors"]

    # The screenshot: the request chart's region holds its plotted line, and
    # the line rises off the zero baseline (24 px above the canvas's bottom).
    image = Image.open(shot).convert("RGB")
    box = seen["chart"]["box"]
    region = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    rows = [i // region.width for i, px in enumerate(region.get_flattened_data())
            if all(abs(c - l) <= 40 for c, l in zip(px, LINE))]
    assert len(rows) >= 100, f"only {len(rows)} line-coloured pixels in the chart region {box}"
    raised = [y for y in rows if y < region.height - 24 - 4]
    assert len(raised) >= 10, f"the plotted line never leaves zero ({len(raised)} pixels above the baseline)"
