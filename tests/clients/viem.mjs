// viem 2.x against a Motus node: each `check` is one case that the pytest wrapper
// (test_viem.py) reports by name. Run through pytest, which starts the node.
import {
  BaseError, ContractFunctionRevertedError, createPublicClient, createWalletClient, defineChain,
  encodeFunctionData, http, keccak256, numberToHex, parseEther, parseGwei, toHex, webSocket,
} from "viem";
import { privateKeyToAccount, generatePrivateKey } from "viem/accounts";
import { contracts } from "./lib/contracts.mjs";
import { verifyAccountProof } from "./lib/mpt.mjs";
import {
  CHAIN_ID, DEV_KEYS, RPC_URL, WS_URL, assert, assertEq, check, done, rawRpc, rejects, sleep, until,
} from "./lib/harness.mjs";

const C = contracts();
const chain = defineChain({
  id: CHAIN_ID, name: "Motus devnet", nativeCurrency: { name: "MOTUS", symbol: "MOTUS", decimals: 18 },
  rpcUrls: { default: { http: [RPC_URL], webSocket: [WS_URL] } },
});
const methodsSeen = new Set(); // JSON-RPC methods the HTTP transport sent (to see which API a watcher used)
const transport = http(RPC_URL, {
  onFetchRequest: async (req) => {
    const body = await req.clone().json();
    for (const r of [body].flat()) methodsSeen.add(r.method);
  },
});
const client = createPublicClient({ chain, transport, pollingInterval: 100 });
const [deployer, payer, speeder, canceller, estimator, emitter] = DEV_KEYS.map((k) => privateKeyToAccount(k));
const wallet = (account) => createWalletClient({ chain, transport, account, pollingInterval: 100 });
const stranger = privateKeyToAccount(generatePrivateKey()).address;
const receipt = (hash) => client.waitForTransactionReceipt({ hash, timeout: 10000, pollingInterval: 100 });
let token, minimal, reverter;

async function deploy(name, args = []) {
  const hash = await wallet(deployer).deployContract({ abi: C[name].abi, bytecode: C[name].bytecode, args });
  const r = await receipt(hash);
  assertEq(r.status, "success", `${name} deploy`);
  return r.contractAddress;
}

/** The decoded revert of a failed viem contract action. */
function revertOf(e) {
  assert(e instanceof BaseError, `a viem error, got ${e}`);
  const r = e.walk((x) => x instanceof ContractFunctionRevertedError);
  assert(r, `a ContractFunctionRevertedError in: ${e.shortMessage}`);
  return r;
}

await check("chain_id", async () => assertEq(await client.getChainId(), CHAIN_ID, "chain id"));

// ---- deploys ----
await check("deploy_erc20", async () => {
  token = await deploy("Token", [parseEther("1000")]);
  assertEq(await client.readContract({ address: token, abi: C.Token.abi, functionName: "totalSupply" }), parseEther("1000"), "supply");
});
await check("deploy_minimal", async () => { minimal = await deploy("Minimal"); });
await check("deploy_constructor_1kb_argument", async () => {
  const arg = toHex(new Uint8Array(1024).map((_, i) => i % 251));
  const addr = await deploy("Payload", [arg]);
  assertEq(await client.readContract({ address: addr, abi: C.Payload.abi, functionName: "digest" }), keccak256(arg), "digest");
});
await check("deploy_reverter", async () => { reverter = await deploy("Reverter"); });
await check("deploy_eip1167_clone", async () => {
  const factory = await deploy("CloneFactory", [minimal]);
  const { request, result: clone } = await client.simulateContract({
    account: deployer, address: factory, abi: C.CloneFactory.abi, functionName: "clone",
  });
  await receipt(await wallet(deployer).writeContract(request));
  const set = await wallet(deployer).writeContract({ address: clone, abi: C.Minimal.abi, functionName: "set", args: [5n] });
  await receipt(set);
  assertEq(await client.readContract({ address: clone, abi: C.Minimal.abi, functionName: "value" }), 5n, "clone value");
}, { needs: ["deploy_minimal"] });

