"""The cluster as its nodes describe it: CLUSTER NODES parsed into NodeView
records, and the judgement whether one node's view is clean and the same
as the others'. Pure functions, no Redis calls (tests/redis_cluster.py
fetches the text)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Hashable, Sequence

SLOTS = 16384
Address = tuple[str, int]
# Flags of a node that is not settled yet: suspected down, still being met, no address.
UNSETTLED_FLAGS = frozenset({"fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: a node as one member of the cluster sees it."""

    id: str
    host: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: frozenset[int]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags

    @property
    def address(self) -> Address:
        return self.host, self.port


def parse_cluster_nodes(text: str) -> list[NodeView]:
    nodes = []
    for line in text.strip().splitlines():
        node_id, addr, flags, master, _ping, _pong, _epoch, _link, *slot_fields = line.split()
        host, port = addr.split("@")[0].rsplit(":", 1)
        slots: set[int] = set()
        for item in slot_fields:
            if item.startswith("["):  # "[slot->-id]" / "[slot-<-id]": an open migration
                continue
            first, _, last = item.partition("-")
            slots.update(range(int(first), int(last or first) + 1))
        nodes.append(NodeView(node_id, host, int(port), frozenset(flags.split(",")) - {"myself"},
                              None if master == "-" else master, frozenset(slots)))
    return nodes


def node_on(nodes: Sequence[NodeView], port: int) -> NodeView:
    for node in nodes:
        if node.port == port:
            return node
    raise LookupError(f"no cluster node on port {port}")


def is_clean(nodes: Sequence[NodeView], all_ports: Collection[int],
             live_ports: Collection[int]) -> bool:
    """Every node started is known; the live ones healthy, the dead ones FAIL."""
    if {node.port for node in nodes} != set(all_ports):
        return False
    return all(not node.flags & UNSETTLED_FLAGS and node.failed == (node.port not in live_ports)
               for node in nodes)


def summary(nodes: Sequence[NodeView]) -> Hashable:
    """What every node must agree on: slot owners, who replicates whom, who is
    dead (a dead node's role is left out: it no longer matters)."""
    return frozenset((node.id, True, node.slots) if node.failed else
                     (node.id, node.is_master, node.master_id, node.slots) for node in nodes)
