"""Two gateways behind one load balancer: one PostgreSQL (ledger, spend, trust,
settler lease) and one Redis (rate-limit counters) between them, through the `openai` SDK."""

import json
import re
import time

import openai

from harness import DEPLOYER_KEY, KEY, MODEL, PAYER, PROVIDER, Anvil, Gateway, Postgres, Redis, chain_section, derive_model

BULK_KEY = "sk-test-bulk-0123456789abcdef"
HI = [{"role": "user", "content": "Hi"}]
HELLO_LONG = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]


def lease_held(gw) -> bool:
    return re.search(r"^tollgate_settler_lease_held 1$", gw.metrics(), re.M) is not None


def settled(pg) -> int:
    return int(pg.query("SELECT count(*) FROM receipts WHERE state = 'settled'")[0][0])


def test_two_gateways_share_rate_limits_and_the_ledger_and_hand_settlement_over(start, procs):
    anvil = Anvil(start.tmp, fund={PAYER: "10"})
    procs.append(anvil)
    pg = Postgres(start.tmp)
    procs.append(pg)
    redis = Redis(start.tmp)
    procs.append(redis)
    node = start.node("node-a")
    config = {
        "accounts": [{"id": "acme", "payer": PAYER, "requests_per_min": 10}, {"id": "bulk", "payer": PAYER}],
        "nodes": [{"id": "node-a", "kind": "tollgate", "url": node.root, "region": "eu-west", "provider": PROVIDER,
                   "prices": {"input_per_1m": "0.1", "output_per_1m": "0.1"}}],
        "chain": chain_section(anvil, batch_max_receipts=4, batch_max_age_s=1),
        "shared": {"postgres": pg.url, "redis": redis.url, "settler_lease_s": 2, "spend_refresh_s": 0.5},
    }
    gws = []
    for name in ("gw-a", "gw-b"):
        (start.tmp / name).mkdir()
        gw = Gateway(start.tmp / name, config, env={"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY})
        procs.append(gw)
        done = gw.cli("keys", "--config", str(gw.config_path), "add", "--account", "bulk", "--key", BULK_KEY)
        assert done.returncode == 0, done.stderr
        assert gw.post("/admin/reload", {})["reloaded"] is True
        gws.append(gw)
    clients = [openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=60) for gw in gws]

    # Rate limits count in Redis: 16 requests spread over both gateways, 10 per
    # minute allowed in total. Start early in Redis's minute so all land in one.
    into = redis.time_s() % 60
    if into > 35:
        time.sleep(61 - into)
    outcomes = []
    for i in range(16):
        try:
            clients[i % 2].chat.completions.create(model="smollm2", messages=HI, max_tokens=1)
            outcomes.append(("ok", i % 2))
        except openai.RateLimitError as e:
            assert e.code == "rate_limit_exceeded", e
            outcomes.append(("429", i % 2))
    served = [g for o, g in outcomes if o == "ok"]
    assert len(served) == 10, outcomes
    assert served.count(0) == 5 and served.count(1) == 5, "both gateways served, and neither alone could pass the limit"
    assert all(o == "429" for o, _ in outcomes[10:]), outcomes

    # One ledger: both gateways' receipts, and exactly one gateway settling them.
    assert int(pg.query("SELECT count(*) FROM receipts")[0][0]) == 10
    holder = gws[0].wait_for(lambda: [i for i, g in enumerate(gws) if lease_held(g)] or None, timeout=20,
                             what="a settler lease holder")
    assert len(holder) == 1, f"exactly one gateway settles: {holder}"
    gws[0].wait_for(lambda: settled(pg) == 10, timeout=60, what="10 receipts settled")
    # Spend is shared too: each gateway's budget view counts the other's bills.
    spent = {a["id"]: a["spent"] for a in gws[0].status()["accounts"]}
    gws[1].wait_for(lambda: {a["id"]: a["spent"] for a in gws[1].status()["accounts"]} == spent, timeout=10,
                    what="both gateways seeing the same spend")

    # Kill -9 the gateway holding the lease; the other takes settlement over.
    dead, alive = gws[holder[0]], gws[1 - holder[0]]
    dead.proc.kill()
    bulk = openai.OpenAI(base_url=alive.url, api_key=BULK_KEY, max_retries=0, timeout=60)
    for _ in range(6):
        assert bulk.chat.completions.create(model="smollm2", messages=HI, max_tokens=1).choices
    alive.wait_for(lambda: lease_held(alive), timeout=30, what="the survivor taking the settler lease")
    alive.wait_for(lambda: settled(pg) == 16, timeout=90, what="every receipt settled")

    # Every receipt billed exactly once, to the wei.
    report = json.loads(alive.invoices("reconcile").stdout)
    assert report["difference_wei"] == "0" and report["differences"] == [], report
    assert report["settled_receipts"] == 16 and report["unsettled_receipts"] == 0, report
    invoices = json.loads(alive.invoices("list").stdout)
    assert sum(i["receipt_count"] for i in invoices) == 16, invoices
    # Every receipt sits in exactly one of the invoices on chain, and each of those is in the ledger.
    ledger_batches = {row[0]: int(row[1]) for row in pg.query("SELECT batch_id, count(*) FROM receipts GROUP BY batch_id")}
    assert ledger_batches == {i["batch_id"]: i["receipt_count"] for i in invoices}, (ledger_batches, invoices)


def test_a_node_caught_by_one_gateways_audit_is_distrusted_by_the_other(start, procs):
    pg = Postgres(start.tmp)
    procs.append(pg)
    honest = start.node("honest")
    half = start.node("half", model=derive_model(start.tmp, "half", "--skip-half-layers"), model_id="half")
    cheat = start.cheat("cheat", upstream=half, imitate=honest, lie="model")

    def node(n, node_id, price):
        return {"id": node_id, "kind": "tollgate", "url": n.root, "region": "eu-west",
                "prices": {"input_per_1m": price, "output_per_1m": price}}

    base = {
        "accounts": [{"id": "acme"}],
        # The cheat undercuts the honest node, so both gateways send it traffic first.
        "nodes": [node(cheat, "cheat", "0.05"), node(honest, "honest", "0.5")],
        "shared": {"postgres": pg.url, "spend_refresh_s": 0.5},
    }
    (start.tmp / "auditor").mkdir()
    (start.tmp / "other").mkdir()
    # Only the first gateway audits (it loads the reference model); the other never does.
    auditor = Gateway(start.tmp / "auditor", {**base, "audit": {"references": [str(MODEL)], "share": 1.0}})
    procs.append(auditor)
    other = Gateway(start.tmp / "other", {**base, "audit": {"share": 0.0}})
    procs.append(other)
    a = openai.OpenAI(base_url=auditor.url, api_key=KEY, max_retries=0, timeout=120)
    b = openai.OpenAI(base_url=other.url, api_key=KEY, max_retries=0, timeout=120)

    def served(client):
        raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO_LONG, max_tokens=40, temperature=0)
        assert raw.parse().choices[0].message.content
        return raw.headers["x-tollgate-node"]

    assert served(b) == "cheat", "before any audit, the other gateway routes to the cheaper cheat"
    seen = []
    for _ in range(10):  # bounded: the first audit catches it
        seen.append(served(a))
        if seen[-2:] == ["honest", "honest"]:
            break
    assert seen[0] == "cheat" and seen[-1] == "honest", seen
    # The other gateway never audited, yet takes the quarantine from the shared database.
    status = other.wait_for(lambda: {n["id"]: n for n in other.status()["nodes"]}.get("cheat", {}).get("quarantined") and
                            {n["id"]: n for n in other.status()["nodes"]}, timeout=20, what="the quarantine shared")
    assert status["cheat"]["trust"] == 0.0 and status["cheat"]["audits"]["quarantine"]["reasons"], status["cheat"]
    assert other.get("/admin/audits")["audits"] == [], "the other gateway ran no audit itself"
    assert served(b) == "honest"
    # The database counts exactly the audits the auditing gateway finished.
    def counts_match():
        fails = sum(1 for x in auditor.get("/admin/audits")["audits"] if x["node"] == "cheat" and x["outcome"] == "fail")
        row = pg.query("SELECT failed, quarantine IS NOT NULL FROM node_trust WHERE node = 'cheat'")
        return fails >= 1 and row == [[str(fails), "t"]]
    auditor.wait_for(counts_match, timeout=20, what="the shared counts matching the auditor's audits")
