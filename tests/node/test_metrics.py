"""``GET /metrics`` of a real node: the families docs/metrics.md lists, values that mean
what they say, the process collectors, the committed-block log line, and a Grafana
dashboard (devnet/grafana-dashboard.json) that queries only metrics the node exports."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.procs import ROOT, NodeProcess, init_home, validator_address, write_genesis

pytestmark = [pytest.mark.timeout(120)]

DASHBOARD = ROOT / "devnet" / "grafana-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# Metric names in PromQL: our own and prometheus_client's standard collectors.
STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
QUERY_NAME = re.compile(r"\b((?:motus|process|python)_[a-z0-9_]+)\b")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def families(text: str) -> dict[str, str]:
    """``# TYPE`` lines: family name -> type (declared even before a labelled child exists)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def exported_names(text: str) -> set[str]:
    """Every series name a query may use: each sample's, and each family's by its type
    (a labelled family with no child yet has no samples)."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    for name, kind in families(text).items():
        # prometheus_client names a counter's family with its _total already
        suffixes = {"histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
        names.update(name + s for s in suffixes)
    return names


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def dashboard_queries(doc: dict) -> list[str]:
    exprs = []
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return exprs


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = init_home(tmp_path_factory.mktemp("metrics"), "metrics")
    with NodeProcess(home) as n:
        n.wait_height(4)
        yield n


@pytest.fixture(scope="module")
def text(node: NodeProcess) -> str:
    return scrape(node.url)


def test_dashboard_queries_only_exported_metrics(text: str) -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = dashboard_queries(doc)
    assert len(exprs) >= 30
    used = {name for expr in exprs for name in QUERY_NAME.findall(expr)}
    missing = sorted(used - exported_names(text))
    assert not missing, f"the dashboard queries metrics no node exports: {missing}"
    # and it covers each subsystem the docs list
    for prefix in ("motus_consensus_", "motus_p2p_", "motus_sync_", "motus_health_",
                   "motus_rpc_", "process_"):
        assert any(name.startswith(prefix) for name in used), prefix


def test_every_motus_metric_is_documented(text: str) -> None:
    doc = METRICS_DOC.read_text()
    undocumented = []
    for name in families(text):
        if not name.startswith("motus_"):
            continue
        if f"`{name}`" not in doc:
            undocumented.append(name)
    assert not undocumented, f"add to docs/metrics.md: {undocumented}"


def test_values_mean_what_they_say(node: NodeProcess, text: str) -> None:
    validator = validator_address(node.home)
    head = sample(text, "motus_head_height")
    assert head >= 4
    assert sample(text, "motus_consensus_height") >= head
    assert 0 <= sample(text, "motus_consensus_step") <= 3
    assert sample(text, "motus_consensus_validators") == 1
    assert sample(text, "motus_consensus_blocks_total", source="consensus") >= 4
    # block h carries the commit of h - 1: the single validator signed up to head - 1
    assert sample(text, "motus_consensus_validator_last_signed_height",
                  validator=validator) >= head - 1
    assert sample(text, "motus_consensus_validator_missed_blocks", validator=validator) == 0
    assert sample(text, "motus_consensus_missing_validators") == 0
    assert sample(text, "motus_consensus_block_rounds_count") >= 4
    assert sample(text, "motus_consensus_block_interval_seconds_count") >= 2
    assert sample(text, "motus_health_status", status="ok") == 1
    assert sample(text, "motus_health_status", status="stalled") == 0
    assert sample(text, "motus_p2p_peers") == 0
    assert sample(text, "motus_p2p_topic_published_bytes_total", topic="consensus") > 0
    assert sample(text, "motus_sync_syncing") == 0
    assert sample(text, "process_cpu_seconds_total") > 0  # the process collector is there
    assert sample(text, "process_resident_memory_bytes") > 10_000_000


def test_one_info_line_per_committed_block(node: NodeProcess) -> None:
    log = Path(node.log_path).read_text()
    lines = re.findall(r"^\S+ \S+ INFO  motus\.chain: committed block (\d+) 0x([0-9a-f]{12}) "
                       r"txs=(\d+) attestations=(\d+) round=(\d+) interval=\S+ took=\S+", log, re.M)
    heights = [int(h) for h, *_ in lines]
    assert heights[:4] == [1, 2, 3, 4], log[-2000:]
    assert len(heights) == len(set(heights))  # once each


@pytest.mark.slow
def test_absent_validator_shows_in_signing_and_missed_proposals(tmp_path) -> None:
    """Three validators (power 10, 10, 5), the third never started: the other two make
    blocks (20 of 25 is over 2/3), and their metrics name the absent one as missing from
    every commit and as the proposer of the rounds that failed."""
    from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of

    absent = "0x" + "cd" * 20
    homes = [init_home(tmp_path, f"v{i}") for i in range(2)]
    addresses = [validator_address(h) for h in homes]
    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, [(addresses[0], 10), (addresses[1], 10), (absent, 5)])
    nodes = [NodeProcess(h) for h in homes]
    for i, home in enumerate(homes):
        (home / "genesis.json").write_bytes(genesis.read_bytes())
        other = homes[1 - i]
        peer = peer_id_of(load_or_create_node_key(other / "keys" / "node.key"))
        address = node_multiaddr("127.0.0.1", nodes[1 - i].p2p_port, peer)
        config = (home / "config.toml").read_text()
        for old, new in (("bootstrap = []", f'bootstrap = ["{address}"]'),
                         # short rounds: each of the absent validator's heights costs one
                         ("timeout_propose_ms = 1000", "timeout_propose_ms = 400"),
                         ("timeout_delta_ms = 500", "timeout_delta_ms = 100")):
            config = config.replace(old, new)
        (home / "config.toml").write_text(config)
    try:
        for n in nodes:
            n.start()
        deadline = time.monotonic() + 60
        while True:  # until a height the absent validator should have proposed is done
            text = scrape(nodes[0].url)
            if (sample(text, "motus_head_height") >= 4
                    and f'proposer="{absent}"' in text) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        for n in nodes:
            n.stop()
    head = sample(text, "motus_head_height")
    assert sample(text, "motus_consensus_validators") == 3
    assert sample(text, "motus_consensus_missing_validators") == 1
    assert sample(text, "motus_consensus_missing_validators_power") == 5
    assert sample(text, "motus_consensus_validator_missed_blocks", validator=absent) >= head - 2
    for present in addresses:
        assert sample(text, "motus_consensus_validator_missed_blocks", validator=present) == 0
        assert sample(text, "motus_consensus_validator_last_signed_height",
                      validator=present) >= head - 1
    # the absent validator proposes about a fifth of the heights: each costs a round
    assert sample(text, "motus_consensus_missed_proposals_total", proposer=absent) >= 1
    assert sample(text, "motus_consensus_block_rounds_sum") >= 1
    assert sample(text, "motus_p2p_peers") == 1
    assert sample(text, "motus_p2p_topic_received_bytes_total", topic="consensus") > 0
    # py-libp2p logged here too (the first node dials the second before it listens): every
    # line of both logs is a timestamped record or an indented continuation of one
    for n in nodes:
        for line in Path(n.log_path).read_text().splitlines():
            assert STAMPED.match(line) or line.startswith("    "), line
