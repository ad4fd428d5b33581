"""The explorer as a person sees it: Debian's chromium, driven by Playwright, opens every
page of a real ``motus devnet up --preset fast`` (one validator, the fleet and its
spoofers running) and the test asserts what is on screen: hexagons on the map for the
cells with attestations, a payout on the vehicle page after an epoch, the tally bar
moving after a vote, a refused attestation showing its code, a failed transaction its
revert reason, search reaching each kind of page, live heads over the WebSocket.

Screenshots of every page go to ``build/screenshots/`` (``MOTUS_SCREENSHOTS`` overrides;
gitignored, not committed). A missing chromium fails the test with the command that
installs it (``make browser``): it is never skipped silently."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from devnet.spoofers import EXPECTED_CODE
from genesis.devnet import dev_accounts
from rpcclient.txsend import encode_call
from tests.node.test_devnet_fast import Devnet
from tests.procs import ROOT, motus, rpc
from vm.modules import addresses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = Path(os.environ.get("MOTUS_CHROMIUM", "/usr/bin/chromium"))
SHOTS = Path(os.environ.get("MOTUS_SCREENSHOTS", ROOT / "build" / "screenshots"))
UI_TIMEOUT_MS = 20_000  # one page's render under load (the node answers in milliseconds)
GOVERNANCE_ABI = json.loads((ROOT / "vm" / "abi" / "governance.json").read_text())


def wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet(tmp_path_factory.mktemp("explorer"))
    try:
        net.wait("RPC up", lambda: net.height() >= 1, 90)  # node start under load
        yield net
    finally:
        net.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium "
                    "(apt-get install chromium), which these tests drive")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM),
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield chromium
        finally:
            chromium.close()


class Explorer:
    """One browser tab on the devnet's explorer, with what went wrong in it recorded."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        SHOTS.mkdir(parents=True, exist_ok=True)

    def open(self, route: str) -> Any:
        """Go to ``#/route`` and wait until that page has rendered."""
        before = self.page.evaluate("document.body ? (document.body.dataset.rendered || '') : ''") \
            if self.page.url.startswith("http") else ""
        self.page.goto(f"{self.url}/#/{route}")
        self.page.wait_for_selector(f"body[data-ready='1']:not([data-rendered='{before}'])",
                                    state="attached")
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()


@pytest.fixture(scope="module")
def ex(devnet: Devnet, browser: Any) -> Iterator[Explorer]:
    tab = Explorer(browser, devnet.url)
    yield tab
    assert not [e for e in tab.errors if "WebSocket" not in e], tab.errors


@pytest.fixture(scope="module")
def proposal(devnet: Devnet) -> str:
    """Account 9 locks MOTUS and proposes a parameter change, without voting yet."""
    owner = str(devnet.key_file(9))
    devnet.cli("gov", "lock", "--amount", "2000", "--private-key-file", owner)
    _, proposed, _ = devnet.cli("gov", "propose", "param", "challenge_fraction_bps", "2000",
                                "--deposit", "1000", "--private-key-file", owner)
    return str(proposed["proposalId"])


def failed_tx(devnet: Devnet) -> str:
    """A vote on a proposal that does not exist, sent with a fixed gas so that it is mined
    and reverts (a wallet's estimate would have refused to send it)."""
    address, key = dev_accounts()[8]
    nonce = int(rpc(devnet.url, "eth_getTransactionCount", ["0x" + address.hex(), "pending"]), 16)
    tx = {"type": 2, "chainId": 7077, "nonce": nonce, "to": to_checksum_address(addresses.GOVERNANCE),
          "value": 0, "gas": 200_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9,
          "data": encode_call(GOVERNANCE_ABI, "vote", 999_999, 1)}
    raw = Account.sign_transaction(tx, key).raw_transaction
    return rpc(devnet.url, "eth_sendRawTransaction", ["0x" + raw.hex()])


def test_make_devnet_prints_the_explorer_address(devnet: Devnet) -> None:
    devnet.wait("the explorer line", lambda: f"explorer {devnet.url}/" in devnet.output(), 20)


def test_home_is_live_and_refusals_show_their_codes(devnet: Devnet, ex: Explorer) -> None:
    page = ex.open("")
    assert page.locator("#latest-blocks tbody tr").count() >= 1
    # the WebSocket feed: the live badge follows new heads, and the page refreshes itself
    page.locator("#live.on").wait_for()
    first = int(ex.text("#head"))
    wait("the head on the page to move", lambda: int(ex.text("#head")) > first, 20)
    # the fleet's spoofers are refused: each refusal is listed with its code
    row = page.locator("#refusals tr.refusal").first
    row.wait_for()
    # read in one go: the live page may re-render between two reads
    href, code = row.evaluate("r => [r.querySelector('a').getAttribute('href'), "
                              "r.querySelector('.code').textContent]")
    assert code in set(EXPECTED_CODE.values()) | {"replay", "too_frequent", "stale", "future"}
    ex.shot("home")
    page = ex.open(href.removeprefix("#/"))  # where the row's link leads
    page.wait_for_selector("#reject-code")
    assert ex.text("#reject-code") == code
    assert "rejected" in page.locator("main .badge").first.inner_text()
    ex.shot("attestation-refused")


