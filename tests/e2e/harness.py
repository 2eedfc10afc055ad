"""Starts real Tollgate processes for end-to-end tests: instant upstreams and gateways."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

BIN_DIR = Path(os.environ.get("TOLLGATE_BIN_DIR", Path.home() / ".cache/tollgate-target/debug"))
KEY = "sk-test-acme-0123456789abcdef"


class Proc:
    """A child process that announces `listening on ADDR` on stdout."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.logf = open(log, "ab")
        env = {**os.environ, **(env or {})}
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.logf, stdin=subprocess.DEVNULL, env=env)
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


GEMMA = Path(__file__).resolve().parents[2] / "models/gemma3/gemma-3-270m-q4_k_m.gguf"


class Node:
    """A real `tollgate-node`, serving SmolLM2 unless told another GGUF file."""

    def __init__(self, tmp: Path, name: str, price_in: str = "0.10", price_out: str = "0.20",
                 model: Path = MODEL, model_id: str = "smollm2", extra: list[str] | None = None):
        args = [
            str(BIN_DIR / "tollgate-node"), "serve", "--model", str(model), "--model-id", model_id,
            "--listen", "127.0.0.1:0", "--price-in", price_in, "--price-out", price_out,
            "--region", "eu-west", "--key-file", str(tmp / f"{name}.key"), *(extra or []),
        ]
        self.name = name
        self.proc = Proc(args, tmp / f"node-{name}.log")
        self.root = f"http://{self.proc.addr}"

    def info(self) -> dict:
        return http_json("GET", f"{self.root}/node/info")[1]

    def stop(self) -> None:
        self.proc.stop()


class Stage:
    """A real `tollgate-node stage`: blocks `layers` (\"a..b\") of SmolLM2 over the stage protocol."""

    def __init__(self, tmp: Path, name: str, layers: str, model: Path = MODEL, attention: str = "f32"):
        args = [str(BIN_DIR / "tollgate-node"), "stage", "--model", str(model), "--layers", layers,
                "--listen", "127.0.0.1:0", "--attention", attention]
        self.name = name
        self.layers = layers
        self.proc = Proc(args, tmp / f"stage-{name}.log")
        self.addr = self.proc.addr

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        self.proc.stop()


class CheatNode:
    """A `tollgate-cheat-node`: speaks the node protocol in front of `upstream`,
    claims `imitate`'s model, and tells `lie`."""

    def __init__(self, tmp: Path, name: str, upstream: "Node", imitate: "Node", lie: str, honest_first: int = 0,
                 delay_ms: int = 0):
        args = [
            str(BIN_DIR / "tollgate-cheat-node"), "serve", "--upstream", upstream.root, "--imitate", imitate.root,
            "--lie", lie, "--honest-first", str(honest_first), "--key-file", str(tmp / f"{name}.key"),
            "--delay-ms", str(delay_ms),
        ]
        self.name = name
        self.proc = Proc(args, tmp / f"cheat-{name}.log")
        self.root = f"http://{self.proc.addr}"

    def info(self) -> dict:
        return http_json("GET", f"{self.root}/node/info")[1]

    def stop(self) -> None:
        self.proc.stop()


def derive_model(tmp: Path, name: str, *flags: str) -> Path:
    """An altered copy of SmolLM2 (skipped layers, noisy weights) for a cheating node."""
    out = tmp / f"{name}.gguf"
    subprocess.run([str(BIN_DIR / "tollgate-cheat-node"), "derive", "--from", str(MODEL), "--to", str(out), *flags],
                   check=True, capture_output=True, timeout=120)
    return out