// ---- transfers ----
await check("transfer_native", async () => {
  const r = await receipt(await wallet(payer).sendTransaction({ to: stranger, value: parseEther("2") }));
  assertEq(r.status, "success", "status");
  assertEq(await client.getBalance({ address: stranger }), parseEther("2"), "balance");
});
await check("transfer_erc20", async () => {
  const r = await receipt(await wallet(deployer).writeContract({
    address: token, abi: C.Token.abi, functionName: "transfer", args: [payer.address, 777n],
  }));
  assertEq(r.logs.length, 1, "one Transfer log");
}, { needs: ["deploy_erc20"] });

await check("block_with_transactions", async () => {
  const r = await receipt(await wallet(payer).sendTransaction({ to: stranger, value: 3n }));
  const block = await client.getBlock({ blockNumber: r.blockNumber, includeTransactions: true });
  const tx = block.transactions.find((t) => t.hash === r.transactionHash);
  assert(tx && tx.type === "eip1559" && tx.blockHash === block.hash, "the transfer, formatted by viem");
  assertEq(await client.getTransactionConfirmations({ hash: r.transactionHash }) >= 1n, true, "confirmations");
});

// ---- estimates ----
await check("estimate_data_to_eoa", async () => {
  const gas = await client.estimateGas({ account: estimator, to: stranger, data: "0xab" });
  assert(gas >= 21016n && gas < 30000n, `gas ${gas}`);
});
await check("estimate_empty_creation", async () => {
  const gas = await client.estimateGas({ account: estimator, data: "0x" });
  assert(gas >= 53000n && gas < 60000n, `gas ${gas}`);
});
await check("estimate_large_calldata", async () => {
  const data = toHex(new Uint8Array(6000).fill(7));
  const gas = await client.estimateGas({ account: estimator, to: stranger, data });
  assert(gas >= 21000n + 16n * 6000n, `gas ${gas}`);
});
await check("send_data_to_eoa_estimated", async () => {
  const r = await receipt(await wallet(estimator).sendTransaction({ to: stranger, data: "0x1234" }));
  assertEq(r.status, "success", "status");
});
await check("estimate_contract_call", async () => {
  const gas = await client.estimateContractGas({ account: emitter, address: minimal, abi: C.Minimal.abi, functionName: "set", args: [1n] });
  assert(gas > 21000n && gas < 100000n, `gas ${gas}`);
}, { needs: ["deploy_minimal"] });

// ---- replacement / cancellation ----
async function replaceScenario(account, replacementTo) {
  const w = wallet(account);
  const n = await client.getTransactionCount({ address: account.address, blockTag: "pending" });
  const fees = { gas: 21000n, maxFeePerGas: parseGwei("10"), maxPriorityFeePerGas: parseGwei("1") };
  const later = await w.sendTransaction({ to: stranger, value: 1n, nonce: n + 1, ...fees });
  const repl = await w.sendTransaction({
    to: replacementTo, value: 0n, nonce: n + 1, gas: 21000n, maxFeePerGas: parseGwei("20"), maxPriorityFeePerGas: parseGwei("2"),
  });
  const first = await w.sendTransaction({ to: stranger, value: 1n, nonce: n, ...fees });
  const [r1, r2] = await Promise.all([receipt(first), client.waitForTransactionReceipt({ hash: repl, timeout: 8000, pollingInterval: 100 })]);
  assertEq(r1.status, "success", "nonce n");
  assertEq(r2.status, "success", "replacement");
  await rejects(() => client.getTransactionReceipt({ hash: later }), "the replaced transaction has no receipt");
  assertEq(await client.getTransactionCount({ address: account.address }), n + 2, "nonce after");
}
await check("replacement_speed_up", () => replaceScenario(speeder, stranger));
await check("replacement_cancel", () => replaceScenario(canceller, canceller.address));

