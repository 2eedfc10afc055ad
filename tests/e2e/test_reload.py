"""Live reload: valid changes apply without dropping streams; invalid ones are refused whole."""

import os
import signal
import threading
import time

import openai

from harness import KEY, Gateway, node


def served_by(client) -> str:
    raw = client.chat.completions.with_raw_response.create(model="instant-1", messages=[{"role": "user", "content": "x"}])
    return raw.headers["x-tollgate-node"]


def prefer(node_id: str) -> dict:
    return {"policies": [{"name": f"prefer-{node_id}", "strategy": "weighted", "weights": {node_id: 1}}]}


def test_valid_reload_applies_without_dropping_in_flight_streams(start):
    a = start.upstream("a", tokens_per_s=40, completion_tokens=60)
    b = start.upstream("b")
    gw = start.gateway(
        {"accounts": [{"id": "acme"}], "nodes": [node(a, models=["instant-1"]), node(b, models=["instant-1"])]},
        policies={"route.yaml": prefer("a")},
    )
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    result: dict = {}

    def long_stream() -> None:
        stream = client.chat.completions.create(
            model="instant-1", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        result["usage"] = chunks[-1].usage
        result["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    t = threading.Thread(target=long_stream)
    t.start()
    gw.wait_for(lambda: a.stats()["requests"] == 1, what="stream to start on a")
    generation = gw.status()["generation"]
    gw.write_policy("route.yaml", prefer("b"))
    gw.wait_for(lambda: gw.status()["generation"] > generation, what="reload")
    assert served_by(client) == "b", "new requests follow the new policy"
    t.join(timeout=30)
    assert not t.is_alive()
    assert result["usage"].completion_tokens == 60, "the in-flight stream finished whole on the old state"
    assert len(result["text"].split()) == 60
    assert 'tollgate_config_reloads_total{result="ok"}' in gw.metrics()


def test_invalid_reload_is_refused_whole_and_the_old_policy_keeps_serving(start):
    a = start.upstream("a")
    b = start.upstream("b")
    gw = start.gateway(
        {"accounts": [{"id": "acme"}], "nodes": [node(a, models=["instant-1"]), node(b, models=["instant-1"])]},
        policies={"route.yaml": prefer("a"), "z-extra.yaml": {"policies": []}},
    )
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    assert served_by(client) == "a"
    generation = gw.status()["generation"]
    # One valid change and one broken file in the same reload: neither applies.
    gw.write_policy("route.yaml", prefer("b"))
    gw.write_policy("z-extra.yaml", "policies:\n  - name: broken\n    strategy: weighted\n    weights:\n      ghost-node: 2\n")
    status = gw.wait_for(lambda: (s := gw.status())["reload"]["last_errors"] and s, what="refused reload")
    assert status["generation"] == generation
    errors = status["reload"]["last_errors"]
    assert any("z-extra.yaml:5:" in e and "ghost-node" in e for e in errors), errors
    assert served_by(client) == "a"
    metrics = gw.metrics()
    assert 'tollgate_config_reloads_total{result="error"}' in metrics
    assert "tollgate_config_last_reload_ok 0" in metrics
    # Fixing the file applies both changes at once.
    gw.write_policy("z-extra.yaml", "policies: []\n")
    gw.wait_for(lambda: gw.status()["generation"] > generation, what="reload after fix")
    assert served_by(client) == "b"


def test_sighup_reloads_and_revoked_keys_stop_working_without_restart(start):
    a = start.upstream("a")
    gw = start.gateway({"accounts": [{"id": "acme"}], "nodes": [node(a, models=["instant-1"])]})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    assert served_by(client) == "a"
    generation = gw.status()["generation"]
    os.kill(gw.proc.p.pid, signal.SIGHUP)
    gw.wait_for(lambda: gw.status()["generation"] > generation, what="SIGHUP reload")
    listing = Gateway.cli("keys", "--config", str(gw.config_path), "list")
    key_id = listing.stdout.splitlines()[1].split()[0]
    assert Gateway.cli("keys", "--config", str(gw.config_path), "revoke", key_id).returncode == 0
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            served_by(client)
        except openai.AuthenticationError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("revoked key still accepted")
