"""Real tollgate-node processes behind the gateway: failover when one dies, signed answers."""

import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from harness import KEY

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def tollgate_node(n, node_id, price):
    return {"id": node_id, "kind": "tollgate", "url": n.root, "region": "eu-west",
            "prices": {"input_per_1m": price, "output_per_1m": price}}


def ask(client, stream=False):
    if stream:
        chunks = list(client.chat.completions.create(
            model="smollm2", messages=QUESTION, temperature=0, max_tokens=16, stream=True,
            stream_options={"include_usage": True}))
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage
    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=16)
    return raw.parse().choices[0].message.content, raw.headers["x-tollgate-node"]


def test_node_info_and_signed_answers_through_the_gateway(start):
    a = start.node("a", price_in="0.10", price_out="0.20")
    info = a.info()
    assert info["model"] == "smollm2"
    assert info["model_sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert info["address"].startswith("0x") and len(info["address"]) == 42
    assert (info["price_in_per_1m"], info["price_out_per_1m"], info["region"]) == ("0.1", "0.2", "eu-west")
    assert oct(os.stat(a.proc.log.parent / "a.key").st_mode & 0o777) == "0o600"
    # The placement planner's answer on this GPU-less machine: every one of
    # SmolLM2's 30 layers on the CPU, the GPU strategies rejected for want of one.
    assert info["layers"] == [0, 30]
    plan = info["plan"]
    assert plan["chosen"]["strategy"] == "cpu-only"
    assert plan["chosen"]["layers"] == ["cpu"] * 30
    assert plan["chosen"]["predicted_tokens_per_s"] > 0
    assert {r["strategy"] for r in plan["rejected"]} == {"all-gpu", "gpu-prefix+cpu-offload", "stream-from-host"}
    assert info["placement"].startswith("cpu-only: layers 0..30 on the CPU (llama.cpp")
    gw = start.gateway({"accounts": [{"id": "acme"}], "nodes": [tollgate_node(a, "a", "0.1")]})
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    text, node = ask(client)
    assert "Paris" in text and node == "a"
    streamed, usage = ask(client, stream=True)
    assert streamed == text and usage.completion_tokens > 0
    assert 'reason="protocol"' not in gw.metrics(), "honest signatures verify"


def test_killing_a_node_mid_run_moves_every_later_request_to_the_other(start):
    a = start.node("a")
    b = start.node("b")
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "health": {"failure_threshold": 1, "open_for_s": 60, "check_interval_s": 600},
        "nodes": [tollgate_node(a, "a", "0.1"), tollgate_node(b, "b", "0.5")],
    })
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    served = [ask(client)[1] for _ in range(2)]
    a.proc.kill()
    served += [ask(client)[1] for _ in range(3)]
    text, usage = ask(client, stream=True)
    assert "Paris" in text
    assert served == ["a", "a", "b", "b", "b"]
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert status["a"]["health"]["circuit"] == "open"
    assert [r["node"] for r in gw.receipts()] == ["a", "a", "b", "b", "b", "b"]


class Tamper(BaseHTTPRequestHandler):
    """A fault-injecting relay: passes a real node's answers on, with the text changed."""

    target = ""

    def log_message(self, *args):
        pass

    def relay(self, body=None):
        req = urllib.request.Request(self.target + self.path, data=body, method=self.command,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            data, headers = r.read(), dict(r.headers)
        if self.path == "/v1/chat/completions":
            data = data.replace(b"Paris", b"Rome!")
        self.send_response(200)
        for k in ("content-type", "x-tollgate-attestation"):
            if k in headers or k.title() in headers:
                self.send_header(k, headers.get(k) or headers.get(k.title()))
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.relay()

    def do_POST(self):
        self.relay(self.rfile.read(int(self.headers["content-length"])))


@pytest.fixture
def tamper_for():
    servers = []

    def make(node):
        handler = type("T", (Tamper,), {"target": node.root})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield make
    for s in servers:
        s.shutdown()


def test_a_wrongly_signed_answer_is_rejected_and_the_node_marked_unhealthy(start, tamper_for):
    a = start.node("a")
    b = start.node("b")
    cheat = tamper_for(a)
    gw = start.gateway({
        "accounts": [{"id": "acme"}],
        "health": {"failure_threshold": 2, "open_for_s": 60, "check_interval_s": 600},
        "nodes": [
            {"id": "cheat", "kind": "tollgate", "url": cheat, "prices": {"input_per_1m": "0.01", "output_per_1m": "0.01"}},
            tollgate_node(b, "b", "0.5"),
        ],
    })
    client = openai.OpenAI(base_url=gw.url, api_key=KEY, max_retries=0)
    for _ in range(3):
        text, node = ask(client)
        assert node == "b" and "Paris" in text, "the tampered answer never reaches the client"
    status = {n["id"]: n for n in gw.status()["nodes"]}
    assert status["cheat"]["health"]["circuit"] == "open"
    assert 'tollgate_node_failures_total{node="cheat",reason="protocol"} 2' in gw.metrics()
    assert all(r["node"] == "b" for r in gw.receipts())