// ---- reverts decoded by viem ----
const simulate = (functionName, args = [], account = payer) =>
  client.simulateContract({ account, address: reverter, abi: C.Reverter.abi, functionName, args });
await check("revert_error_string", async () => {
  const r = revertOf(await rejects(() => simulate("failString"), "failString"));
  assertEq(r.reason, "reverter: plain reason", "reason");
}, { needs: ["deploy_reverter"] });
await check("revert_panic", async () => {
  const r = revertOf(await rejects(() => simulate("failPanic", [0n]), "failPanic"));
  assertEq(r.data?.errorName, "Panic", "error name");
  assertEq(r.data?.args?.[0], 0x12n, "panic code");
}, { needs: ["deploy_reverter"] });
await check("revert_custom_error", async () => {
  const r = revertOf(await rejects(() => simulate("failCustom"), "failCustom"));
  assertEq(r.data?.errorName, "Unauthorized", "error name");
  assertEq(r.data.args[0], payer.address, "who");
  assertEq(r.data.args[1], 42n, "code");
}, { needs: ["deploy_reverter"] });
await check("revert_in_estimate", async () => {
  const e = await rejects(() => client.estimateContractGas({
    account: payer, address: reverter, abi: C.Reverter.abi, functionName: "mustBePositive", args: [0n],
  }), "estimate");
  assert(/x must be positive/.test(e.message), e.shortMessage);
}, { needs: ["deploy_reverter"] });

// ---- logs and the filter API ----
const setEvent = () => C.Minimal.abi.find((x) => x.type === "event" && x.name === "Set");
const emitSet = async (v) => receipt(await wallet(emitter).writeContract({ address: minimal, abi: C.Minimal.abi, functionName: "set", args: [v] }));

await check("get_logs", async () => {
  const logs = await client.getContractEvents({ address: token, abi: C.Token.abi, eventName: "Transfer", fromBlock: 0n, args: { to: payer.address } });
  assert(logs.some((l) => l.args.value === 777n), `${logs.length} logs`);
}, { needs: ["transfer_erc20"] });

await check("event_filter_changes_and_logs", async () => {
  const filter = await client.createEventFilter({ address: minimal, event: setEvent() });
  await emitSet(31n);
  const changes = await until(async () => {
    const c = await client.getFilterChanges({ filter });
    return c.length ? c : null;
  }, 8000, "filter changes");
  assertEq(changes[0].args.value, 31n, "change");
  assertEq((await client.getFilterChanges({ filter })).length, 0, "changes are consumed");
  const all = await client.getFilterLogs({ filter });
  assert(all.some((l) => l.args.value === 31n), "getFilterLogs");
  assertEq(await client.uninstallFilter({ filter }), true, "uninstall");
  assertEq(await client.uninstallFilter({ filter }), false, "second uninstall");
}, { needs: ["deploy_minimal"] });

await check("block_filter", async () => {
  const filter = await client.createBlockFilter();
  const hashes = await until(async () => {
    const c = await client.getFilterChanges({ filter });
    return c.length ? c : null;
  }, 8000, "new block hashes");
  const b = await client.getBlock({ blockHash: hashes[0] });
  assertEq(b.hash, hashes[0], "block by the filter's hash");
  await client.uninstallFilter({ filter });
});

await check("pending_transaction_filter", async () => {
  const filter = await client.createPendingTransactionFilter();
  const hash = await wallet(emitter).sendTransaction({ to: stranger, value: 1n });
  const seen = new Set();
  await until(async () => {
    for (const h of await client.getFilterChanges({ filter })) seen.add(h);
    return seen.has(hash);
  }, 8000, "the pending hash");
  await receipt(hash);
  await client.uninstallFilter({ filter });
});

