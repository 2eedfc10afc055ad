"""Audits through the gateway: every cheat of the catalogue caught, honest nodes passing,
a caught node's traffic moved off it with no failed request."""

import hashlib
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from harness import DEPLOYER_KEY, GEMMA, KEY, MODEL, PAYER, PROVIDER, Anvil, chain_section, derive_model

# System prompts and earlier turns that carry what the answer needs: what a
# node that drops the system prompt or truncates the context loses.
PROMPTS = [
    [{"role": "system", "content": "The secret code word is PINEAPPLE-42. Always begin every answer with the code word."},
     {"role": "user", "content": "Tell me about the ocean."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "My name is Ada and I build wooden boats in Norway."},
     {"role": "assistant", "content": "Nice to meet you, Ada! Boat building in Norway sounds wonderful."},
     {"role": "user", "content": "Write a short story about me and my work."}],
    [{"role": "system", "content": "You are a pirate. Always talk like a pirate, say Arr, and mention your ship."},
     {"role": "user", "content": "Explain how rain forms."}],
]
# Asked when a cheat's answers all ended early.
LONG_PROMPTS = [
    [{"role": "user", "content": f"Write a long, detailed story about {topic}, at least ten sentences."}]
    for topic in ("a lighthouse keeper", "a journey across the desert", "the first day at a new school")
]
# Sampled requests carry a seed so that a run is repeatable; the gateway adds
# one to seedless requests anyway.
MODES = {"greedy": {"temperature": 0}, "sampled": {"temperature": 0.7, "seed": 1234}}


def tollgate_node(n, node_id, price="0.1"):
    return {"id": node_id, "kind": "tollgate", "url": n.root, "region": "eu-west",
            "prices": {"input_per_1m": price, "output_per_1m": price}}


def ask(client, target, messages, mode, stream=False, logprobs=False):
    extra = {"extra_headers": {"x-target": target}, "max_tokens": 48, **MODES[mode]}
    if logprobs:
        extra.update(logprobs=True, top_logprobs=2)
    if stream:
        chunks = list(client.chat.completions.create(model="smollm2", messages=messages, stream=True, **extra))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model="smollm2", messages=messages, **extra).choices[0].message.content


def audits_of(gw, node, count, timeout=120):
    """Waits until `node` has `count` finished audits; returns them."""
    def done():
        got = [a for a in gw.get("/admin/audits")["audits"] if a["node"] == node]
        return got if len(got) >= count else None
    return gw.wait_for(done, timeout=timeout, what=f"{count} audits of {node}")


