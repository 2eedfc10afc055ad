"""Settlement on a real anvil chain: requests through the `openai` SDK become
on-chain invoices that finance can prove and reconcile, exactly once, through
crashes and RPC faults."""

import json
import time

import openai
import pytest

from harness import DEPLOYER_KEY, KEY, PAYER, PROVIDER, Anvil, RpcFaults, chain_section, http_json, node

SETTLER = {"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY}


@pytest.fixture
def anvil(tmp_path, procs):
    a = Anvil(tmp_path, fund={PAYER: "10"})
    procs.append(a)
    return a


def settled_gateway(start, anvil, rpc=None, account=None, **chain):
    upstream = start.upstream("node-a", completion_tokens=9)
    return start.gateway(
        {
            "accounts": [account or {"id": "acme", "payer": PAYER}],
            "nodes": [node(upstream, provider=PROVIDER, prices={"input_per_1m": "0.10", "output_per_1m": "0.20"})],
            "chain": chain_section(anvil, rpc=rpc, **chain),
        },
        env=SETTLER,
    ), upstream


def ask(client, i: int, stream: bool = False) -> str:
    messages = [{"role": "user", "content": f"request {i}"}]
    if stream:
        raw = client.chat.completions.with_raw_response.create(model="instant-1", messages=messages, stream=True)
        assert list(raw.parse())
        return raw.headers["x-request-id"]
    raw = client.chat.completions.with_raw_response.create(model="instant-1", messages=messages)
    raw.parse()
    return raw.headers["x-request-id"]


def wait_settled(gw, count: int, timeout: float = 60):
    def all_settled():
        rows = gw.ledger_rows()
        return len(rows) == count and all(state == "settled" for _, state, _ in rows) and rows

    return gw.wait_for(all_settled, timeout=timeout, what=f"{count} settled receipts")


def cli_json(done) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_requests_are_invoiced_on_chain_proved_and_reconciled(start, anvil, tmp_path):
    gw, _ = settled_gateway(start, anvil)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    ids = [ask(client, i, stream=i % 2 == 1) for i in range(7)]
    rows = wait_settled(gw, 7)
    receipts = [r for r, _, _ in rows]
    assert [r["request_id"] for r in receipts] == ids
    assert {r["payer"] for r in receipts} == {PAYER} and {r["provider"] for r in receipts} == {PROVIDER}

    invoices = cli_json(gw.invoices("list"))
    assert sorted(i["receipt_count"] for i in invoices) == [2, 5], "5 by size, then 2 by age"
    assert sum(int(i["billed"]) for i in invoices) == sum(int(r["amount"]) for r in receipts)
    assert all(i["paid"] == i["billed"] for i in invoices), "escrow covered everything"
    line = invoices[0]["lines"][0]
    assert line["payer"].lower() == PAYER.lower() and line["provider"].lower() == PROVIDER.lower()

    proof = cli_json(gw.invoices("verify", ids[3]))
    assert proof["verified_on_chain"] is True
    assert proof["amount"] == proof["amount_from_prices"] == receipts[3]["amount"]
    assert proof["batch_id"] == rows[3][2]
    shown = cli_json(gw.invoices("show", proof["batch_id"]))
    assert shown["merkle_root"] == proof["merkle_root"]

    report = cli_json(gw.invoices("reconcile"))
    assert report["difference_wei"] == "0" and report["differences"] == []
    assert report["settled_receipts"] == 7 and report["unsettled_receipts"] == 0
    assert report["ledger_billed"] == report["chain_billed"] == str(sum(int(r["amount"]) for r in receipts))

    csv = gw.invoices("export", "--csv")
    assert csv.returncode == 0 and len(csv.stdout.strip().splitlines()) == 8
    assert ids[0] in csv.stdout and proof["batch_id"] in csv.stdout

    # The same answers over the admin API.
    import urllib.request

    with urllib.request.urlopen(f"{gw.base}/admin/invoices/proof/{ids[3]}", timeout=30) as r:
        assert json.loads(r.read())["leaf"] == proof["leaf"]

    # Bad input: clear errors, nothing changed.
    before = gw.ledger_rows()
    published = tmp_path / "data" / "invoices" / f"{proof['batch_id']}.json"
    tampered = json.loads(published.read_text())
    index = next(i for i, r in enumerate(tampered) if r["request_id"] == ids[3])
    tampered[index]["completion_tokens"] += 1
    tampered[index]["amount"] = str(int(tampered[index]["amount"]) + 200_000_000_000)
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    done = gw.invoices("verify", ids[3], "--receipts", str(bad))
    assert done.returncode == 1 and "rejects request" in done.stderr, done.stderr
    assert cli_json(gw.invoices("verify", ids[3], "--receipts", str(published)))["verified_on_chain"]
    (tmp_path / "garbage.json").write_text("{not json")
    done = gw.invoices("verify", ids[3], "--receipts", str(tmp_path / "garbage.json"))
    assert done.returncode == 1 and "not a JSON array of receipts" in done.stderr, done.stderr
    done = gw.invoices("show", "0x" + "ab" * 32)
    assert done.returncode == 1 and "no invoice" in done.stderr, done.stderr
    done = gw.invoices("verify", "no-such-request")
    assert done.returncode == 1 and "no receipt for request" in done.stderr, done.stderr
    anvil.stop()
    done = gw.invoices("reconcile")
    assert done.returncode == 1 and "chain RPC failed" in done.stderr, done.stderr
    assert gw.ledger_rows() == before


def test_an_account_whose_escrow_is_spent_gets_insufficient_quota_before_any_node_is_called(start, tmp_path, procs):
    # A request here costs 5 x 0.1/1M + 9 x 0.2/1M = 0.0000023 fee tokens: this
    # escrow covers the first, and the second leaves spend above it.
    anvil = Anvil(tmp_path, fund={PAYER: "0.000004"})
    procs.append(anvil)
    gw, upstream = settled_gateway(start, anvil, batch_max_age_s=60)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    ask(client, 0)
    ask(client, 1)
    [first, _] = gw.receipts()
    assert first["amount"] == "2300000000000"
    served = upstream.stats()["requests"]
    with pytest.raises(openai.RateLimitError) as refused:
        ask(client, 2)
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "insufficient_quota"
    assert "escrow" in refused.value.body["message"]
    assert upstream.stats()["requests"] == served, "no node was called"
    assert len(gw.receipts()) == 2


def test_a_lost_send_answer_and_a_kill_between_send_and_record_bill_exactly_once(start, anvil):
    faults = RpcFaults(anvil.rpc)
    gw, _ = settled_gateway(start, anvil, rpc=faults.url, batch_max_receipts=3, batch_max_age_s=0.5)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)

    # 1. The chain takes the transaction but the answer is lost.
    faults.drop_send = True
    for i in range(3):
        ask(client, i)
    gw.wait_for(lambda: faults.sends_forwarded >= 1, timeout=30, what="a forwarded send")
    faults.drop_send = False
    wait_settled(gw, 3)

    # 2. The gateway is killed -9 after the chain took the transaction and
    #    before it could record it.
    faults.hang_send = True
    for i in range(3, 6):
        ask(client, i)
    sent = faults.sends_forwarded
    gw.wait_for(lambda: faults.sends_forwarded > sent, timeout=30, what="a hanging send")
    gw.proc.kill()
    faults.hang_send = False
    gw.restart()

    # 3. Errors and delays from the RPC while more requests arrive.
    faults.error_rate = 0.15
    faults.delay_s = 0.05
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    for i in range(6, 10):
        ask(client, i, stream=True)
    rows = wait_settled(gw, 10, timeout=90)
    faults.error_rate = 0.0
    assert faults.faults >= 3

    batches = {b for _, _, b in rows}
    posted_ids = [i["batch_id"] for i in cli_json(gw.invoices("list"))]
    assert len(posted_ids) == len(set(posted_ids)) == len(batches), "each batch posted exactly once"
    assert set(posted_ids) == batches
    report = cli_json(gw.invoices("reconcile"))
    assert report["difference_wei"] == "0" and report["differences"] == [], report
    assert report["settled_receipts"] == 10
    faults.stop()



