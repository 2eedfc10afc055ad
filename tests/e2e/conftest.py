import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import CheatNode, Gateway, Node, Stage, Upstream  # noqa: E402


@pytest.fixture
def procs():
    """Collects processes started by a test and stops them all at its end."""
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()


@pytest.fixture
def start(tmp_path, procs):
    class Start:
        def upstream(self, name: str, **opts) -> Upstream:
            u = Upstream(tmp_path, name, **opts)
            procs.append(u)
            return u

        def node(self, name: str, **opts) -> Node:
            n = Node(tmp_path, name, **opts)
            procs.append(n)
            return n

        def stage(self, name: str, layers: str, **opts) -> Stage:
            s = Stage(tmp_path, name, layers, **opts)
            procs.append(s)
            return s

        def cheat(self, name: str, **opts) -> CheatNode:
            c = CheatNode(tmp_path, name, **opts)
            procs.append(c)
            return c

        def gateway(self, config: dict, **kw) -> Gateway:
            g = Gateway(tmp_path, config, **kw)
            procs.append(g)
            return g

    start = Start()
    start.tmp = tmp_path
    return start
