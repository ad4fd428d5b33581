// Motus explorer: a single page, no build step, no third-party code (docs/explorer.md).
// Every figure comes from this node's JSON-RPC (POST /) and its WebSocket (newHeads),
// one motus_explorer* call per page. Text from the chain (vehicle make and model,
// proposal descriptions...) is set with textContent only, never parsed as HTML.
"use strict";

const page = document.getElementById("page");
const liveBadge = document.getElementById("live");
const WEI = 10n ** 18n;
let rpcSeq = 0;

// --- JSON-RPC ----------------------------------------------------------------------

class RPCFailure extends Error {}

async function rpc(method, params = []) {
  const res = await fetch("/", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: ++rpcSeq, method, params }),
  });
  const doc = await res.json();
  if (doc.error) throw new RPCFailure(`${method}: ${doc.error.message}`);
  return doc.result;
}

// --- DOM helpers --------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
}

const short = (x) => (x && x.length > 18 ? `${x.slice(0, 10)}…${x.slice(-6)}` : x || "—");
const mono = (text, title) => h("span", { class: "mono", title: title || text }, text);
const badge = (text, cls) => h("span", { class: `badge ${cls || text}` }, text);
const link = (href, text, title) => h("a", { href, title: title || null }, text);
const blockLink = (n) => link(`#/block/${n}`, `#${n}`);
const txLink = (hash) => h("a", { href: `#/tx/${hash}`, class: "mono", title: hash }, short(hash));
const addrLink = (a, label) =>
  a ? h("a", { href: `#/address/${a}`, class: "mono", title: a }, label || short(a)) : "—";
const vehicleLink = (id) => link(`#/vehicle/${id}`, `vehicle ${id}`);

function motus(wei, digits = 4) {
  if (wei === null || wei === undefined) return "—";
  const v = BigInt(wei);
  const whole = v / WEI;
  const frac = (v % WEI).toString().padStart(18, "0").slice(0, digits).replace(/0+$/, "");
  return `${whole.toLocaleString("en-US")}${frac ? "." + frac : ""} MOTUS`;
}

function toMotus(wei) {
  return Number(BigInt(wei || 0) / 10n ** 14n) / 1e4;
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts * 1000);
  const ago = Math.max(0, Math.round(Date.now() / 1000 - ts));
  const rel = ago < 120 ? `${ago} s ago` : ago < 7200 ? `${Math.round(ago / 60)} min ago` : d.toISOString();
  return h("span", { title: d.toISOString() }, rel);
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none"))));
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

const card = (title, ...body) => h("section", { class: "card" }, title ? h("h2", {}, title) : null, body);

// --- charts (SVG) ---------------------------------------------------------------------

function barChart(points, opts) {
  // points: [{x: label, y: number, cls?}]
  const W = 600, H = 170, L = 44, B = 22, T = 10;
  const max = Math.max(1e-9, ...points.map((p) => p.y || 0), ...(opts.line || []).map((q) => q.y || 0));
  const bw = (W - L - 8) / Math.max(1, points.length);
  const chart = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    role: "img", "aria-label": opts.label, "data-chart": opts.id });
  for (const frac of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - frac);
    chart.append(s("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#e3e8ee" }),
      s("text", { x: 2, y: y + 3 }, fmtNum(max * frac)));
  }
  points.forEach((p, i) => {
    const hgt = ((p.y || 0) / max) * (H - T - B);
    const x = L + i * bw + 1;
    chart.append(s("rect", { class: `bar ${p.cls || ""}`, x, y: H - B - hgt, width: Math.max(1, bw - 2),
      height: hgt, fill: p.color || opts.color || "#0e7c66", "data-x": p.x, "data-value": p.y },
      s("title", {}, `${opts.xname} ${p.x}: ${p.label ?? fmtNum(p.y)}`)));
    if (points.length <= 24 || i % Math.ceil(points.length / 24) === 0)
      chart.append(s("text", { x: x + bw / 2 - 4, y: H - 6 }, String(p.x)));
  });
  if (opts.line) {
    const pts = opts.line.map((q, i) => [L + i * bw + bw / 2, H - B - (q.y / max) * (H - T - B)]);
    chart.append(s("polyline", { points: pts.map((q) => q.join(",")).join(" "), fill: "none", stroke: "#d1495b",
      "stroke-width": 2, "data-series": "scheduled" }));
    pts.forEach(([x, y], i) => chart.append(s("circle", { cx: x, cy: y, r: 3, fill: "#d1495b" },
      s("title", {}, `${opts.xname} ${points[i] ? points[i].x : i}: scheduled ${fmtNum(opts.line[i].y)}`))));
  }
  return chart;
}