def test_an_invoice_dropped_by_a_reorg_is_posted_again_and_billed_once(start, tmp_path, procs):
    anvil = Anvil(tmp_path, fund={PAYER: "10"}, args=["--block-time", "1"])
    procs.append(anvil)
    gw, _ = settled_gateway(start, anvil, batch_max_receipts=2, confirmations=4)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    ask(client, 0)
    ask(client, 1)
    [sent] = gw.wait_for(lambda: [b for b in gw.batches() if b["state"] == "sent"], timeout=30, what="a sent invoice")
    # Replace the last blocks, the invoice's among them, with empty ones.
    head = int(anvil.call("eth_blockNumber"), 16)
    depth = head - sent["block_number"] + 1
    status, answer = http_json("POST", anvil.rpc, {"jsonrpc": "2.0", "id": 1, "method": "anvil_reorg", "params": [depth, []]})
    assert status == 200 and "error" not in answer, answer
    assert anvil.call("eth_getTransactionReceipt", [sent["tx_hash"]]) is None or (
        int(anvil.call("eth_getTransactionReceipt", [sent["tx_hash"]])["blockNumber"], 16) != sent["block_number"]
    ), "the reorg moved the invoice out of its block"
    wait_settled(gw, 2, timeout=60)
    [settled] = gw.batches()
    assert settled["state"] == "settled" and settled["batch_id"] == sent["batch_id"]
    # The ledger records where the invoice lies on the canonical chain now.
    landed = anvil.call("eth_getTransactionReceipt", [settled["tx_hash"]])
    assert landed is not None and int(landed["blockNumber"], 16) == settled["block_number"]
    [invoice] = cli_json(gw.invoices("list"))
    assert invoice["batch_id"] == sent["batch_id"] and invoice["tx_hash"] == settled["tx_hash"]
    report = cli_json(gw.invoices("reconcile"))
    assert report["difference_wei"] == "0" and report["differences"] == [], report