class Gateway:
    """A `tollgate serve` process on a config written for the test."""

    def __init__(self, tmp: Path, config: dict, policies: dict[str, dict] | None = None, key_account: str | None = "acme", env: dict | None = None):
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
        self.env = env
        self.proc = Proc([str(BIN_DIR / "tollgate"), "serve", "--config", str(self.config_path)], tmp / "gateway.log", env=env)
        self.base = f"http://{self.proc.addr}"
        self.url = f"{self.base}/v1"

    @staticmethod
    def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN_DIR / "tollgate"), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
        )

    def invoices(self, *args: str) -> subprocess.CompletedProcess:
        """`tollgate invoices ARGS` on this gateway's config."""
        return self.cli("invoices", "--config", str(self.config_path), *args)

    def restart(self) -> None:
        """Starts the gateway again on the same config and data (after a stop or kill)."""
        self.proc = Proc([str(BIN_DIR / "tollgate"), "serve", "--config", str(self.config_path)], self.dir / "gateway.log", env=self.env)
        self.base = f"http://{self.proc.addr}"
        self.url = f"{self.base}/v1"

    def write_policy(self, name: str, doc: dict | str) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
        path = self.dir / "routing" / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)

    def status(self) -> dict:
        return http_json("GET", f"{self.base}/admin/status")[1]

    def get(self, path: str) -> dict:
        return http_json("GET", f"{self.base}{path}")[1]

    def post(self, path: str, body: dict) -> dict:
        return http_json("POST", f"{self.base}{path}", body)[1]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as r:
            return r.read().decode()

    def receipts(self) -> list[dict]:
        """Every receipt in the gateway's SQLite ledger, oldest first."""
        return [r for r, _, _ in self.ledger_rows()]

    def ledger_rows(self) -> list[tuple[dict, str, str | None]]:
        """(receipt, state, batch id) for every receipt in the ledger."""
        path = self.dir / "data" / "ledger.sqlite"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute("SELECT body, state, batch_id FROM receipts ORDER BY seq").fetchall()
        return [(json.loads(body), state, batch) for body, state, batch in rows]

    def batches(self) -> list[dict]:
        """Every batch (invoice) in the ledger, with its state."""
        path = self.dir / "data" / "ledger.sqlite"
        if not path.exists():
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM batches ORDER BY created_at_ms")]

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


REPO = Path(__file__).resolve().parents[2]