function fmtNum(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

// --- pages ------------------------------------------------------------------------------

async function homePage() {
  const d = await rpc("motus_explorerHome");
  const ep = d.epoch || {};
  return [
    h("h1", {}, `Chain ${d.chainId}`),
    h("div", { class: "stats" },
      stat("Height", h("span", { id: "head" }, d.head)), stat("Epoch", ep.epoch ?? "—"),
      stat("Epoch ends at", ep.endHeight ?? "—"), stat("Epoch pool", motus(ep.pool, 0)),
      stat("Vehicles with data", ep.vehiclesWithData ?? 0), stat("Validators", d.validators),
      stat("Vehicles", d.vehicles)),
    h("div", { class: "grid" },
      card("Latest blocks", table(["Block", "Age", "Proposer", "Txs", "Attestations"],
        d.blocks.map((b) => h("tr", { "data-block": b.number }, h("td", {}, blockLink(b.number)),
          h("td", {}, when(b.timestamp)), h("td", {}, addrLink(b.proposer)), h("td", {}, b.transactions),
          h("td", {}, b.attestations))), { id: "latest-blocks" })),
      card("Latest transactions", txTable(d.transactions, "latest-txs")),
      card("Attestations refused by this node",
        h("p", { class: "muted" }, "Refusals never reach the chain: this is the node's own record, newest first."),
        table(["Attestation", "Code", "Why"], d.refusals.map((r) =>
          h("tr", { class: "refusal" }, h("td", {}, h("a", { href: `#/attestation/${r.id}`, class: "mono" }, short(r.id))),
            h("td", { class: "code" }, r.code), h("td", { class: "muted" }, r.reason))), { id: "refusals" }),
        h("h2", {}, "Refusals by code"),
        table(["Code", "Count"], Object.entries(d.rejectCounts).filter(([, n]) => n > 0)
          .map(([c, n]) => h("tr", {}, h("td", { class: "code" }, c), h("td", {}, n))))),
      card("Coverage", h("p", {}, "Where vehicles sent accepted data, by public H3 cell. ",
        link("#/map", "Open the coverage map →")))),
  ];
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("b", {}, value), h("span", {}, label));
}

function txTable(txs, id) {
  return table(["Tx", "Block", "From", "To", "Call", "Value"], txs.map((t) =>
    h("tr", {}, h("td", {}, txLink(t.hash)), h("td", {}, blockLink(t.blockNumber)), h("td", {}, addrLink(t.from)),
      h("td", {}, t.to ? addrLink(t.to, t.toModule || null) : "create"), h("td", {}, t.method || ""),
      h("td", {}, motus(t.value)),
      t.status === 0 ? h("td", {}, badge("failed", "bad")) : null)), { id });
}

async function blockPage(ref) {
  const param = /^\d+$/.test(ref) ? "0x" + Number(ref).toString(16) : ref;
  const b = await rpc("motus_explorerBlock", [param]);
  if (!b) return notFound(`block ${ref}`);
  return [
    h("h1", {}, `Block #${b.number}`),
    h("p", {}, b.number > 0 ? link(`#/block/${b.number - 1}`, "← previous") : null, " ",
      b.number < b.head ? link(`#/block/${b.number + 1}`, "next →") : null),
    card(null, kv([["Hash", mono(b.hash)], ["Parent", link(`#/block/${b.parentHash}`, short(b.parentHash))],
      ["Time", when(b.timestamp)], ["Proposer", addrLink(b.proposer)],
      ["Committed in round", b.round ?? "—"],
      ["Signed by", h("span", {}, `${b.signers.length} validators: `, b.signers.map((a) => [addrLink(a), " "]))],
      ["Gas used", `${b.gasUsed} of ${b.gasLimit}`], ["Base fee", `${b.baseFeePerGas} wei`],
      ["State root", mono(b.stateRoot)]])),
    card(`Transactions (${b.txs.length})`, txTable(b.txs, "block-txs")),
    card(`Attestations (${b.attestationList.length})`,
      h("p", { class: "muted" }, "A block carries only accepted attestations; a refused one is answered with its reject code at submission (see its page)."),
      table(["Attestation", "Vehicle", "Device", "Seq", "Cell", "Time", "Challenge"],
        b.attestationList.map((a) => h("tr", {}, h("td", {}, h("a", { href: `#/attestation/${a.id}`, class: "mono" }, short(a.id))),
          h("td", {}, vehicleLink(a.vehicleId)), h("td", {}, addrLink(a.device)), h("td", {}, a.seq),
          h("td", {}, link(`#/map/${a.cell.replace(/^0x/, "")}`, a.cell.replace(/^0x/, ""))),
          h("td", {}, when(a.timestampS)), h("td", {}, a.challenge !== "0x" ? badge("answered", "ok") : ""))), { id: "block-attestations" })),
    card(`Evidence (${b.evidenceList.length})`, evidenceTable(b.evidenceList)),
    card(`Events (${b.events.length})`, h("p", { class: "muted" }, "Logs of the block's epoch work (rewards, governance), outside any transaction."),
      table(["Module", "Event", "Arguments"], b.events.map((e) => h("tr", {},
        h("td", {}, e.decoded ? e.decoded.module : addrLink(e.address)), h("td", {}, e.decoded ? e.decoded.event : mono(e.topics[0] || "")),
        h("td", {}, e.decoded ? args(e.decoded.args) : mono(short(e.data))))))),
  ];
}