await check("watch_contract_event_polling", async () => {
  methodsSeen.clear();
  const got = [];
  const unwatch = client.watchContractEvent({ address: minimal, abi: C.Minimal.abi, eventName: "Set", onLogs: (logs) => got.push(...logs), poll: true });
  try {
    await sleep(400);
    await emitSet(32n);
    await until(() => got.some((l) => l.args.value === 32n), 8000, "the Set event");
    assert(methodsSeen.has("eth_newFilter") && methodsSeen.has("eth_getFilterChanges"), `methods used: ${[...methodsSeen]}`);
  } finally {
    unwatch();
  }
}, { needs: ["deploy_minimal"] });

// ---- WebSocket subscriptions ----
const wsClient = () => createPublicClient({ chain, transport: webSocket(WS_URL, { retryCount: 0 }) });

await check("ws_watch_blocks", async () => {
  const ws = wsClient();
  let unwatch;
  try {
    const block = await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error("no block in 8 s")), 8000);
      unwatch = ws.watchBlocks({ onBlock: resolve, onError: reject, emitOnBegin: false });
    });
    assert(block.number > 0n && block.hash, "block");
  } finally {
    unwatch?.();
    await (await ws.transport.getRpcClient()).close();
  }
});

await check("ws_watch_contract_event", async () => {
  const ws = wsClient();
  const got = [];
  let err;
  const unwatch = ws.watchContractEvent({ address: minimal, abi: C.Minimal.abi, eventName: "Set", onLogs: (l) => got.push(...l), onError: (e) => { err = e; } });
  try {
    await sleep(400);
    await emitSet(33n);
    await until(() => err || got.some((l) => l.args.value === 33n), 8000, "the Set event over WebSocket");
    if (err) throw err;
  } finally {
    unwatch();
    await (await ws.transport.getRpcClient()).close();
  }
}, { needs: ["deploy_minimal"] });

await check("ws_watch_pending_transactions", async () => {
  const ws = wsClient();
  const seen = new Set();
  let err;
  const unwatch = ws.watchPendingTransactions({ onTransactions: (hs) => hs.forEach((h) => seen.add(h)), onError: (e) => { err = e; } });
  try {
    await sleep(400);
    const hash = await wallet(emitter).sendTransaction({ to: stranger, value: 1n });
    await until(() => err || seen.has(hash), 8000, "the pending hash over WebSocket");
    if (err) throw err;
    await receipt(hash);
  } finally {
    unwatch();
    await (await ws.transport.getRpcClient()).close();
  }
});

// ---- block tags, hashes, proofs, access lists ----
await check("block_tags_safe_finalized", async () => {
  const latest = await client.getBlockNumber();
  for (const blockTag of ["safe", "finalized"]) {
    const b = await client.getBlock({ blockTag });
    assert(b.number <= latest + 2n && b.number >= latest - 2n, `${blockTag}=${b.number} latest=${latest}`);
    await client.getBalance({ address: payer.address, blockTag });
    await client.readContract({ address: minimal, abi: C.Minimal.abi, functionName: "value", blockTag });
  }
  assertEq((await client.getBlock({ blockTag: "earliest" })).number, 0n, "earliest");
}, { needs: ["deploy_minimal"] });

await check("state_at_block_hash", async () => {
  const r = await emitSet(41n);
  await emitSet(42n);
  const value = await rawRpc("eth_call", [{ to: minimal, data: encodeFunctionData({ abi: C.Minimal.abi, functionName: "value" }) }, r.blockHash]);
  assertEq(BigInt(value), 41n, "eth_call at a bare block hash");
  const bal = await rawRpc("eth_getBalance", [emitter.address, r.blockHash]);
  assert(BigInt(bal) > 0n, "balance at a bare hash");
  const receipts = await client.request({ method: "eth_getBlockReceipts", params: [r.blockHash] });
  assert(receipts.some((x) => x.transactionHash === r.transactionHash), "eth_getBlockReceipts by hash");
  const viaObject = await client.request({ method: "eth_getBalance", params: [emitter.address, { blockHash: r.blockHash }] });
  assertEq(viaObject, bal, "EIP-1898 object agrees");
}, { needs: ["deploy_minimal"] });