def test_receipts_that_cannot_go_on_chain_are_set_aside_and_listed_by_reconcile(start, anvil):
    import yaml

    upstream = start.upstream("node-a", completion_tokens=9)
    # First without settlement: receipts name no payer or provider.
    gw = start.gateway({"accounts": [{"id": "acme"}], "nodes": [node(upstream)]}, env=SETTLER)
    old = ask(openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0), 0)
    gw.stop()
    settled = {
        "listen": "127.0.0.1:0",
        "data_dir": "data",
        "accounts": [{"id": "acme", "payer": PAYER}],
        "nodes": [node(upstream, provider=PROVIDER)],
        "chain": chain_section(anvil),
    }
    gw.config_path.write_text(yaml.safe_dump(settled, sort_keys=False))
    gw.restart()
    new = ask(openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0), 1)

    def states():
        by_id = {r["request_id"]: state for r, state, _ in gw.ledger_rows()}
        return by_id.get(new) == "settled" and by_id

    by_id = gw.wait_for(states, timeout=30, what="the new receipt settled")
    assert by_id[old] == "unsettleable", "set aside, not blocking the receipt behind it"
    done = gw.invoices("reconcile")
    assert done.returncode == 1, "a difference is reported"
    report = json.loads(done.stdout)
    [difference] = report["differences"]
    assert old in difference["what"] and "payer" in difference["what"]
    old_amount = next(r["amount"] for r in gw.receipts() if r["request_id"] == old)
    assert report["difference_wei"] == old_amount == difference["ledger"]
    assert report["unsettleable_receipts"] == 1 and report["settled_receipts"] == 1