# anvil's well-known development accounts (public test keys, never funded elsewhere).
DEPLOYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
PROVIDER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
PROVIDER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """A real anvil chain (from the pinned npm package) with Tollgate's contracts deployed."""

    def __init__(self, tmp: Path, fund: dict[str, str] | None = None, args: list[str] | None = None, mint: dict[str, str] | None = None):
        self.port = free_port()
        self.rpc = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp / "anvil.log", "ab")
        self.p = subprocess.Popen(
            [str(REPO / "scripts/anvil"), "--port", str(self.port), "--silent", *(args or [])],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while self.call("eth_chainId") is None:
            if time.time() > deadline or self.p.poll() is not None:
                raise RuntimeError("anvil did not start")
            time.sleep(0.1)
        self.deployment = tmp / "data" / "chain.json"
        args = ["chain", "deploy", "--rpc-url", self.rpc, "--artifacts", str(REPO / "contracts/out"), "--out", str(self.deployment)]
        for address, amount in (fund or {}).items():
            args += ["--fund", f"{address}={amount}"]
        for address, amount in (mint or {}).items():
            args += ["--mint", f"{address}={amount}"]
        done = Gateway.cli(*args, env={"TOLLGATE_DEPLOYER_KEY": DEPLOYER_KEY})
        assert done.returncode == 0, done.stderr
        self.addresses = json.loads(done.stdout)

    def register_node(self, node, price_in: str, price_out: str, stake: str = "50") -> None:
        """Stakes `stake` from the provider account on `node`'s signing key, with the model hash it claims."""
        info = node.info()
        done = Gateway.cli(
            "chain", "register-node", "--rpc-url", self.rpc, "--deployment", str(self.deployment),
            "--signer", info["address"], "--endpoint", node.root, "--model-hash", "0x" + info["model_sha256"],
            "--price-in", price_in, "--price-out", price_out, "--region", "eu-west", "--stake", stake,
            env={"TOLLGATE_PROVIDER_KEY": PROVIDER_KEY},
        )
        assert done.returncode == 0, done.stderr

    def call(self, method: str, params: list | None = None):
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        try:
            return http_json("POST", self.rpc, body)[1].get("result")
        except OSError:
            return None

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(timeout=10)
        self.log.close()


def chain_section(anvil: "Anvil", rpc: str | None = None, **extra) -> dict:
    return {
        "rpc_url": rpc or anvil.rpc,
        "deployment": str(anvil.deployment),
        "batch_max_receipts": extra.pop("batch_max_receipts", 5),
        "batch_max_age_s": extra.pop("batch_max_age_s", 1),
        "rpc_timeout_s": extra.pop("rpc_timeout_s", 3),
        "escrow_refresh_s": extra.pop("escrow_refresh_s", 0.5),
        **extra,
    }


class RpcFaults:
    """A real HTTP JSON-RPC proxy in front of anvil that injects faults.

    `drop_send`: forward eth_sendRawTransaction to the chain, then answer 502,
    so the sender cannot know the transaction landed. `hang_send`: forward it,
    then never answer (the sender can be killed in that window).
    `error_rate`: answer that share of calls with HTTP 500 without forwarding
    (seeded, so a run is repeatable).
    `delay_s`: hold every answer that long.
    """

    def __init__(self, upstream: str):
        import http.server

        self.upstream = upstream
        self.drop_send = False
        self.hang_send = False
        self.error_rate = 0.0
        self.random = __import__("random").Random(7)
        self.delay_s = 0.0
        self.calls = 0
        self.sends_forwarded = 0
        self.faults = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.calls += 1
                if proxy.error_rate and proxy.random.random() < proxy.error_rate:
                    proxy.faults += 1
                    return self.answer(500, b'{"error":"injected fault"}')
                is_send = b"eth_sendRawTransaction" in body
                req = urllib.request.Request(upstream, data=body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = r.read()
                if is_send:
                    proxy.sends_forwarded += 1
                    if proxy.hang_send:
                        proxy.faults += 1
                        time.sleep(3600)
                    if proxy.drop_send:
                        proxy.faults += 1
                        return self.answer(502, b"bad gateway (injected)")
                time.sleep(proxy.delay_s)
                self.answer(200, answer)

            def answer(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's `postgresql`) on a free loopback port."""

    def __init__(self, tmp: Path):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        assert bins, "PostgreSQL's server binaries are missing: run `make db-deps`"
        bin_dir = bins[-1].parent
        # PostgreSQL refuses to run as root; as root the cluster belongs to
        # `postgres`, in a directory it can reach (pytest's own is root-only).
        user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="tollgate-pg-"))
        if user:
            shutil.chown(self.dir, user, user)
        data = self.dir / "data"
        subprocess.run([str(bin_dir / "initdb"), "-A", "trust", "-U", "tollgate", "-E", "UTF8", "--no-sync", "-D", str(data)],
                       check=True, capture_output=True, user=user)
        self.port = free_port()
        self.log = open(tmp / "postgres.log", "ab")
        self.p = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
                                   "-c", "listen_addresses=127.0.0.1"], stdout=self.log, stderr=self.log,
                                  stdin=subprocess.DEVNULL, user=user)
        self.url = f"postgresql://tollgate@127.0.0.1:{self.port}/postgres"
        deadline = time.time() + 30
        while subprocess.run(["psql", self.url, "-c", "SELECT 1"], capture_output=True).returncode != 0:
            if time.time() > deadline or self.p.poll() is not None:
                raise RuntimeError(f"postgres did not start; log:\n{(tmp / 'postgres.log').read_text()}")
            time.sleep(0.2)

    def query(self, sql: str) -> list[list[str]]:
        out = subprocess.run(["psql", self.url, "-At", "-F", "\t", "-c", sql], check=True, capture_output=True, text=True)
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A throwaway `redis-server` (Debian's `redis-server`) on a free loopback port, in memory only."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.log = open(tmp / "redis.log", "ab")
        self.p = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)],
                                  stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.time() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.time() > deadline or self.p.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.1)

    def time_s(self) -> float:
        """Redis's clock, which decides the rate-limit minute."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"TIME\r\n")
            reply = s.recv(128).decode().split("\r\n")
        return int(reply[2]) + int(reply[4]) / 1e6

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(timeout=10)
        self.log.close()