function evidenceTable(list) {
  return table(["Validator", "Height", "Round", "Vote type", "Block A", "Block B", "Committed in"], list.map((e) =>
    h("tr", {}, h("td", {}, addrLink(e.validator)), h("td", {}, e.height), h("td", {}, e.round), h("td", {}, e.type === 2 ? "precommit" : "prevote"),
      h("td", {}, mono(short(e.blockA))), h("td", {}, mono(short(e.blockB))), h("td", {}, e.committedAt ? blockLink(e.committedAt) : "—"))));
}

function args(list) {
  return h("span", {}, list.map((a, i) => [i ? ", " : "", h("span", { class: "muted" }, `${a.name}=`), fmtArg(a.value)]));
}

function fmtArg(v) {
  if (Array.isArray(v)) return `[${v.map((x) => (typeof x === "string" ? short(x) : JSON.stringify(x))).join(", ")}]`;
  if (typeof v === "string" && /^0x[0-9a-f]{40}$/i.test(v)) return addrLink(v);
  if (typeof v === "string" && v.length > 20) return mono(short(v), v);
  return String(v);
}

async function txPage(hash) {
  const d = await rpc("motus_explorerTx", [hash]);
  if (!d) return notFound(`transaction ${hash}`);
  const t = d.transaction, r = d.receipt;
  const ok = r ? r.status === "0x1" : null;
  const revert = h("span", { id: "revert", class: "code" }, "…");
  const out = [
    h("h1", {}, "Transaction"),
    card(null, kv([["Hash", mono(t.hash)],
      ["Status", r ? badge(ok ? "success" : "failed", ok ? "ok" : "bad") : badge("pending", "voting")],
      ["Block", t.blockNumber ? blockLink(parseInt(t.blockNumber, 16)) : "pending"],
      ["From", addrLink(t.from)], ["To", t.to ? addrLink(t.to, d.toModule ? `${d.toModule} module` : null) : "contract creation"],
      ["Value", motus(BigInt(t.value).toString())], ["Nonce", parseInt(t.nonce, 16)],
      r && ["Gas used", parseInt(r.gasUsed, 16)],
      r && ["Fee", motus((BigInt(r.gasUsed) * BigInt(r.effectiveGasPrice)).toString(), 8)],
      !ok && r && ["Revert reason", revert]])),
  ];
  if (d.call) {
    out.push(card(`Call: ${d.call.module}.${d.call.function || d.call.selector}`,
      table(["Argument", "Type", "Value"], d.call.args.map((a) => h("tr", {}, h("td", {}, a.name), h("td", { class: "muted" }, a.type),
        h("td", {}, fmtArg(a.value)))), { id: "call-args" })));
  } else if (t.input && t.input !== "0x") {
    out.push(card("Input", mono(short(t.input), t.input)));
  }
  out.push(card(`Logs (${d.logs.length})`, table(["#", "Address", "Event", "Arguments"], d.logs.map((l) =>
    h("tr", {}, h("td", {}, parseInt(l.logIndex, 16)), h("td", {}, addrLink(l.address)),
      h("td", {}, l.decoded ? `${l.decoded.module}.${l.decoded.event}` : mono(short(l.topics[0] || ""))),
      h("td", {}, l.decoded ? args(l.decoded.args) : mono(short(l.data))))))));
  if (r && !ok) {
    rpc("debug_traceTransaction", [hash, { tracer: "callTracer", tracerConfig: { onlyTopCall: true } }])
      // the element itself, not a lookup by id: the answer may come after the reader
      // has moved to another page (or before this one is attached)
      .then((tr) => { revert.textContent = tr.revertReason || tr.error || "reverted"; })
      .catch(() => { revert.textContent = "unavailable (tracing disabled on this node)"; });
  }
  return out;
}

