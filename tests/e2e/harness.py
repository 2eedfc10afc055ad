"""Starts real Tollgate processes for end-to-end tests: instant upstreams and gateways."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import yaml

BIN_DIR = Path(os.environ.get("TOLLGATE_BIN_DIR", Path.home() / ".cache/tollgate-target/debug"))
KEY = "sk-test-acme-0123456789abcdef"


class Proc:
    """A child process that announces `listening on ADDR` on stdout."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        self.logf = open(log, "wb")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.logf, stdin=subprocess.DEVNULL)
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.p.stdout is not None
            for raw in self.p.stdout:
                lines.put(raw.decode(errors="replace"))

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.time() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.time()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{args[0]} did not start; log:\n{log.read_text()}")
            if line.startswith("listening on "):
                self.addr = line.split()[-1].strip()
                return

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()

    def kill(self) -> None:
        self.p.kill()
        self.p.wait()


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Upstream:
    """`tollgate-upstream`: an instant OpenAI-compatible node with fault injection."""

    def __init__(self, tmp: Path, name: str, model: str = "instant-1", **opts):
        args = [str(BIN_DIR / "tollgate-upstream"), "--listen", "127.0.0.1:0", "--model", model, "--node-name", name]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.name = name
        self.proc = Proc(args, tmp / f"upstream-{name}.log")
        self.url = f"http://{self.proc.addr}/v1"

    def control(self, **fields) -> dict:
        return http_json("POST", f"http://{self.proc.addr}/control", fields)[1]

    def stats(self) -> dict:
        return http_json("GET", f"http://{self.proc.addr}/control")[1]

    def stop(self) -> None:
        self.proc.stop()


MODEL = Path(__file__).resolve().parents[2] / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class Node:
    """A real `tollgate-node` serving SmolLM2."""

    def __init__(self, tmp: Path, name: str, price_in: str = "0.10", price_out: str = "0.20"):
        args = [
            str(BIN_DIR / "tollgate-node"), "serve", "--model", str(MODEL), "--model-id", "smollm2",
            "--listen", "127.0.0.1:0", "--price-in", price_in, "--price-out", price_out,
            "--region", "eu-west", "--key-file", str(tmp / f"{name}.key"),
        ]
        self.name = name
        self.proc = Proc(args, tmp / f"node-{name}.log")
        self.root = f"http://{self.proc.addr}"

    def info(self) -> dict:
        return http_json("GET", f"{self.root}/node/info")[1]

    def stop(self) -> None:
        self.proc.stop()


class Gateway:
    """A `tollgate serve` process on a config written for the test."""

    def __init__(self, tmp: Path, config: dict, policies: dict[str, dict] | None = None, key_account: str | None = "acme"):
        self.dir = tmp
        self.config_path = tmp / "config.yaml"
        config = {"listen": "127.0.0.1:0", "data_dir": "data", "log_level": "info", **config}
        if policies is not None:
            (tmp / "routing").mkdir(exist_ok=True)
            config["policies_dir"] = "routing"
            for name, doc in policies.items():
                self.write_policy(name, doc)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        if key_account:
            self.cli("keys", "--config", str(self.config_path), "add", "--account", key_account, "--key", KEY)
        self.proc = Proc([str(BIN_DIR / "tollgate"), "serve", "--config", str(self.config_path)], tmp / "gateway.log")
        self.base = f"http://{self.proc.addr}"
        self.url = f"{self.base}/v1"

    @staticmethod
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN_DIR / "tollgate"), *args], capture_output=True, text=True, timeout=30)

    def write_policy(self, name: str, doc: dict | str) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
        path = self.dir / "routing" / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)

    def status(self) -> dict:
        return http_json("GET", f"{self.base}/admin/status")[1]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as r:
            return r.read().decode()

    def receipts(self) -> list[dict]:
        path = self.dir / "data" / "receipts.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> None:
        self.proc.stop()


def node(upstream: Upstream, node_id: str | None = None, **extra) -> dict:
    return {
        "id": node_id or upstream.name,
        "kind": "openai",
        "url": upstream.url,
        "region": extra.pop("region", "eu-west"),
        "hardware": extra.pop("hardware", "datacenter-gpu"),
        "prices": extra.pop("prices", {"input_per_1m": "0.10", "output_per_1m": "0.20"}),
        **extra,
    }