def test_every_cheat_is_caught_and_honest_nodes_pass(start):
    honest = start.node("honest")
    # Honest nodes that differ in what must not matter: thread count and batch
    # size, and the attention kernel (unfused here, fused in the reference).
    honest_1t = start.node("honest-1t", extra=["--threads", "1", "--max-seqs", "2"])
    honest_unfused = start.node("honest-unfused", extra=["--flash-attention", "off"])
    gemma = start.node("gemma", model=GEMMA, model_id="gemma3")
    half = start.node("half", model=derive_model(start.tmp, "half", "--skip-half-layers"), model_id="half")
    noisy = start.node("noisy", model=derive_model(start.tmp, "noisy", "--weight-noise", "0.1"), model_id="noisy")
    cheats = {
        "other-model": start.cheat("other-model", upstream=gemma, imitate=honest, lie="model"),
        "half-layers": start.cheat("half-layers", upstream=half, imitate=honest, lie="model"),
        "noisy-weights": start.cheat("noisy-weights", upstream=noisy, imitate=honest, lie="model"),
        "drop-system": start.cheat("drop-system", upstream=honest, imitate=honest, lie="drop-system"),
        "truncate": start.cheat("truncate", upstream=honest, imitate=honest, lie="truncate"),
        "replay": start.cheat("replay", upstream=honest, imitate=honest, lie="replay"),
        "fake-logprobs": start.cheat("fake-logprobs", upstream=honest, imitate=honest, lie="fake-logprobs"),
        "honest-then-cheat": start.cheat("honest-then-cheat", upstream=honest, imitate=honest, lie="replay", honest_first=2),
    }
    for c in cheats.values():
        info = c.info()
        assert info["model_sha256"] == honest.info()["model_sha256"], "every cheat claims the honest model"
        assert info["address"] != honest.info()["address"], "and signs with its own key"
    honest_nodes = {"honest": honest, "honest-1t": honest_1t, "honest-unfused": honest_unfused}
    nodes = {**honest_nodes, **cheats}
    # One policy per node, picked by a header, auditing every answer; audits
    # only judge here (no quarantine), so each node is judged on every mode.
    policies = {f"{name}.yaml": {"policies": [{
        "name": f"to-{name}", "match": {"header": {"x-target": name}}, "strategy": "weighted",
        "weights": {name: 1}, "audit_share": 1.0}]} for name in nodes}
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "audit": {"quarantine": False, "references": [str(MODEL)]},
        "nodes": [tollgate_node(n, name) for name, n in nodes.items()],
    }, policies=policies)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)

    report = {}
    for name in nodes:
        asked = 0
        for mode in MODES:
            for i, messages in enumerate(PROMPTS):
                ask(client, name, messages, mode, stream=(i == 1), logprobs=(name == "fake-logprobs" or i == 2))
                asked += 1
        report[name] = audits_of(gw, name, asked)
    summary = {name: [(a["outcome"], a["tokens"], a["replay_misses"], a["logprob_gaps"], a["alternative_gaps"], a["shape_gaps"], a["decisive"], a["rival_leans"]) for a in audits]
               for name, audits in report.items()}
    for name, rows in summary.items():
        print(name, rows)
    by_mode = lambda audits: {mode: audits[k * len(PROMPTS):(k + 1) * len(PROMPTS)] for k, mode in enumerate(MODES)}

    for name in honest_nodes:
        assert all(a["outcome"] == "pass" for a in report[name]), (name, summary[name])
    # Each alternative's bytes reach the audit, which pairs them with the
    # reference's tokens (the shape test), whole answers and streams alike.
    for name in honest_nodes:
        reported = [a for a in report[name] if a["logprobs_checked"] > 0]
        assert reported and all(a["shape_checked"] > 0 for a in reported), (
            name, [(a["logprobs_checked"], a["shape_checked"]) for a in report[name]])
    # A cheat whose answers in a mode all ended before 32 tokens (a noisy
    # model often stops early) is asked for longer answers in that mode.
    for name in cheats:
        for mode, audits in by_mode(report[name]).items():
            seen = len(report[name])
            for messages in LONG_PROMPTS:
                if any(a["tokens"] >= 32 for a in audits):
                    break
                ask(client, name, messages, mode)
                seen += 1
                audits = audits + audits_of(gw, name, seen)[-1:]
                report[name] = report[name] + audits[-1:]
            caught = [a for a in audits if a["outcome"] == "fail" and a["tokens"] >= 32]
            assert caught, f"{name} not caught ({mode}): {[(a['outcome'], a['tokens']) for a in audits]}"
    # The replaying cheats answer their first request honestly, and are caught after.
    assert report["replay"][0]["outcome"] == "pass"
    assert [a["outcome"] for a in report["honest-then-cheat"][:2]] == ["pass"] * 2
    assert all(a["outcome"] == "fail" for a in report["honest-then-cheat"][2:]), summary["honest-then-cheat"]
    # Failed audits leave evidence naming the cheat's key and the claimed model.
    evidence = list((gw.dir / "data/evidence").glob("*.json"))
    assert evidence
    bundle = json.loads(evidence[0].read_text())
    assert bundle["verdict"]["outcome"] == "fail" and bundle["model_sha256"] == honest.info()["model_sha256"]
    assert bundle["signer"].lower() == cheats[bundle["node"]].info()["address"].lower()
    # Each bundle carries the bytes the cheat signed, whole answers and streams
    # alike, and `tollgate evidence` checks its signature over them.
    streamed = 0
    for path in evidence:
        checked = gw.cli("evidence", str(path))
        assert checked.returncode == 0, (path, checked.stderr)
        report = json.loads(checked.stdout)
        assert report["evidence_hash"] == "0x" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert report["verdict"] == "fail" and report["signed_answers_checked"] >= 1
        streamed += json.loads(path.read_text())["signed"]["output"].startswith("data: ")
    assert streamed, "no evidence from a streamed answer"
    forged = json.loads(evidence[0].read_text())
    forged["signed"]["output"] = forged["signed"]["output"].replace("e", "a", 1)
    (start.tmp / "forged.json").write_text(json.dumps(forged))
    refused = gw.cli("evidence", str(start.tmp / "forged.json"))
    assert refused.returncode != 0 and "attestation" in refused.stderr, refused
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert all(status[name]["trust"] == 1.0 for name in honest_nodes), {n: status[n]["trust"] for n in honest_nodes}
    assert all(status[name]["trust"] < 0.5 for name in cheats), {n: status[n]["trust"] for n in cheats}