async function addressPage(addr) {
  const d = await rpc("motus_explorerAddress", [addr]);
  return [
    h("h1", {}, d.module ? `System module: ${d.module}` : "Address"),
    card(null, kv([["Address", mono(d.address)], ["Balance", h("span", { id: "balance" }, motus(d.balance))],
      ["Nonce", d.nonce], ["Contract", d.isContract ? "yes" : "no"],
      ["Locked in governance", motus(d.locked)], ["Voting power", motus(d.votingPower)],
      BigInt(d.pendingUnlock) > 0n && ["Unlocking", `${motus(d.pendingUnlock)} at block ${d.releaseBlock}`]])),
    card(`Vehicles (${d.vehicles.length})`, table(["Vehicle", "Make", "Model", "Year", "Device"], d.vehicles.map((v) =>
      h("tr", {}, h("td", {}, vehicleLink(v.id)), h("td", {}, v.make), h("td", {}, v.model), h("td", {}, v.year),
        h("td", {}, v.device ? addrLink(v.device) : "unpaired"))))),
    card(`Votes (${d.votes.length})`, table(["Proposal", "Vote", "Weight"], d.votes.map((v) =>
      h("tr", {}, h("td", {}, link(`#/governance/${v.proposal}`, `#${v.proposal}`)), h("td", {}, badge(v.option, v.option)),
        h("td", {}, motus(v.weight)))))),
    card("Transactions (newest first)", txTable(d.transactions, "address-txs")),
  ];
}

async function vehiclePage(id) {
  const d = await rpc("motus_explorerVehicle", [Number(id), 24]);
  if (!d) return notFound(`vehicle ${id}`);
  const now = Date.now() / 1000;
  const settled = d.epochs.filter((e) => e.settled);
  const lastPaid = settled.filter((e) => e.reward && BigInt(e.reward) > 0n).map((e) => e.epoch).pop();
  return [
    h("h1", {}, `Vehicle ${d.id}: `, `${d.make} ${d.model} (${d.year})`),
    card(null, kv([["Owner", addrLink(d.owner)], ["VIN hash", mono(d.vinHash)],
      ["Paired device", d.device ? addrLink(d.device.address) : "none"],
      d.device && ["Device token", h("span", {}, `#${d.device.tokenId} by manufacturer `, addrLink(d.device.manufacturer))],
      ["Streak", `${d.streak.count} qualifying epochs in a row (level ${d.streak.level})`],
      ["Earned (shown epochs)", h("b", { id: "total-reward" }, motus(d.totalReward))],
      ["Source", h("span", { class: "muted" }, `this node's state at block ${d.blockNumber}: shown, not verified by this page`)],
      ["Verify it yourself", h("span", { id: "verify" }, "with the light client, which checks the validators' signatures and the Merkle proofs: ",
        h("code", {}, `motus light vehicle ${d.id} --owner ${d.owner} --rpc ${location.origin}`),
        lastPaid !== undefined ? [" and ", h("code", {}, `motus light reward ${d.id} ${lastPaid} --rpc ${location.origin}`)] : null,
        h("span", { class: "muted" }, " (after motus light init, docs/light.md)"))]])),
    h("div", { class: "grid" },
      card("Accepted attestations per epoch", barChart(d.epochs.map((e) => ({ x: e.epoch, y: e.accepted,
        color: e.settled ? "#0e7c66" : "#7fc4b4" })), { id: "attestations", label: "accepted attestations per epoch", xname: "epoch" })),
      card("Rewards per epoch", barChart(settled.map((e) => ({ x: e.epoch, y: toMotus(e.reward),
        label: `${motus(e.reward)}, ${e.points ?? 0} points` })), { id: "rewards", label: "rewards per epoch", xname: "epoch", color: "#d98c1f" }))),
    card("Per epoch", table(["Epoch", "Accepted", "Moving", "Challenge", "Points", "Reward"], d.epochs.slice().reverse().map((e) =>
      h("tr", { class: e.reward && BigInt(e.reward) > 0n ? "paid" : "", "data-epoch": e.epoch },
        h("td", {}, e.epoch, e.settled ? "" : " (running)"), h("td", {}, e.accepted), h("td", {}, e.moving),
        h("td", {}, e.challenged ? badge(e.challengePassed ? "passed" : "open/failed", e.challengePassed ? "ok" : "voting") : ""),
        h("td", {}, e.points ?? "—"), h("td", { class: "reward" }, e.settled ? motus(e.reward || "0") : "—"))), { id: "epochs" })),
    card(`Data permissions (${d.permissions.length})`, table(["Grantee", "Permissions", "Expires", "State"], d.permissions.map((p) =>
      h("tr", {}, h("td", {}, addrLink(p.grantee)), h("td", {}, p.bitNames.join(", ")),
        h("td", {}, new Date(Number(p.expiry) * 1000).toISOString()),
        h("td", {}, Number(p.expiry) > now && p.active ? badge("active", "ok") : badge("expired", "bad")))))),
  ];
}

