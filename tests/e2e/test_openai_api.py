"""The official `openai` SDK against the gateway in front of two real upstream servers."""

import httpx
import openai
import pytest

from harness import KEY, node


@pytest.fixture
def two_nodes(start):
    a = start.upstream("node-a", completion_tokens=12)
    b = start.upstream("node-b", completion_tokens=12)
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            "nodes": [
                node(a, prices={"input_per_1m": "0.10", "output_per_1m": "0.20"}),
                node(b, prices={"input_per_1m": "0.30", "output_per_1m": "0.60"}),
            ],
        }
    )
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    return gw, client, a, b


def test_non_streaming_completion_is_served_billed_and_tagged(two_nodes):
    gw, client, a, b = two_nodes
    raw = client.chat.completions.with_raw_response.create(
        model="instant-1", messages=[{"role": "user", "content": "Say hello"}], max_tokens=8, temperature=0.2, seed=7
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    # Cheapest policy by default: node-a.
    assert raw.headers["x-tollgate-node"] == "node-a"
    request_id = raw.headers["x-request-id"]
    [receipt] = gw.receipts()
    assert receipt["request_id"] == request_id
    assert receipt["node"] == "node-a" and receipt["account"] == "acme"
    assert receipt["usage_source"] == "upstream"
    assert receipt["completion_tokens"] == 8
    expected = (receipt["prompt_tokens"] * 10**17 + 8 * 2 * 10**17) // 10**6
    assert int(receipt["amount"]) == expected
    assert raw.headers["x-tollgate-cost"] == f"{expected / 1e18:.18f}".rstrip("0")
    metrics = gw.metrics()
    assert 'tollgate_requests_total{status="200",model="instant-1",node="node-a"} 1' in metrics


def test_stream_with_usage_has_openai_shape(two_nodes):
    gw, client, *_ = two_nodes
    stream = client.chat.completions.create(
        model="instant-1",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 12
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])
    [receipt] = gw.receipts()
    assert receipt["completion_tokens"] == 12 and receipt["outcome"] == "completed"


def test_stream_without_usage_hides_the_metering_chunk_but_still_bills(two_nodes):
    gw, client, *_ = two_nodes
    with httpx.stream(
        "POST",
        f"{gw.url}/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "instant-1", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert '"usage"' not in body, "the client did not ask for usage"
    [receipt] = gw.receipts()
    assert receipt["usage_source"] == "upstream" and receipt["completion_tokens"] == 12


def test_models_list_and_retrieve(two_nodes):
    _, client, *_ = two_nodes
    ids = [m.id for m in client.models.list()]
    assert ids == ["instant-1"]
    assert client.models.retrieve("instant-1").id == "instant-1"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nope")
    assert e.value.code == "model_not_found"


def test_errors_raise_the_sdks_matching_exceptions(two_nodes):
    gw, client, *_ = two_nodes
    msgs = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=msgs)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="instant-1", messages=[])
    assert e.value.code == "empty_array" and e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="instant-1", messages=msgs, temperature=5)
    assert e.value.param == "temperature"
    bad = openai.OpenAI(base_url=gw.url, api_key="sk-wrong-key-000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="instant-1", messages=msgs)
    assert e.value.code == "invalid_api_key"
    assert gw.receipts() == [], "refused requests are never billed"


def test_raw_bad_input_gets_openai_errors(two_nodes):
    gw, *_ = two_nodes
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    r = httpx.post(f"{gw.url}/chat/completions", headers=auth, content=b'{"model": "instant-1", "messages": [', timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{gw.url}/chat/completions", headers=auth, json={"model": "instant-1"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_required_parameter"
    big = {"model": "instant-1", "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    r = httpx.post(f"{gw.url}/chat/completions", headers=auth, json=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.post(f"{gw.url}/chat/completions", headers={"content-type": "application/json"}, json={}, timeout=10)
    assert r.status_code == 401
    r = httpx.get(f"{gw.base}/v2/nothing", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    assert "x-request-id" in r.headers


def test_unknown_fields_and_parameters_reach_the_node(two_nodes):
    _, client, a, _ = two_nodes
    completion = client.chat.completions.create(
        model="instant-1",
        messages=[{"role": "user", "content": "x"}],
        n=2,
        stop=["tok3"],
        extra_body={"vendor_knob": 1},
    )
    assert len(completion.choices) == 2
    assert all("tok3" not in c.message.content for c in completion.choices)
    assert a.stats()["requests"] >= 1


def test_route_explain_and_status(two_nodes):
    gw, *_ = two_nodes
    import harness

    code, explained = harness.http_json(
        "POST", f"{gw.base}/admin/route/explain", {"model": "instant-1", "messages": [{"role": "user", "content": "x"}]}
    )
    assert code == 200
    routes = explained["decision"]["routes"]
    assert [r["node"] for r in routes] == ["node-a", "node-b"]
    assert all(r["reasons"] for r in routes)
    status = gw.status()
    assert {n["id"] for n in status["nodes"]} == {"node-a", "node-b"}
    assert status["reload"]["last_errors"] == []
