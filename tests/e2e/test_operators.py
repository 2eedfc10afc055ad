"""Operators' controls through the `openai` SDK: model aliases, concentration caps
across providers, and SLAs that move traffic off a slow node and slash its stake."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import openai
import pytest

from harness import DEPLOYER_KEY, KEY, PAYER, PROVIDER, Anvil, chain_section

OTHER_KEY = "sk-test-globex-0123456789abcdef"
# Any two distinct addresses stand for two providers' payout accounts.
PROVIDER_B = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
HELLO = [{"role": "user", "content": "Say hello."}]


def tollgate_node(n, node_id, price, provider=None):
    entry = {"id": node_id, "kind": "tollgate", "url": n.root, "region": "eu-west",
             "prices": {"input_per_1m": price, "output_per_1m": price}}
    if provider:
        entry["provider"] = provider
    return entry


def test_an_app_asking_for_gpt_4o_mini_is_served_by_an_aliased_local_model(start):
    local = start.node("local")
    gw = start.gateway({
        "accounts": [{"id": "acme"}, {"id": "globex"}],
        "nodes": [tollgate_node(local, "local", "0.1")],
        "aliases": [
            {"name": "gpt-4o-mini", "model": "smollm2"},
            {"name": "gpt-5.4", "model": "smollm2", "account": "acme"},
            # Names a model nobody serves: listed for nobody, 404 when asked.
            {"name": "gpt-4.1", "model": "llama-3-70b"},
        ],
    })
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list()]
    assert ids == ["smollm2", "gpt-4o-mini", "gpt-5.4"], ids
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=12, temperature=0)
    aliased = raw.parse()
    direct = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=12, temperature=0)
    assert aliased.choices[0].message.content == direct.choices[0].message.content != ""
    assert raw.headers["x-tollgate-node"] == "local"
    # Streamed through the alias, the same text.
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    # Receipts record the model that served, priced at its node.
    receipts = gw.receipts()
    assert [r["model"] for r in receipts] == ["smollm2"] * 3

    # An alias whose model nobody serves is a plain unknown model, named as asked.
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4.1", messages=HELLO, max_tokens=4)
    assert "gpt-4.1" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4.1")

    # Another account sees only the aliases meant for it.
    done = gw.cli("keys", "--config", str(gw.config_path), "add", "--account", "globex", "--key", OTHER_KEY)
    assert done.returncode == 0, done.stderr
    assert gw.post("/admin/reload", {})["reloaded"] is True
    other = openai.OpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0, timeout=120)
    assert [m.id for m in other.models.list()] == ["smollm2", "gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model="gpt-5.4", messages=HELLO, max_tokens=4)
    assert other.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=4).choices[0].message.content


def test_an_alias_that_chains_is_refused_and_the_served_config_stays(start):
    local = start.node("local")
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "nodes": [tollgate_node(local, "local", "0.1")],
    }, policies={"aliases.yaml": {"aliases": [{"name": "gpt-4o-mini", "model": "smollm2"}]}})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=2).choices
    gw.write_policy("aliases.yaml", "aliases:\n  - {name: gpt-4o-mini, model: smollm2}\n  - {name: gpt-5.4, model: gpt-4o-mini}\n")
    errors = gw.wait_for(lambda: gw.status()["reload"]["last_errors"], timeout=10, what="the refused reload")
    assert any("aliases.yaml:3" in e and "aliases do not chain" in e for e in errors), errors
    # The old aliases keep serving; the new one never did.
    assert [m.id for m in client.models.list()] == ["smollm2", "gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5.4", messages=HELLO, max_tokens=2)


def test_a_half_cap_keeps_the_cheaper_provider_to_half_of_an_accounts_requests(start):
    cheap = start.node("cheap")
    dear = start.node("dear")
    policy = {"policies": [{
        "name": "diversified", "strategy": "cheapest",
        "cap": {"max_share": 0.5, "of": "requests", "window_s": 3600},
    }]}
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "nodes": [tollgate_node(cheap, "cheap", "0.1", PROVIDER), tollgate_node(dear, "dear", "0.9", PROVIDER_B)],
    }, policies={"caps.yaml": policy})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    served = []
    for _ in range(10):
        raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO, max_tokens=2)
        assert raw.parse().choices[0].message.content is not None
        served.append(raw.headers["x-tollgate-node"])
    counts = Counter(served)
    # Without the cap every request would go to the cheaper node.
    assert counts["cheap"] <= 5 and counts["cheap"] + counts["dear"] == 10, served
    assert counts["cheap"] == 5, served
    # Every prefix of even length holds the cap too.
    for n in range(2, 11, 2):
        assert served[:n].count("cheap") <= n // 2, served
    # At 5 and 5 either would hold 6 of 11: both are held back, so price decides again.
    explain = gw.post("/admin/route/explain?account=acme", {"model": "smollm2", "messages": HELLO})
    routes = explain["decision"]["routes"]
    assert [r["node"] for r in routes] == ["cheap", "dear"], routes
    for r in routes:
        assert any("would hold 54.5% of this account's requests over 3600s, over the cap of 50.0%" in x
                   for x in r["reasons"]), routes


def test_a_slow_node_loses_its_traffic_and_an_sla_slash_lands_on_chain(start, procs):
    anvil = Anvil(start.tmp, fund={PAYER: "10"}, mint={PROVIDER: "100"})
    procs.append(anvil)
    honest = start.node("honest")
    # Honest answers, each held 1.5 s before its first byte.
    slow = start.cheat("slow", upstream=honest, imitate=honest, lie="model", delay_ms=1500)
    anvil.register_node(slow, price_in="0.05", price_out="0.05")
    slow_id = slow.info()["address"].lower()
    policy = {"policies": [{
        "name": "promised", "strategy": "cheapest",
        "sla": {"max_ttft_ms": 1000, "min_kept_share": 0.9, "window_s": 120, "min_requests": 3,
                "slash": {"below": 0.5, "amount": "5"}},
    }]}
    gw = start.gateway({
        "accounts": [{"id": "acme", "payer": PAYER}],
        "nodes": [{**tollgate_node(honest, "honest", "0.5"), "provider": PROVIDER}],
        "chain": chain_section(anvil, discovery_interval_s=0.5),
    }, policies={"sla.yaml": policy}, env={"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY})
    gw.wait_for(lambda: any(n["id"] == slow_id and n["models"] for n in gw.status()["nodes"]),
                timeout=30, what="the registered slow node routed")
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    served = []
    for _ in range(8):  # bounded: three slow answers judge it
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=HELLO, max_tokens=8, temperature=0, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert text, "every request is answered"
        served.append(raw.headers["x-tollgate-node"])
        if served[-2:] == ["honest", "honest"]:
            break
    # Cheapest first until three late first tokens put it in breach; then the honest node.
    assert served == [slow_id] * 3 + ["honest"] * 2, served

    def filed():
        slashes = gw.get("/admin/sla")["slashes"]
        return slashes if slashes and slashes[0].get("slash") else None
    [record] = gw.wait_for(filed, timeout=60, what="the SLA slash")
    assert record["node"] == slow_id and record["policy"] == "promised", record
    assert record["slash"].startswith("slashed 5000000000000000000 atto-units in 0x"), record
    evidence_bytes = Path(record["evidence"]).read_bytes()
    evidence_hash = "0x" + hashlib.sha256(evidence_bytes).hexdigest()
    assert evidence_hash == record["evidence_hash"]
    evidence = json.loads(evidence_bytes)
    assert evidence["kind"] == "sla_breach" and evidence["signer"].lower() == slow_id
    assert len(evidence["requests"]) == 3 and all(r["ttft_ms"] > 1000 for r in evidence["requests"]), evidence
    assert evidence["standing"]["kept"] == 0 and evidence["standing"]["slow_first_token"] == 3
    # On chain: a Slashed event naming the node and the measurements' hash, for an SLA breach.
    logs = anvil.call("eth_getLogs", [{"address": anvil.addresses["registry"], "fromBlock": "0x0", "toBlock": "latest"}])
    slashes = [l for l in logs if len(l["topics"]) == 4 and l["topics"][3] == evidence_hash]
    assert len(slashes) == 1, logs
    assert slashes[0]["topics"][1] == "0x" + "0" * 24 + slow_id[2:]
    amount, reason = int(slashes[0]["data"][2:66], 16), int(slashes[0]["data"][66:130], 16)
    assert (amount, reason) == (5 * 10**18, 1), "the policy's amount, for an SLA breach"
    # An SLA slash prices the breach; the node stays registered and routable (ranked last).
    assert any(n["id"] == slow_id for n in gw.status()["nodes"])
    assert 'tollgate_sla_slashes_total{node="%s"} 1' % slow_id in gw.metrics()