async function attestationPage(id) {
  const d = await rpc("motus_explorerAttestation", [id]);
  if (!d) return notFound(`attestation ${id} (this node never saw it, or has forgotten its refusal)`);
  const a = d.attestation;
  return [
    h("h1", {}, "Attestation"),
    card(null, kv([["Id", mono(d.id)], ["Status", badge(d.status, d.status === "included" ? "ok" : d.status === "rejected" ? "bad" : "voting")],
      d.code && ["Reject code", h("span", { class: "code", id: "reject-code" }, d.code)],
      d.reason && ["Why", d.reason],
      d.height && ["Block", blockLink(d.height)],
      a && ["Vehicle", vehicleLink(a.vehicleId)], a && ["Device", addrLink(a.device)],
      a && ["Cell", link(`#/map/${a.cell.replace(/^0x/, "")}`, a.cell.replace(/^0x/, ""))],
      a && ["Seq", a.seq], a && ["Time", when(a.timestampS)], a && ["Odometer", `${a.odometerHm / 10} km`],
      a && ["Payload commitment", mono(a.commitment)]])),
  ];
}

function tallyBar(p, g) {
  const locked = BigInt(p.lockedAtTally || g.totalLocked || "0");
  const pct = (v) => (locked > 0n ? Number((BigInt(v) * 10000n) / locked) / 100 : 0);
  const seg = (k) => h("div", { class: `seg ${k}`, style: null, "data-pct": pct(p.votes[k]), title: `${k}: ${motus(p.votes[k], 0)}` });
  const bar = h("div", { class: "tally", "data-proposal": p.id, role: "img",
    "aria-label": `votes on proposal ${p.id}` }, ["yes", "no", "abstain", "veto"].map(seg),
    h("div", { class: "marker", title: `quorum ${g.quorumBps / 100}% of locked` }));
  // widths set through the CSSOM: the CSP forbids inline style attributes
  bar.querySelectorAll(".seg").forEach((el) => { el.style.width = `${Math.min(100, Number(el.dataset.pct))}%`; });
  bar.querySelector(".marker").style.left = `${g.quorumBps / 100}%`;
  const yes = BigInt(p.votes.yes), no = BigInt(p.votes.no), veto = BigInt(p.votes.veto), abst = BigInt(p.votes.abstain);
  const voted = yes + no + veto + abst, decisive = yes + no + veto;
  const share = (a, b) => (b > 0n ? (Number((a * 10000n) / b) / 100).toFixed(2) : "0.00");
  const threshold = p.class === "critical" ? g.criticalThresholdBps : g.thresholdBps;
  return h("div", {},
    bar,
    h("div", { class: "legend" },
      ["yes", "no", "abstain", "veto"].map((k) => h("span", {}, h("i", { class: `sw-${k}` }), `${k} ${motus(p.votes[k], 0)}`)),
      h("span", { "data-turnout": share(voted, locked) }, `turnout ${share(voted, locked)}% (quorum ${g.quorumBps / 100}%)`),
      h("span", {}, `yes ${share(yes, decisive)}% of non-abstain (needs ${threshold / 100}%)`),
      h("span", {}, `veto ${share(veto, voted)}% (burns above ${g.vetoBps / 100}%)`)));
}

async function governancePage(focus) {
  const g = await rpc("motus_explorerGovernance");
  const issuance = g.issuance;
  return [
    h("h1", {}, "Governance"),
    h("div", { class: "stats" }, stat("Locked MOTUS", motus(g.totalLocked, 0)), stat("Quorum", `${g.quorumBps / 100}%`),
      stat("Threshold", `${g.thresholdBps / 100}% / critical ${g.criticalThresholdBps / 100}%`), stat("Veto", `${g.vetoBps / 100}%`),
      stat("Epoch issuance", motus(g.params.epoch_issuance, 0)), stat("Decay", `${g.decayBps / 100}% every ${g.decayPeriodEpochs} epochs`)),
    card(`Proposals (${g.proposals.length})`, h("div", { id: "proposals" }, g.proposals.length ? g.proposals.map((p) =>
      h("div", { class: `proposal${String(p.id) === focus ? " flash" : ""}`, id: `proposal-${p.id}` },
        h("h2", {}, `#${p.id} `, badge(p.status), " ", p.kind === "param" ? `set ${p.change.param} = ${p.change.value}` : `${p.kind} ${JSON.stringify(p.change)}`),
        h("p", { class: "muted" }, p.description || "", ` Proposed by `, addrLink(p.proposer), `; voting ends at block ${p.votingEndBlock}`,
          p.effectiveAt ? `; takes effect at block ${p.effectiveAt}` : "", p.executedAt ? `; executed at block ${p.executedAt}` : ""),
        tallyBar(p, g))) : h("p", { class: "muted" }, "No proposals yet."))),
    h("div", { class: "grid" },
      card("Issuance per epoch", h("p", { class: "muted" }, "Bars: minted; line: the schedule with its decay."),
        barChart(issuance.map((e) => ({ x: e.epoch, y: e.minted === null ? 0 : toMotus(e.minted), label: e.minted === null ? "running" : motus(e.minted) })),
          { id: "issuance", label: "issuance per epoch", xname: "epoch", line: issuance.map((e) => ({ y: toMotus(e.scheduled) })) })),
      card(`Issuance schedule: ${g.decayBps / 100}% less every ${g.decayPeriodEpochs} epochs`,
        h("p", { class: "muted" }, "The pool of each decay period, as the parameters stand now (MOTUS per epoch)."),
        barChart(g.schedule.map((e) => ({ x: e.epoch, y: toMotus(e.pool), label: motus(e.pool) })),
          { id: "schedule", label: "issuance schedule", xname: "from epoch", color: "#d1495b" })),
      card("Parameter history", table(["Parameter", "Value", "Proposal", "Executed at"], g.history.map((x) =>
        h("tr", {}, h("td", {}, x.param), h("td", {}, x.value), h("td", {}, `#${x.proposal}`), h("td", {}, blockLink(x.executedAt))))))),
    card("Parameters now", table(["Name", "Value"], Object.entries(g.params).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: "mono" }, v))))),
  ];
}