def test_map_draws_hexagons_for_cells_with_attestations(devnet: Devnet, ex: Explorer) -> None:
    page = ex.open("map")
    cells = page.locator("#map polygon.cell")
    wait("hexagons on the map", lambda: cells.count() >= 1, 30)  # refreshed on each head
    coverage = rpc(devnet.url, "motus_explorerCoverage", [12])["cells"]
    drawn = {cells.nth(i).get_attribute("data-cell") for i in range(cells.count())}
    assert drawn <= {c["cell"] for c in coverage} and drawn
    # a hexagon: six corners, all resolution-7 (the chain's public cells)
    assert len(cells.first.get_attribute("points").split()) == 6
    assert all(c["resolution"] == 7 for c in coverage)
    box = wait("a hexagon's box", lambda: cells.first.bounding_box(), 10)
    assert box["width"] > 5 and box["height"] > 5
    # zoom and pan move the view
    view = page.locator("#map").get_attribute("viewBox")
    page.click("#zoom-in")
    zoomed = page.locator("#map").get_attribute("viewBox")
    assert float(zoomed.split()[2]) < float(view.split()[2])
    # the live page re-renders on each head: ask again if the map is being replaced
    mp = wait("the map's box", lambda: page.locator("#map").bounding_box(), 10)
    page.mouse.move(mp["x"] + 200, mp["y"] + 200)
    page.mouse.down()
    page.mouse.move(mp["x"] + 320, mp["y"] + 260, steps=5)
    page.mouse.up()
    assert page.locator("#map").get_attribute("viewBox").split()[:2] != zoomed.split()[:2]
    # a click shows the cell's counts
    busiest = max(coverage, key=lambda c: c["total"])
    page.locator(f"#map polygon[data-cell='{busiest['cell']}']").dispatch_event("click")
    assert int(ex.text("#cell-total")) >= 1
    assert busiest["cell"] in ex.text("#cellinfo")
    ex.shot("map")


def test_a_vote_moves_the_tally_bar(devnet: Devnet, ex: Explorer, proposal: str) -> None:
    page = ex.open("governance")
    yes = page.locator(f".tally[data-proposal='{proposal}'] .seg.yes")
    assert yes.get_attribute("data-pct") == "0"
    before = yes.bounding_box()["width"]
    devnet.cli("gov", "vote", proposal, "yes", "--private-key-file", str(devnet.key_file(9)))
    # the page refreshes on the next head: the yes segment grows, past the quorum mark
    wait("the yes share to move", lambda: float(yes.get_attribute("data-pct")) > 0, 20)
    wait("the yes bar to widen", lambda: yes.bounding_box()["width"] > before + 10, 10)
    turnout = page.locator(f"#proposal-{proposal} [data-turnout]").get_attribute("data-turnout")
    assert float(turnout) > 0
    assert page.locator("[data-chart='issuance'] polyline").count() == 1
    ex.shot("governance")


def test_a_payout_appears_on_the_vehicle_page_after_an_epoch(devnet: Devnet, ex: Explorer) -> None:
    page = ex.open("vehicle/1")
    assert "Fleet Sim" in ex.text("h1")
    page.locator("[data-chart='attestations'] rect.bar").first.wait_for()
    # the fast preset settles an epoch every 30 blocks: the page refreshes until it is paid
    wait("a paid epoch on the vehicle page",
         lambda: page.locator("#epochs tr.paid").count() >= 1, 90)
    paid = page.locator("#epochs tr.paid").first
    assert re.search(r"[1-9][\d,]*(\.\d+)? MOTUS", paid.locator(".reward").inner_text())
    bars = page.locator("[data-chart='rewards'] rect.bar")
    assert any(float(bars.nth(i).get_attribute("data-value")) > 0 for i in range(bars.count()))
    assert "MOTUS" in ex.text("#total-reward") and ex.text("#total-reward") != "0 MOTUS"
    ex.shot("vehicle")


def test_blocks_transactions_and_addresses(devnet: Devnet, ex: Explorer) -> None:
    # a block with attestations, and the fleet's setup block with its identity calls
    home = rpc(devnet.url, "motus_explorerHome")
    with_atts = next(b["number"] for b in home["blocks"] if b["attestations"])
    page = ex.open(f"block/{with_atts}")
    assert page.locator("#block-attestations tbody tr").count() >= 1
    assert f"Block #{with_atts}" in ex.text("h1")
    ex.shot("block")
    tx = home["transactions"][0]
    page = ex.open(f"tx/{tx['hash']}")
    assert f"{tx['toModule']}.{tx['method']}" in ex.text("main"), ex.text("main")
    assert page.locator("#call-args tbody tr").count() >= 1
    ex.shot("transaction")
    # a reverted call shows why
    failed = failed_tx(devnet)
    devnet.wait("the failed transaction mined",
                lambda: rpc(devnet.url, "eth_getTransactionReceipt", [failed]), 30)
    page = ex.open(f"tx/{failed}")
    assert "failed" in ex.text("main")
    wait("the revert reason", lambda: ex.text("#revert") not in ("", "…"), 20)
    assert "proposal" in ex.text("#revert").lower(), ex.text("#revert")
    ex.shot("transaction-reverted")
    owner = rpc(devnet.url, "motus_getVehicle", [1])["owner"]
    page = ex.open(f"address/{owner}")
    assert page.locator("a[href='#/vehicle/1']").count() == 1
    assert page.locator("#address-txs tbody tr").count() >= 1
    ex.shot("address")


