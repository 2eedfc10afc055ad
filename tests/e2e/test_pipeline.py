"""One model split across real `tollgate-node stage` processes, served by the gateway as one node."""

import json
import time
from decimal import Decimal

import openai
import pytest

from harness import DEPLOYER_KEY, KEY, MODEL, PAYER, PROVIDER, Anvil, chain_section

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]


PRICE_IN, PRICE_OUT = 10**17, 2 * 10**17  # 0.10 and 0.20 per 1M tokens, in atto-units
OPERATOR = "0x00000000000000000000000000000000000000a0"


def pipeline(node_id, model, stages, codec="f32", stage_providers=None, attention="f32"):
    return {"id": node_id, "kind": "pipeline", "model_path": str(MODEL), "models": [model],
            "stages": [s.addr for s in stages], "codec": codec, "region": "eu-west", "attention": attention,
            "provider": OPERATOR, "stage_providers": stage_providers or {},
            "prices": {"input_per_1m": "0.10", "output_per_1m": "0.20"}}


def by_request(receipts):
    """Receipts grouped by the request they bill (a pipeline bills one per stage, `<id>.s<i>`)."""
    groups = {}
    for r in receipts:
        groups.setdefault(r["request_id"].rsplit(".s", 1)[0], []).append(r)
    return groups


def stream_text(client, model, messages, max_tokens, on_chunk=None):
    text, finish, usage = "", None, None
    for i, c in enumerate(client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True})):
        if c.choices:
            text += c.choices[0].delta.content or ""
            finish = c.choices[0].finish_reason or finish
        usage = c.usage or usage
        if on_chunk:
            on_chunk(i)
    return text, finish, usage


def test_a_three_stage_chain_answers_like_the_whole_model(start):
    a, b, c = start.stage("a", "0..10"), start.stage("b", "10..20"), start.stage("c", "20..30")
    whole = start.stage("whole", "0..30")
    # A stage attending in f16 computes other numbers: the f32 chain leaves it
    # out (with it, one hop over 0..30 would beat three), an f16 pipeline runs on it.
    half = start.stage("whole-f16", "0..30", attention="f16")
    # Stages a and c are run by their own providers; b by the pipeline's operator.
    paid = {a.addr: "0x00000000000000000000000000000000000000aa", c.addr: "0x00000000000000000000000000000000000000cc"}
    gw = start.gateway({"accounts": [{"id": "acme"}],
                        "nodes": [pipeline("chain", "smollm2", [a, b, c, half], stage_providers=paid),
                                  pipeline("one", "smollm2-whole", [whole]),
                                  pipeline("one-f16", "smollm2-f16", [whole, half], attention="f16")]})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    assert {"smollm2", "smollm2-whole"} <= {m.id for m in client.models.list()}

    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=24)
    answer = raw.parse()
    assert raw.headers["x-tollgate-node"] == "chain"
    text = answer.choices[0].message.content
    assert "Paris" in text
    assert answer.usage.prompt_tokens > 10 and 0 < answer.usage.completion_tokens <= 24
    # Split three ways or not at all, the model says the same thing.
    one = client.chat.completions.create(model="smollm2-whole", messages=QUESTION, temperature=0, max_tokens=24)
    assert one.choices[0].message.content == text

    streamed, finish, usage = stream_text(client, "smollm2", QUESTION, 24)
    assert streamed == text
    assert finish == answer.choices[0].finish_reason
    assert usage.completion_tokens == answer.usage.completion_tokens

    # Sampling happens at the last stage with the request's seed: repeatable.
    sampled = [client.chat.completions.create(model="smollm2", messages=STORY, temperature=0.8, seed=11,
                                              max_tokens=20).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1] and sampled[0]

    chain = next(n for n in gw.status()["nodes"] if n["id"] == "chain")["chain"]
    assert chain["stages"] == [a.addr, b.addr, c.addr] and chain["spares"] == [[], [], []]
    f16 = client.chat.completions.create(model="smollm2-f16", messages=QUESTION, temperature=0, max_tokens=24)
    assert "Paris" in f16.choices[0].message.content
    f16_chain = next(n for n in gw.status()["nodes"] if n["id"] == "one-f16")["chain"]
    assert f16_chain["stages"] == [half.addr] and f16_chain["spares"] == [[]]
    # Each request is billed once, as one receipt per stage that ran it,
    # priced by the blocks it ran (10 of 30 each; the last takes the rounding).
    receipts = gw.wait_for(lambda: (r := gw.receipts()) and len(r) == 14 and r, what="fourteen receipts")
    requests = by_request(receipts)
    assert len(requests) == 6
    assert [parts[0]["node"].split("/")[0] for parts in requests.values()] == [
        "chain", "one", "chain", "chain", "chain", "one-f16"]
    third_in, third_out = PRICE_IN * 10 // 30, PRICE_OUT * 10 // 30
    for parts in requests.values():
        if parts[0]["node"].startswith("one"):
            node, stage = parts[0]["node"].split("/", 1)
            assert [(p["provider"], int(p["price_in_per_1m"])) for p in parts] == [(OPERATOR, PRICE_IN)]
            assert stage == {"one": whole.addr, "one-f16": half.addr}[node]
            continue
        assert [p["node"] for p in parts] == [f"chain/{s.addr}" for s in (a, b, c)]
        assert [p["provider"] for p in parts] == [paid[a.addr], OPERATOR, paid[c.addr]]
        assert [int(p["price_in_per_1m"]) for p in parts] == [third_in, third_in, PRICE_IN - 2 * third_in]
        assert [int(p["price_out_per_1m"]) for p in parts] == [third_out, third_out, PRICE_OUT - 2 * third_out]
        assert len({(p["prompt_tokens"], p["completion_tokens"]) for p in parts}) == 1
        for p in parts:
            assert int(p["amount"]) == (p["prompt_tokens"] * int(p["price_in_per_1m"])
                                        + p["completion_tokens"] * int(p["price_out_per_1m"])) // 10**6
    # The client was charged what the parts add up to.
    first = requests[raw.headers["x-request-id"]]
    billed = sum(int(p["amount"]) for p in first)
    assert Decimal(raw.headers["x-tollgate-cost"]) * 10**18 == billed

    # What stages cannot do is refused up front, in OpenAI's error shape.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="smollm2", messages=QUESTION, n=2)
    assert e.value.body["param"] == "n" and "one choice" in e.value.body["message"]