async function validatorsPage() {
  const d = await rpc("motus_explorerValidators", [50]);
  const total = d.validators.reduce((a, v) => a + (v.jailed ? 0 : v.power), 0);
  const heights = d.grid.map((g) => g.height).reverse();
  const byHeight = new Map(d.grid.map((g) => [g.height, g]));
  const grid = h("div", { class: "sgrid", id: "signing-grid" });
  grid.style.gridTemplateColumns = `150px repeat(${heights.length}, 12px)`;
  for (const v of d.validators) {
    grid.append(h("span", { class: "mono" }, short(v.address)));
    for (const ht of heights) {
      const g = byHeight.get(ht);
      const signed = g.signed.includes(v.address);
      grid.append(h("span", { class: `c${signed ? " s" : ""}${g.proposer === v.address ? " p" : ""}`,
        title: `block ${ht}: ${signed ? "signed" : "missing"}${g.proposer === v.address ? ", proposer" : ""}` }));
    }
  }
  return [
    h("h1", {}, "Validators"),
    card(null, table(["Validator", "Power", "Share", "State", "Signed (last 50)"], d.validators.map((v) =>
      h("tr", {}, h("td", {}, addrLink(v.address, v.address)), h("td", {}, v.power),
        h("td", {}, total ? `${((100 * (v.jailed ? 0 : v.power)) / total).toFixed(1)}%` : "—"),
        h("td", {}, v.jailed ? badge("jailed") : v.power > 0 ? badge("active", "ok") : badge("removed", "bad")),
        h("td", {}, `${d.grid.filter((g) => g.signed.includes(v.address)).length}/${d.grid.length}`))))),
    card(`Signing of blocks ${heights[0]}–${heights[heights.length - 1]}`,
      h("p", { class: "muted" }, "Green: the validator's precommit is in the block's commit; outlined: it proposed the block."), grid),
    card(`Evidence in these blocks (${d.evidence.length})`, evidenceTable(d.evidence)),
  ];
}

// --- the coverage map -----------------------------------------------------------------

const RAMP = ["#fff3b0", "#ffd166", "#f8961e", "#e85d04", "#b5179e", "#560bad"];
const mapState = { view: null, epochs: 12, by: "total", selected: null };