await check("get_proof_verified", async () => {
  const block = await client.getBlock();
  const proof = await client.getProof({ address: minimal, storageKeys: [numberToHex(0, { size: 32 })], blockNumber: block.number });
  const json = {
    address: proof.address, balance: numberToHex(proof.balance), nonce: numberToHex(proof.nonce), codeHash: proof.codeHash,
    storageHash: proof.storageHash, accountProof: proof.accountProof,
    storageProof: proof.storageProof.map((s) => ({ key: s.key, value: numberToHex(s.value), proof: s.proof })),
  };
  const v = verifyAccountProof(block.stateRoot, json);
  assert(v.exists && v.hasCode, "minimal exists with code");
  assertEq(proof.storageProof[0].value, await client.readContract({ address: minimal, abi: C.Minimal.abi, functionName: "value", blockNumber: block.number }), "slot 0 = value()");
}, { needs: ["deploy_minimal"] });

await check("create_access_list", async () => {
  const { accessList, gasUsed } = await client.createAccessList({
    account: emitter, to: minimal, data: encodeFunctionData({ abi: C.Minimal.abi, functionName: "set", args: [9n] }),
  });
  const entry = accessList.find((a) => a.address.toLowerCase() === minimal.toLowerCase());
  assert(entry && entry.storageKeys.includes(numberToHex(0, { size: 32 })), JSON.stringify(accessList));
  assert(gasUsed > 21000n, `gasUsed ${gasUsed}`);
}, { needs: ["deploy_minimal"] });

await check("call_and_estimate_with_state_override", async () => {
  // Minimal's code at a fresh address with slot 0 = 99: what a simulator or wallet preview sends.
  const ghost = privateKeyToAccount(generatePrivateKey()).address;
  const stateOverride = [{ address: ghost, code: C.Minimal.deployedBytecode, stateDiff: [{ slot: numberToHex(0, { size: 32 }), value: numberToHex(99, { size: 32 }) }] }];
  const { data } = await client.call({ to: ghost, data: encodeFunctionData({ abi: C.Minimal.abi, functionName: "value" }), stateOverride });
  assertEq(BigInt(data), 99n, "value() under the override");
  const gas = await client.estimateGas({ account: emitter, to: ghost, data: encodeFunctionData({ abi: C.Minimal.abi, functionName: "set", args: [1n] }), stateOverride });
  assert(gas > 21000n, `gas ${gas}`);
});

// ---- debug and txpool namespaces (what block explorers and wallets' debuggers call) ----
await check("debug_trace_transaction", async () => {
  const r = await emitSet(51n);
  const call = await client.request({ method: "debug_traceTransaction", params: [r.transactionHash, { tracer: "callTracer" }] });
  assertEq(call.to?.toLowerCase(), minimal.toLowerCase(), "callTracer to");
  assertEq(call.type, "CALL", "callTracer type");
  const logger = await client.request({ method: "debug_traceTransaction", params: [r.transactionHash, {}] });
  assert(Array.isArray(logger.structLogs) && logger.structLogs.some((s) => s.op === "SSTORE"), "struct logs with an SSTORE");
  assertEq(logger.failed, false, "failed");
}, { needs: ["deploy_minimal"] });

await check("debug_trace_call", async () => {
  const t = await client.request({
    method: "debug_traceCall",
    params: [{ from: payer.address, to: reverter, data: encodeFunctionData({ abi: C.Reverter.abi, functionName: "failString" }) }, "latest", { tracer: "callTracer" }],
  });
  assert(t.error || t.revertReason, `a reverted call trace: ${JSON.stringify(t).slice(0, 200)}`);
}, { needs: ["deploy_reverter"] });

await check("txpool_namespace", async () => {
  const status = await client.request({ method: "txpool_status" });
  assert("pending" in status && "queued" in status, JSON.stringify(status));
  const content = await client.request({ method: "txpool_content" });
  assert("pending" in content && "queued" in content, "content");
  const inspect = await client.request({ method: "txpool_inspect" });
  assert("pending" in inspect && "queued" in inspect, "inspect");
});

done();