def test_validators_show_the_signing_grid(devnet: Devnet, ex: Explorer) -> None:
    page = ex.open("validators")
    assert page.locator("#signing-grid .c.s").count() >= 10
    assert "active" in ex.text("main")
    ex.shot("validators")


def test_search_reaches_each_kind_of_page(devnet: Devnet, ex: Explorer) -> None:
    vehicle = rpc(devnet.url, "motus_getVehicle", [2])
    home = rpc(devnet.url, "motus_explorerHome")
    page = ex.open("")
    for query, heading in [("5", "Block #5"), (vehicle["owner"], "Address"),
                           ("v:2", "Vehicle 2"), ("vin:" + vehicle["vinHash"], "Vehicle 2"),
                           (home["blocks"][-1]["hash"], f"Block #{home['blocks'][-1]['number']}"),
                           (home["transactions"][0]["hash"], "Transaction")]:
        page.fill("#q", query)
        page.press("#q", "Enter")
        page.locator("main h1", has_text=heading).wait_for(timeout=2 * UI_TIMEOUT_MS)
    page.fill("#q", "no such thing")
    page.press("#q", "Enter")
    page.locator("main h1", has_text="Not found").wait_for()
    ex.shot("search-not-found")


def test_the_vehicle_page_names_a_light_client_check_that_passes(devnet: Devnet, ex: Explorer,
                                                                 tmp_path: Path) -> None:
    """What the page shows is not claimed as verified; it names the light-client commands
    that verify it, and they do (against the validators' signatures and proofs)."""
    page = ex.open("vehicle/1")
    commands = [c.inner_text() for c in page.locator("#verify code").all()]
    assert commands and commands[0].startswith("motus light vehicle 1 --owner 0x")
    light = ["--home", str(tmp_path)]
    done = motus("light", "init", "--rpc", devnet.url, "--genesis",
                 str(devnet.home / "genesis.json"), *light, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in commands:
        args = command.split()[1:]
        done = motus(*args, *light, check=False, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)


@pytest.mark.parametrize("method,params", [
    ("motus_explorerSearch", [123]),
    ("motus_explorerSearch", ["x" * 201]),
    ("motus_explorerCoverage", [0]),
    ("motus_explorerCoverage", [49]),
    ("motus_explorerValidators", [101]),
    ("motus_explorerVehicle", ["abc"]),
    ("motus_explorerVehicle", [1, 49]),
    ("motus_explorerBlock", ["nope"]),
    ("motus_explorerTx", ["0x12"]),
    ("motus_explorerAddress", ["0x12"]),
    ("motus_explorerAttestation", [None]),
])
def test_explorer_methods_refuse_bad_input(devnet: Devnet, method: str, params: list) -> None:
    with pytest.raises(RuntimeError) as err:
        rpc(devnet.url, method, params)
    assert err.value.args[0]["code"] == -32602, err.value.args[0]


def test_explorer_methods_answer_null_for_what_does_not_exist(devnet: Devnet) -> None:
    assert rpc(devnet.url, "motus_explorerBlock", ["0xffffff"]) is None
    assert rpc(devnet.url, "motus_explorerVehicle", [999_999]) is None
    assert rpc(devnet.url, "motus_explorerTx", ["0x" + "00" * 32]) is None
    assert rpc(devnet.url, "motus_explorerAttestation", ["0x" + "00" * 32]) is None
    assert rpc(devnet.url, "motus_explorerSearch", ["0x" + "00" * 32])["kind"] == "none"


def test_text_from_the_chain_is_shown_as_text(devnet: Devnet, ex: Explorer) -> None:
    """Anyone can mint a vehicle named with markup: the page shows it, never runs it."""
    hostile = "<img src=x onerror=\"document.title='owned'\">"
    _, minted, _ = devnet.cli("vehicle", "mint", "--make", hostile, "--model", "<b>Zoe</b>",
                              "--year", "2019", "--vin", "VF1AG000X12345678",
                              "--private-key-file", str(devnet.key_file(7)))
    page = ex.open(f"vehicle/{minted['vehicleId']}")
    assert hostile in ex.text("main h1") and "<b>Zoe</b>" in ex.text("main h1")
    assert page.locator("main img, main b:text('Zoe')").count() == 0
    assert page.title() == "Motus explorer"
    ex.shot("vehicle-hostile-name")