def test_a_node_registered_on_chain_is_discovered_routed_and_paid(start, tmp_path, procs):
    anvil = Anvil(tmp_path, fund={PAYER: "10"}, mint={PROVIDER: "100"})
    procs.append(anvil)
    n = start.node("staked", price_in="0.30", price_out="0.60")
    info = n.info()
    anvil.register_node(n, price_in="0.30", price_out="0.60")
    # No node in the config at all: the registry is the only source.
    gw = start.gateway(
        {"accounts": [{"id": "acme", "payer": PAYER}], "nodes": [], "chain": chain_section(anvil, discovery_interval_s=0.5)},
        env=SETTLER,
    )
    node_id = info["address"].lower()
    gw.wait_for(lambda: any(x["id"] == node_id and x["models"] for x in gw.status()["nodes"]), timeout=30, what="the registered node routed")
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-tollgate-node"] == node_id
    [(receipt, _, _)] = wait_settled(gw, 1)
    assert receipt["provider"].lower() == PROVIDER.lower(), "paid to the address that staked"
    assert receipt["price_in_per_1m"] == "300000000000000000", "the registered prices"
    report = cli_json(gw.invoices("reconcile"))
    assert report["difference_wei"] == "0" and report["differences"] == []


def test_a_gateway_killed_under_load_loses_no_receipt_and_bills_each_once(start, anvil):
    import concurrent.futures
    import threading

    gw, _ = settled_gateway(start, anvil, batch_max_receipts=7, batch_max_age_s=0.3)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(worker: int) -> None:
        client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=10)
        for i in range(200):  # bounded; the kill ends it far sooner
            if stop.is_set():
                return
            try:
                request_id = ask(client, worker * 1000 + i, stream=i % 2 == 0)
            except openai.APIError:
                return  # the gateway died under this request
            with lock:
                answered.append(request_id)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop, w) for w in range(4)]
        gw.wait_for(lambda: len(answered) >= 30, timeout=60, what="load under way")
        gw.proc.kill()
        stop.set()
        for f in futures:
            f.result(timeout=30)
    gw.restart()
    total = len(gw.ledger_rows())
    rows = wait_settled(gw, total, timeout=90)
    ids = [r["request_id"] for r, _, _ in rows]
    assert set(answered) <= set(ids), "every answer the client saw has its receipt"
    assert len(ids) == len(set(ids))
    posted = [i["batch_id"] for i in cli_json(gw.invoices("list"))]
    assert len(posted) == len(set(posted)) == len({b for _, _, b in rows}), "each batch posted once"
    report = cli_json(gw.invoices("reconcile"))
    assert report["difference_wei"] == "0" and report["differences"] == [], report
    assert report["settled_receipts"] == total


def test_reconcile_catches_a_ledger_that_no_longer_matches_the_chain(start, anvil, tmp_path):
    import sqlite3

    gw, _ = settled_gateway(start, anvil, batch_max_receipts=3)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    ids = [ask(client, i) for i in range(3)]
    wait_settled(gw, 3)
    assert cli_json(gw.invoices("reconcile"))["differences"] == []
    gw.stop()
    # Someone rewrites who served one settled request, in the ledger only.
    db = sqlite3.connect(tmp_path / "data" / "ledger.sqlite")
    [(body,)] = db.execute("SELECT body FROM receipts WHERE request_id = ?", (ids[1],)).fetchall()
    receipt = json.loads(body)
    receipt["provider"] = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    db.execute("UPDATE receipts SET body = ? WHERE request_id = ?", (json.dumps(receipt), ids[1]))
    db.commit()
    db.close()
    done = gw.invoices("reconcile")
    assert done.returncode == 1
    found = {d["what"] for d in json.loads(done.stdout)["differences"]}
    assert {"lines (payer, provider, amount)", "root of the ledger's receipts"} <= found, found