def test_killing_the_middle_stage_mid_stream_changes_nothing_the_client_sees(start):
    a, b, c = start.stage("a", "0..10"), start.stage("b", "10..20"), start.stage("c", "20..30")
    spare = start.stage("b-spare", "10..20")
    gw = start.gateway({"accounts": [{"id": "acme"}], "health": {"check_interval_s": 1},
                        "nodes": [pipeline("chain", "smollm2", [a, b, c, spare], codec="int7o")]})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    undisturbed, finish, usage = stream_text(client, "smollm2", STORY, 64)
    assert finish == "length" and usage.completion_tokens == 64
    chain = next(n for n in gw.status()["nodes"] if n["id"] == "chain")["chain"]
    assert chain["stages"] == [a.addr, b.addr, c.addr] and chain["spares"] == [[], [spare.addr], []]

    killed_at = []

    def kill_middle(i):
        if i == 4 and not killed_at:
            b.kill()
            killed_at.append(time.time())

    disturbed, finish, usage = stream_text(client, "smollm2", STORY, 64, on_chunk=kill_middle)
    assert killed_at, "the middle stage was killed mid-stream"
    assert b.proc.p.poll() is not None
    assert disturbed == undisturbed
    assert finish == "length" and usage.completion_tokens == 64

    # Later requests plan around the dead stage from the start.
    gw.wait_for(lambda: next(n for n in gw.status()["nodes"] if n["id"] == "chain")["chain"]["stages"]
                == [a.addr, spare.addr, c.addr], timeout=30, what="a new chain without the dead stage")
    again, _, _ = stream_text(client, "smollm2", STORY, 64)
    assert again == undisturbed
    # Every request was billed once, in full: one receipt per stage. The chain
    # that started a request is paid for it; the re-planned one for the next.
    receipts = gw.wait_for(lambda: (r := gw.receipts()) and len(r) == 9 and r, what="nine receipts")
    requests = list(by_request(receipts).values())
    assert [len(parts) for parts in requests] == [3, 3, 3]
    assert {r["completion_tokens"] for r in receipts} == {64}
    assert {r["outcome"] for r in receipts} == {"completed"}
    assert [p["node"] for p in requests[1]] == [f"chain/{s.addr}" for s in (a, b, c)]
    assert [p["node"] for p in requests[2]] == [f"chain/{s.addr}" for s in (a, spare, c)]


def test_each_stage_provider_is_paid_on_chain_for_its_blocks(start, procs, tmp_path):
    anvil = Anvil(tmp_path, fund={PAYER: "10"})
    procs.append(anvil)
    a, b = start.stage("a", "0..12"), start.stage("b", "12..30")
    paid = {a.addr: "0x00000000000000000000000000000000000000aa"}
    gw = start.gateway({"accounts": [{"id": "acme", "payer": PAYER}],
                        "nodes": [{**pipeline("chain", "smollm2", [a, b], stage_providers=paid), "provider": PROVIDER}],
                        "chain": chain_section(anvil)},
                       env={"TOLLGATE_SETTLER_KEY": DEPLOYER_KEY})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    ids = [client.chat.completions.with_raw_response.create(
        model="smollm2", messages=QUESTION, temperature=0, max_tokens=8).headers["x-request-id"] for _ in range(3)]

    def all_settled():
        rows = gw.ledger_rows()
        return len(rows) == 6 and all(state == "settled" for _, state, _ in rows) and rows

    rows = gw.wait_for(all_settled, timeout=60, what="six settled receipts")
    receipts = [r for r, _, _ in rows]
    assert sorted(by_request(receipts)) == sorted(ids)
    # 12 and 18 of 30 blocks: the invoices pay each provider its share.
    invoices = json.loads(gw.invoices("list").stdout)
    owed = {}
    for line in (line for i in invoices for line in i["lines"]):
        assert line["paid"] == line["billed"], "escrow covered everything"
        owed[line["provider"].lower()] = owed.get(line["provider"].lower(), 0) + int(line["billed"])
    expected = {}
    for r in receipts:
        expected[r["provider"].lower()] = expected.get(r["provider"].lower(), 0) + int(r["amount"])
    assert owed == expected and set(owed) == {paid[a.addr], PROVIDER.lower()}
    assert {int(r["price_in_per_1m"]) for r in receipts if r["provider"] == paid[a.addr]} == {PRICE_IN * 12 // 30}
    # A stage's part proves against the chain like any receipt.
    proof = json.loads(gw.invoices("verify", f"{ids[1]}.s1").stdout)
    assert proof["verified_on_chain"] is True
    report = json.loads(gw.invoices("reconcile").stdout)
    assert report["difference_wei"] == "0" and report["settled_receipts"] == 6
