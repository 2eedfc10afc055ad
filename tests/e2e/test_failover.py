"""Failover before the first byte, clean errors after it, and cancellation."""

import time

import httpx
import openai
import pytest

from harness import KEY, node


def client_for(gw):
    return openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)


def test_stream_survives_the_first_node_refusing_connections(start):
    refusing = start.upstream("cheap-refusing")
    good = start.upstream("good")
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            # Health checks would also find the node down; keep them out of the way
            # so this test sees the request path's own failover.
            "health": {"failure_threshold": 2, "open_for_s": 30, "check_interval_s": 600},
            "nodes": [
                node(refusing, models=["instant-1"], prices={"input_per_1m": "0.01", "output_per_1m": "0.01"}),
                node(good, models=["instant-1"]),
            ],
        }
    )
    refusing.control(fault="refuse")
    client = client_for(gw)
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="instant-1", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
        assert raw.headers["x-tollgate-node"] == "good"
        chunks = list(raw.parse())
        assert chunks[-1].usage.completion_tokens == 16
    # The refusing node was tried until its circuit opened, then skipped.
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert status["cheap-refusing"]["health"]["circuit"] == "open"
    assert refusing.stats()["requests"] == 0
    assert [r["node"] for r in gw.receipts()] == ["good"] * 3
    assert "tollgate_failovers_total 2" in gw.metrics()


def test_500_and_bad_json_fail_over_but_client_errors_do_not(start):
    broken = start.upstream("broken", fault="500")
    garbled = start.upstream("garbled", fault="bad-json")
    good = start.upstream("good")
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            "nodes": [node(broken, models=["instant-1"]), node(garbled, models=["instant-1"]), node(good, models=["instant-1"])],
        },
        policies={"p.yaml": {"policies": [{"name": "ordered", "strategy": "cheapest", "fallback": ["good"]}]}},
    )
    client = client_for(gw)
    raw = client.chat.completions.with_raw_response.create(model="instant-1", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-tollgate-node"] == "good"
    assert broken.stats()["requests"] == 1 and garbled.stats()["requests"] == 1
    # A request the gateway itself refuses never reaches a node.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="instant-1", messages=[{"role": "user", "content": "x"}], n=0)
    assert broken.stats()["requests"] == 1 and good.stats()["requests"] == 1


def test_node_dying_mid_stream_ends_with_an_openai_error_event_and_bills_what_was_delivered(start):
    dying = start.upstream("dying", fault="die-mid-stream")
    gw = start.gateway({"accounts": [{"id": "acme"}], "nodes": [node(dying, models=["instant-1"])]})
    stream = client_for(gw).chat.completions.create(
        model="instant-1", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            got.append(chunk)
    assert "mid-stream" in str(e.value)
    assert got and got[0].choices[0].delta.role == "assistant"
    [receipt] = gw.wait_for(gw.receipts, what="receipt")
    assert receipt["outcome"] == "interrupted"
    assert receipt["usage_source"] == "gateway"
    assert receipt["completion_tokens"] == 2


def test_no_healthy_node_is_503_with_retry_after(start):
    down = start.upstream("down")
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            "health": {"failure_threshold": 1, "open_for_s": 60, "check_interval_s": 600},
            "nodes": [node(down, models=["instant-1"])],
        }
    )
    down.control(fault="refuse")
    client = client_for(gw)
    with pytest.raises(openai.APIStatusError) as first:
        client.chat.completions.create(model="instant-1", messages=[{"role": "user", "content": "x"}])
    assert first.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as second:
        client.chat.completions.create(model="instant-1", messages=[{"role": "user", "content": "x"}])
    assert second.value.status_code == 503
    assert second.value.response.headers["retry-after"] == "1"
    assert second.value.code == "no_healthy_node"
    assert gw.receipts() == []


def test_client_disconnect_cancels_the_stream_and_bills_the_delivered_part(start):
    slow = start.upstream("slow", tokens_per_s=20, completion_tokens=200)
    gw = start.gateway({"accounts": [{"id": "acme"}], "nodes": [node(slow, models=["instant-1"])]})
    with httpx.stream(
        "POST",
        f"{gw.url}/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "instant-1", "messages": [{"role": "user", "content": "x"}], "stream": True},
        timeout=30,
    ) as r:
        seen = 0
        for line in r.iter_lines():
            if '"content":"tok' in line:
                seen += 1
            if seen == 3:
                break
    started = time.time()
    [receipt] = gw.wait_for(gw.receipts, timeout=10, what="cancelled receipt")
    assert time.time() - started < 5, "the gateway noticed the disconnect long before the node would have finished"
    assert receipt["outcome"] == "cancelled"
    assert 3 <= receipt["completion_tokens"] < 200


def test_a_hanging_node_times_out_before_the_first_byte_and_the_next_answers(start):
    hanging = start.upstream("hanging", fault="hang")
    good = start.upstream("good")
    cheap = {"input_per_1m": "0.01", "output_per_1m": "0.01"}
    gw = start.gateway(
        {
            "accounts": [{"id": "acme"}],
            "nodes": [
                node(hanging, models=["instant-1"], prices=cheap, timeouts={"first_byte_ms": 300}),
                node(good, models=["instant-1"]),
            ],
        }
    )
    started = time.time()
    raw = client_for(gw).chat.completions.with_raw_response.create(
        model="instant-1", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert raw.headers["x-tollgate-node"] == "good"
    assert list(raw.parse())[0].choices[0].delta.role == "assistant"
    assert time.time() - started < 5
    assert hanging.stats()["requests"] == 1
    failures = [line for line in gw.metrics().splitlines() if line.startswith("tollgate_node_failures_total")]
    assert any('node="hanging"' in line and 'reason="timeout"' in line for line in failures), failures