def test_log_probs_are_evidence_for_audits_not_output_for_clients(start):
    honest = start.node("honest")
    policy = {"policies": [{"name": "all", "strategy": "weighted", "weights": {"honest": 1}, "audit_share": 1.0}]}
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "audit": {"references": [str(MODEL)]},
        "nodes": [tollgate_node(honest, "honest")],
    }, policies={"all.yaml": policy})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    messages = PROMPTS[0]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=32, temperature=0)
    assert whole.choices[0].logprobs is None, "the client did not ask for log-probs"
    chunks = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=32,
                                                 temperature=0.7, stream=True))
    assert all(c.choices[0].logprobs is None for c in chunks if c.choices)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    asked = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=32, temperature=0,
                                           logprobs=True, top_logprobs=2)
    content = asked.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 for t in content), \
        "a client gets the alternatives it asked for, no more (the node was asked for 5)"
    assert asked.choices[0].message.content == whole.choices[0].message.content
    plain = list(client.chat.completions.create(model="smollm2", messages=messages, max_tokens=32, temperature=0,
                                                logprobs=True, stream=True))
    tokens = [t for c in plain if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert tokens and all(t.top_logprobs == [] for t in tokens), "OpenAI's default: no alternatives"
    # The node was asked for log-probs every time: each audit checked them.
    audits = audits_of(gw, "honest", 4)
    assert all(a["outcome"] == "pass" and a["logprobs_checked"] >= 8 for a in audits), audits


def test_a_caught_cheat_loses_its_traffic_and_no_request_fails(start):
    honest = start.node("honest")
    noisy = start.node("noisy", model=derive_model(start.tmp, "noisy", "--weight-noise", "0.1"), model_id="noisy")
    cheat = start.cheat("cheat", upstream=noisy, imitate=honest, lie="model")
    policy = {"policies": [{"name": "trusted-cheapest", "strategy": "cheapest",
                            "filters": {"min_trust": 0.5}, "audit_share": 1.0}]}
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "audit": {"references": [str(MODEL)]},
        # The cheat undercuts the honest node, so it gets the traffic first.
        "nodes": [tollgate_node(cheat, "cheat", "0.05"), tollgate_node(honest, "honest", "0.5")],
    }, policies={"default.yaml": policy})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    served = []
    deadline = time.time() + 180
    for i in range(30):
        messages = PROMPTS[i % len(PROMPTS)]
        if i % 2:
            raw = client.chat.completions.with_raw_response.create(
                model="smollm2", messages=messages, max_tokens=40, temperature=0.7, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            assert text
            served.append(raw.headers["x-tollgate-node"])
        raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=messages, max_tokens=40, temperature=0)
        assert raw.parse().choices[0].message.content
        served.append(raw.headers["x-tollgate-node"])
        if served[-3:] == ["honest"] * 3 or time.time() > deadline:
            break
    assert served[0] == "cheat", served
    assert served[-3:] == ["honest"] * 3, served
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert status["cheat"]["trust"] < 0.5 <= status["honest"]["trust"], status
    quarantine = status["cheat"]["audits"]["quarantine"]
    assert quarantine and quarantine["reasons"], status["cheat"]
    evidence = Path(quarantine["evidence"])
    assert "0x" + hashlib.sha256(evidence.read_bytes()).hexdigest() == quarantine["evidence_hash"]
    explained = {c["node"]: c for c in gw.post("/admin/route/explain", {"model": "smollm2", "messages": PROMPTS[0]})["candidates"]}
    assert explained["cheat"]["trust"] == 0.0 and not explained["cheat"]["healthy"]
    assert 'tollgate_audits_total{node="cheat",outcome="fail"}' in gw.metrics()
    # A restart launders nothing: the ledger kept every audit count and the quarantine.
    def counted():
        live = {n["id"]: n["audits"]["trust"] for n in gw.status()["nodes"] if n["audits"]}
        with sqlite3.connect(f"file:{gw.dir}/data/ledger.sqlite?mode=ro", uri=True) as db:
            stored = {n: (p, f) for n, p, f in db.execute("SELECT node, passed, failed FROM node_trust")}
        same = all(stored.get(n) == (t["passed"], t["failed"]) for n, t in live.items())
        return live if same and set(live) == set(stored) else None
    before = gw.wait_for(counted, timeout=30, what="every audit counted in the ledger")
    assert before["honest"]["passed"] >= 1 and before["cheat"]["failed"] >= 1, before
    gw.stop()
    gw.restart()
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert status["cheat"]["trust"] == 0.0 and status["cheat"]["audits"]["quarantine"]
    for node in ("honest", "cheat"):
        after = status[node]["audits"]["trust"]
        assert (after["passed"], after["failed"]) == (before[node]["passed"], before[node]["failed"]), (node, after)
    assert status["honest"]["trust"] == before["honest"]["alpha"] / (before["honest"]["alpha"] + before["honest"]["beta"])
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=PROMPTS[0], max_tokens=8, temperature=0)
    assert raw.headers["x-tollgate-node"] == "honest"