function project(lat, lng) {
  // Web Mercator, in units of 1e6 per world width
  const sin = Math.sin((lat * Math.PI) / 180);
  return [((lng + 180) / 360) * 1e6, (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * 1e6];
}

async function mapPage(focusCell) {
  if (focusCell) mapState.selected = focusCell;
  const d = await rpc("motus_explorerCoverage", [mapState.epochs]);
  const cells = d.cells;
  const value = (c) => (mapState.by === "total" ? c.total : c.current);
  const max = Math.max(1, ...cells.map(value));
  const color = (n) => (n <= 0 ? "#cfd8dc" : RAMP[Math.min(RAMP.length - 1, Math.floor((Math.log1p(n) / Math.log1p(max)) * (RAMP.length - 1e-9)))]);
  const svgEl = s("svg", { id: "map", role: "img", "aria-label": "coverage map of public H3 cells" });
  const world = s("g", {});
  svgEl.append(world);
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  const polys = cells.map((c) => {
    const pts = c.boundary.map(([lat, lng]) => project(lat, lng));
    for (const [x, y] of pts) { minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y); }
    const poly = s("polygon", { class: `cell${c.cell === mapState.selected ? " sel" : ""}`, points: pts.map((p) => p.join(",")).join(" "),
      fill: color(value(c)), "data-cell": c.cell, "data-total": c.total, "data-current": c.current,
      onclick: () => showCell(c) }, s("title", {}, `${c.cell}: ${c.total} accepted attestations`));
    return poly;
  });
  if (!cells.length) { minX = 0; maxX = 1e6; minY = 0; maxY = 1e6; }
  // a graticule for orientation (no tiles: nothing leaves this node)
  const spanDeg = Math.max(0.02, ((maxX - minX) / 1e6) * 360 * 4);
  const step = Math.pow(10, Math.floor(Math.log10(spanDeg / 4)));
  const [lng0, lat0] = unproject((minX + maxX) / 2, (minY + maxY) / 2);
  for (let k = -40; k <= 40; k++) {
    const lng = Math.round(lng0 / step) * step + k * step, lat = Math.round(lat0 / step) * step + k * step;
    const [x] = project(lat0, lng); const [, y] = project(lat, lng0);
    world.append(s("line", { class: "grat", x1: x, x2: x, y1: minY - 2e5, y2: maxY + 2e5 }),
      s("line", { class: "grat", y1: y, y2: y, x1: minX - 2e5, x2: maxX + 2e5 }));
  }
  world.append(...polys);
  const pad = Math.max(maxX - minX, maxY - minY) * 0.15 + 20;
  // fit once; again when the first cells arrive on a map that was fitted empty
  if (!mapState.view || (mapState.fittedEmpty && cells.length)) {
    mapState.view = { x: minX - pad, y: minY - pad, w: maxX - minX + 2 * pad, h: maxY - minY + 2 * pad };
    mapState.fittedEmpty = !cells.length;
  }
  const apply = () => svgEl.setAttribute("viewBox", `${mapState.view.x} ${mapState.view.y} ${mapState.view.w} ${mapState.view.h}`);
  apply();
  const zoom = (f, cx, cy) => {
    const v = mapState.view;
    cx = cx ?? v.x + v.w / 2; cy = cy ?? v.y + v.h / 2;
    v.x = cx - (cx - v.x) * f; v.y = cy - (cy - v.y) * f; v.w *= f; v.h *= f; apply();
  };
  const toWorld = (ev) => {
    const r = svgEl.getBoundingClientRect(), v = mapState.view;
    const k = Math.max(v.w / r.width, v.h / r.height);
    return [v.x + (ev.clientX - r.left) * k - (r.width * k - v.w) / 2, v.y + (ev.clientY - r.top) * k - (r.height * k - v.h) / 2];
  };
  svgEl.addEventListener("wheel", (ev) => { ev.preventDefault(); zoom(ev.deltaY > 0 ? 1.25 : 0.8, ...toWorld(ev)); }, { passive: false });
  let drag = null;
  svgEl.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, moved: false }; holding = true; });
  svgEl.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const r = svgEl.getBoundingClientRect(), v = mapState.view, k = Math.max(v.w / r.width, v.h / r.height);
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!drag.moved && Math.hypot(dx, dy) < 3) return;
    drag.moved = true; svgEl.classList.add("dragging");
    v.x -= dx * k; v.y -= dy * k; drag.x = ev.clientX; drag.y = ev.clientY; apply();
  });
  const end = () => { drag = null; holding = false; svgEl.classList.remove("dragging"); };
  svgEl.addEventListener("pointerup", end); svgEl.addEventListener("pointerleave", end);
  const info = h("div", { class: "cellinfo", id: "cellinfo" }, h("span", { class: "muted" }, "Click a cell for its counts."));
  function showCell(c) {
    mapState.selected = c.cell;
    world.querySelectorAll(".cell.sel").forEach((el) => el.classList.remove("sel"));
    const el = world.querySelector(`[data-cell="${c.cell}"]`); if (el) el.classList.add("sel");
    info.replaceChildren(h("b", {}, `Cell ${c.cell}`), h("span", { class: "muted" }, ` (H3 resolution ${c.resolution})`),
      kv([["Accepted attestations", h("span", { id: "cell-total" }, c.total)], ["In the running epoch", c.current]]),
      table(["Epoch", "Accepted"], Object.entries(c.perEpoch).reverse().map(([e, n]) => h("tr", {}, h("td", {}, e), h("td", {}, n)))));
  }
  const selected = cells.find((c) => c.cell === mapState.selected);
  if (selected) showCell(selected);
  const legendMax = max;
  const select = h("select", { id: "epochs", onchange: (ev) => { mapState.epochs = Number(ev.target.value); render(); } },
    [1, 6, 12, 24, 48].map((n) => h("option", { value: n, selected: n === mapState.epochs }, n === 1 ? "running epoch" : `last ${n} epochs`)));
  const by = h("select", { id: "colour-by", onchange: (ev) => { mapState.by = ev.target.value; render(); } },
    h("option", { value: "total", selected: mapState.by === "total" }, "colour: all shown epochs"),
    h("option", { value: "current", selected: mapState.by === "current" }, "colour: running epoch"));
  return [
    h("h1", {}, "Coverage"),
    h("p", { class: "muted" }, `Public H3 cells (resolution ${d.resolution}) with accepted attestations in epochs ${d.fromEpoch}–${d.toEpoch}: `,
      h("b", { id: "cell-count" }, cells.length), " cells. Only what the chain publishes; no position finer than its cells. ",
      d.truncated ? "Only the busiest cells are drawn." : ""),
    h("p", {}, select, " ", by, " ", h("span", { class: "legend" }, RAMP.map((c, i) => {
      const sw = h("i", {}); sw.style.background = c;
      return h("span", {}, sw, `≥${Math.max(1, Math.ceil(Math.expm1((i / RAMP.length) * Math.log1p(legendMax))))}`);
    }))),
    h("div", { class: "mapwrap" }, svgEl,
      h("div", { class: "mapctl" }, h("button", { title: "zoom in", id: "zoom-in", onclick: () => zoom(0.7) }, "+"),
        h("button", { title: "zoom out", id: "zoom-out", onclick: () => zoom(1.4) }, "−"),
        h("button", { title: "fit", onclick: () => { mapState.view = null; render(); } }, "⤢")), info),
  ];
}

