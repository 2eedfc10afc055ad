"""Account limits, budgets, and the operator's command line."""

import openai
import pytest

from harness import KEY, Gateway, node


def test_requests_per_minute_limit_is_429_with_ratelimit_headers(start):
    a = start.upstream("a")
    gw = start.gateway({"accounts": [{"id": "acme", "requests_per_min": 2}], "nodes": [node(a, models=["instant-1"])]})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    msgs = [{"role": "user", "content": "x"}]
    raw = client.chat.completions.with_raw_response.create(model="instant-1", messages=msgs)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(model="instant-1", messages=msgs)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="instant-1", messages=msgs)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert len(gw.receipts()) == 2


def test_spent_budget_is_insufficient_quota_and_survives_restart(start, tmp_path):
    a = start.upstream("a", completion_tokens=100)
    price = {"input_per_1m": "1000", "output_per_1m": "1000"}
    config = {"accounts": [{"id": "acme", "budget": "0.1"}], "nodes": [node(a, models=["instant-1"], prices=price)]}
    gw = start.gateway(config)
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    msgs = [{"role": "user", "content": "x"}]
    client.chat.completions.create(model="instant-1", messages=msgs)  # ~0.1: spends the budget
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="instant-1", messages=msgs)
    assert e.value.code == "insufficient_quota"
    gw.stop()
    again = Gateway(tmp_path, config, key_account=None)
    try:
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=again.url, api_key=KEY, max_retries=0).chat.completions.create(model="instant-1", messages=msgs)
    finally:
        again.stop()


def test_check_config_prints_file_line_and_problem(tmp_path):
    (tmp_path / "routing").mkdir()
    (tmp_path / "config.yaml").write_text(
        "listen: 127.0.0.1:8080\n"
        "accounts:\n"
        "  - id: acme\n"
        "nodes:\n"
        "  - id: a\n"
        "    kind: openai\n"
        "    url: ftp://nowhere\n"
        "    trust: 3\n"
        "policies_dir: routing\n"
    )
    (tmp_path / "routing" / "p.yaml").write_text(
        "policies:\n  - name: p\n    filters:\n      min_trust: 2\n    fallback: [missing]\n"
    )
    r = Gateway.cli("check-config", str(tmp_path / "config.yaml"))
    assert r.returncode == 1
    out = r.stdout
    assert f"{tmp_path}/config.yaml:7: nodes[0].url: 'ftp://nowhere' is not an http(s) URL" in out
    assert f"{tmp_path}/config.yaml:8:" in out and "trust" in out
    assert f"{tmp_path}/routing/p.yaml:4:" in out
    assert f"{tmp_path}/routing/p.yaml:5:" in out and "missing" in out

    (tmp_path / "config.yaml").write_text("listen: 127.0.0.1:8080\nnodez: []\n")
    r = Gateway.cli("check-config", str(tmp_path / "config.yaml"))
    assert r.returncode == 1 and f"{tmp_path}/config.yaml:2:" in r.stdout and "nodez" in r.stdout


def test_shipped_config_is_valid():
    r = Gateway.cli("check-config", "config.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_receipts_of_the_earlier_jsonl_file_move_into_the_ledger_and_count_against_budgets(start, tmp_path):
    import json

    old = {
        "request_id": "old-1", "account": "acme", "node": "a", "model": "instant-1",
        "prompt_tokens": 10, "completion_tokens": 90, "price_in_per_1m": "1000000000000000000000",
        "price_out_per_1m": "1000000000000000000000", "amount": "100000000000000000",
        "response_hash": "00", "outcome": "completed", "usage_source": "upstream", "finished_at_ms": 1,
    }
    (tmp_path / "data").mkdir()
    # The last line was torn by a crash: never acknowledged, never billed.
    (tmp_path / "data" / "receipts.jsonl").write_text(json.dumps(old) + '\n{"request_id":"torn","acc')
    a = start.upstream("a")
    config = {"accounts": [{"id": "acme", "budget": "0.1"}], "nodes": [node(a, models=["instant-1"])]}
    gw = start.gateway(config)
    [receipt] = gw.receipts()
    assert receipt["request_id"] == "old-1" and receipt["amount"] == old["amount"] and receipt["payer"] == ""
    assert not (tmp_path / "data" / "receipts.jsonl").exists()
    assert (tmp_path / "data" / "receipts.jsonl.imported").exists()
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="instant-1", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "insufficient_quota", "the imported spend used up the 0.1 budget"