def test_a_full_audit_queue_drops_audits_never_requests(start):
    honest = start.node("honest")
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "audit": {"references": [str(MODEL)], "queue": 1, "share": 1.0},
        "nodes": [tollgate_node(honest, "honest")],
    })
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)

    def one(i):
        return client.chat.completions.create(model="smollm2", messages=PROMPTS[i % 3], max_tokens=24, temperature=0)

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(one, range(12)))
    assert all(a.choices[0].message.content for a in answers)
    done = gw.wait_for(lambda: (lambda a: a if len(a["audits"]) + a["dropped"] == 12 else None)(gw.get("/admin/audits")),
                       timeout=60, what="every answer audited or dropped")
    assert done["dropped"] >= 1, done
    assert all(a["outcome"] == "pass" for a in done["audits"])
    assert f"tollgate_audits_dropped_total {done['dropped']}" in gw.metrics()


def test_a_caught_registered_node_is_slashed_on_chain_against_its_evidence(start, procs):
    anvil = Anvil(start.tmp, fund={PAYER: "10"}, mint={PROVIDER: "100"})
    procs.append(anvil)
    honest = start.node("honest")
    half = start.node("half", model=derive_model(start.tmp, "half", "--skip-half-layers"), model_id="half")
    cheat = start.cheat("cheat", upstream=half, imitate=honest, lie="model")
    info = cheat.info()
    # The cheat's provider stakes 50 on its signing key, claiming SmolLM2's hash.
    anvil.register_node(cheat, price_in="0.05", price_out="0.05")
    gw = start.gateway({
        "accounts": [{"id": "acme", "payer": PAYER}],
        "audit": {"references": [str(MODEL)], "share": 1.0},
        "nodes": [{**tollgate_node(honest, "honest", "0.5"), "provider": PROVIDER}],
        "chain": chain_section(anvil, discovery_interval_s=0.5),
    }, env={"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY})
    cheat_id = info["address"].lower()
    gw.wait_for(lambda: any(n["id"] == cheat_id and n["models"] for n in gw.status()["nodes"]),
                timeout=30, what="the registered cheat routed")
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0, timeout=120)
    served = []
    for i in range(20):  # bounded; the first audit catches it
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=PROMPTS[i % len(PROMPTS)], max_tokens=40, temperature=0)
        assert raw.parse().choices[0].message.content
        served.append(raw.headers["x-tollgate-node"])
        if served[-2:] == ["honest", "honest"]:
            break
    assert served[0] == cheat_id and served[-1] == "honest", served

    def slashed():
        q = gw.get("/admin/audits")["quarantined"].get(cheat_id)
        return q if q and q.get("slash") else None
    quarantine = gw.wait_for(slashed, timeout=60, what="the slash")
    # Slashed for fraud, the node is inactive in the registry, so discovery drops it.
    gw.wait_for(lambda: all(n["id"] != cheat_id for n in gw.status()["nodes"]), timeout=30,
                what="the slashed node gone from routing")
    assert quarantine["slash"].startswith("slashed 50000000000000000000 atto-units"), quarantine
    evidence = Path(quarantine["evidence"])
    evidence_hash = "0x" + hashlib.sha256(evidence.read_bytes()).hexdigest()
    assert evidence_hash == quarantine["evidence_hash"]
    # On chain: the registry's Slashed event names the cheat's key and the evidence hash.
    logs = anvil.call("eth_getLogs", [{"address": anvil.addresses["registry"], "fromBlock": "0x0", "toBlock": "latest"}])
    slashes = [l for l in logs if len(l["topics"]) == 4 and l["topics"][3] == evidence_hash]
    assert len(slashes) == 1, logs
    assert slashes[0]["topics"][1] == "0x" + "0" * 24 + cheat_id[2:]
    amount, reason = int(slashes[0]["data"][2:66], 16), int(slashes[0]["data"][66:130], 16)
    assert (amount, reason) == (50 * 10**18, 0), "the whole stake, for fraud"