function unproject(x, y) {
  const lng = (x / 1e6) * 360 - 180;
  const n = Math.PI - (2 * Math.PI * y) / 1e6;
  return [lng, (180 / Math.PI) * Math.atan(0.5 * (Math.exp(n) - Math.exp(-n)))];
}

// --- search, routing, live updates -----------------------------------------------------

document.getElementById("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (!q) return;
  try {
    const r = await rpc("motus_explorerSearch", [q]);
    const target = { block: `#/block/${r.value}`, transaction: `#/tx/${r.value}`, address: `#/address/${r.value}`,
      vehicle: `#/vehicle/${r.value}`, attestation: `#/attestation/${r.value}` }[r.kind];
    if (target) location.hash = target;
    else page.replaceChildren(notFound(`anything matching "${q}"`));
  } catch (err) {
    page.replaceChildren(h("p", { class: "err" }, String(err.message || err)));
  }
});

function notFound(what) {
  return h("div", { class: "card" }, h("h1", {}, "Not found"), h("p", {}, `This node knows no ${what}.`));
}

const ROUTES = {
  "": [homePage, true], block: [blockPage, false], tx: [txPage, false], address: [addressPage, true],
  vehicle: [vehiclePage, true], attestation: [attestationPage, false], governance: [governancePage, true],
  validators: [validatorsPage, true], map: [mapPage, true],
};

let rendering = null;
let renderSeq = 0;

async function render(quiet) {
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  const route = ROUTES[name] || ROUTES[""];
  const seq = ++renderSeq;
  if (!quiet) document.body.dataset.ready = "0";
  try {
    rendering = route[0](decodeURIComponent(arg || ""));
    const content = await rendering;
    if (seq !== renderSeq) return; // a newer navigation won
    const y = window.scrollY;
    page.replaceChildren(...[content].flat());
    if (quiet) window.scrollTo(0, y);
  } catch (err) {
    if (seq !== renderSeq) return;
    page.replaceChildren(h("div", { class: "card" }, h("h1", {}, "Error"), h("p", { class: "err" }, String(err.message || err))));
  } finally {
    rendering = null;
    if (seq === renderSeq) { document.body.dataset.ready = "1"; document.body.dataset.rendered = String(seq); }
  }
}

window.addEventListener("hashchange", () => {
  if (!location.hash.startsWith("#/map")) mapState.view = null;
  render();
});

let lastHead = 0, pendingRefresh = null;
let holding = false; // a drag on the map is under way: a refresh would drop it
function onHead(height) {
  lastHead = height;
  const name = location.hash.replace(/^#\/?/, "").split("/")[0];
  if (!(ROUTES[name] || ROUTES[""])[1] || pendingRefresh) return;
  // at most one refresh a second, never while one is running
  const refresh = async () => {
    if (holding) { pendingRefresh = setTimeout(refresh, 500); return; }
    if (rendering) await rendering.catch(() => {});
    pendingRefresh = null;
    render(true);
  };
  pendingRefresh = setTimeout(refresh, 1000);
}

function connect(backoff = 1000) {
  let ws;
  try {
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`);
  } catch {
    setTimeout(() => connect(Math.min(backoff * 2, 30000)), backoff);
    return;
  }
  ws.onopen = () => {
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_subscribe", params: ["newHeads"] }));
    liveBadge.textContent = "live"; liveBadge.classList.add("on");
    backoff = 1000;
  };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.method === "eth_subscription" && msg.params && msg.params.result) {
      const n = parseInt(msg.params.result.number, 16);
      liveBadge.textContent = `live · #${n}`;
      document.body.dataset.head = String(n);
      onHead(n);
    }
  };
  ws.onclose = () => {
    liveBadge.textContent = "offline"; liveBadge.classList.remove("on");
    setTimeout(() => connect(Math.min(backoff * 2, 30000)), backoff);
  };
}

render();
connect();
