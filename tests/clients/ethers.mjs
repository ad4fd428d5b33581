// ethers v6 against a Motus node: each `check` is one case the pytest wrapper
// (test_ethers.py) reports by name. Run through pytest, which starts the node.
import {
  Contract, ContractFactory, JsonRpcProvider, Transaction, WebSocketProvider, Wallet,
  getBytes, hexlify, id as topicId, keccak256, parseEther, parseUnits, randomBytes, toBeHex, zeroPadValue,
} from "ethers";
import { contracts } from "./lib/contracts.mjs";
import { verifyAccountProof } from "./lib/mpt.mjs";
import {
  CHAIN_ID, DEV_KEYS, RPC_URL, WS_URL, assert, assertEq, check, done, rawRpc, rejects, sleep, until,
} from "./lib/harness.mjs";

const C = contracts();
// Poll every 100 ms (ethers' default is 4 s; blocks here come every 200 ms).
const provider = new JsonRpcProvider(RPC_URL, CHAIN_ID, { staticNetwork: true, pollingInterval: 100, cacheTimeout: -1 });
const [deployer, payer, speeder, canceller, estimator, emitter] = DEV_KEYS.map((k) => new Wallet(k, provider));
const GWEI = 10n ** 9n;
const stranger = Wallet.createRandom().address; // an address with no code and no history

const factory = (name, signer) => new ContractFactory(C[name].abi, C[name].bytecode, signer);
const at = (name, addr, runner = provider) => new Contract(addr, C[name].abi, runner);
let token, minimal, reverter, cloneFactory;

await check("network_chain_id", async () => {
  const net = await provider.getNetwork();
  assertEq(net.chainId, BigInt(CHAIN_ID), "chainId");
});

// ---- deploys (ethers estimates gas for each: every shape of creation) ----
await check("deploy_erc20", async () => {
  token = await factory("Token", deployer).deploy(parseEther("1000000"));
  await token.waitForDeployment();
  assertEq(await token.balanceOf(deployer.address), parseEther("1000000"), "deployer's balance");
  assertEq(await token.symbol(), "MCT", "symbol");
});

await check("deploy_minimal", async () => {
  minimal = await factory("Minimal", deployer).deploy();
  await minimal.waitForDeployment();
  assertEq(await provider.getCode(minimal.target), C.Minimal.deployedBytecode, "deployed code");
});

await check("deploy_constructor_1kb_argument", async () => {
  const arg = randomBytes(1024);
  const payload = await factory("Payload", deployer).deploy(arg);
  await payload.waitForDeployment();
  assertEq(await payload.size(), 1024n, "size");
  assertEq(await payload.digest(), keccak256(arg), "digest");
});

await check("deploy_reverter", async () => {
  reverter = await factory("Reverter", deployer).deploy();
  await reverter.waitForDeployment();
});

await check("deploy_eip1167_clone", async () => {
  cloneFactory = await factory("CloneFactory", deployer).deploy(minimal.target);
  await cloneFactory.waitForDeployment();
  const receipt = await (await cloneFactory.clone()).wait();
  const ev = receipt.logs.map((l) => cloneFactory.interface.parseLog(l)).find((e) => e?.name === "Cloned");
  assert(ev, "Cloned event in the receipt");
  const clone = at("Minimal", ev.args.clone, deployer);
  const code = await provider.getCode(clone.target);
  assert(code.startsWith("0x363d3d373d3d3d363d73"), `EIP-1167 code, got ${code}`);
  await (await clone.set(7n)).wait(); // estimated through the proxy's DELEGATECALL
  assertEq(await clone.value(), 7n, "clone's own storage");
  assertEq(await minimal.value(), 0n, "implementation untouched");
}, { needs: ["deploy_minimal"] });

// ---- transfers ----
await check("transfer_native", async () => {
  const before = await provider.getBalance(stranger);
  const receipt = await (await payer.sendTransaction({ to: stranger, value: parseEther("1.5") })).wait();
  assertEq(receipt.status, 1, "status");
  assertEq((await provider.getBalance(stranger)) - before, parseEther("1.5"), "received");
});

await check("transfer_eip2930_access_list", async () => {
  const tx = await payer.sendTransaction({ type: 1, to: minimal.target, data: minimal.interface.encodeFunctionData("value"),
    accessList: [{ address: minimal.target, storageKeys: [zeroPadValue("0x00", 32)] }] });
  const receipt = await tx.wait();
  assertEq(receipt.type, 1, "type");
  const got = await provider.getTransaction(tx.hash);
  assertEq(got.accessList?.[0]?.address, minimal.target, "access list echoed");
}, { needs: ["deploy_minimal"] });

await check("transfer_erc20", async () => {
  const receipt = await (await token.transfer(payer.address, 12345n)).wait();
  const ev = receipt.logs.map((l) => token.interface.parseLog(l)).find((e) => e?.name === "Transfer");
  assertEq(ev.args.to, payer.address, "Transfer.to");
  assertEq(await token.balanceOf(payer.address), 12345n, "balance");
}, { needs: ["deploy_erc20"] });

await check("block_with_transactions", async () => {
  const receipt = await (await payer.sendTransaction({ to: stranger, value: 4n })).wait();
  const block = await provider.getBlock(receipt.blockNumber, true);
  const tx = block.prefetchedTransactions.find((t) => t.hash === receipt.hash);
  assert(tx && tx.blockHash === block.hash && tx.from === payer.address, "the transfer, parsed by ethers");
  assertEq(await receipt.confirmations() >= 1, true, "confirmations");
});

// ---- estimates of every shape ----
await check("estimate_data_to_eoa", async () => {
  const gas = await provider.estimateGas({ from: estimator.address, to: stranger, data: "0xab" });
  assert(gas >= 21016n && gas < 30000n, `gas ${gas}`);
});

await check("estimate_empty_creation", async () => {
  const gas = await provider.estimateGas({ from: estimator.address, data: "0x" });
  assert(gas >= 53000n && gas < 60000n, `gas ${gas}`);
});

await check("estimate_large_calldata", async () => {
  const data = hexlify(randomBytes(8192));
  const gas = await provider.estimateGas({ from: estimator.address, to: stranger, data });
  assert(gas >= 21000n + 4n * 8192n, `gas ${gas}`);
});

await check("send_data_to_eoa", async () => {
  const receipt = await (await estimator.sendTransaction({ to: stranger, data: "0xab" })).wait();
  assertEq(receipt.status, 1, "status");
});

await check("call_gas_below_intrinsic", async () => {
  const e = await rejects(() => rawRpc("eth_call", [{ from: estimator.address, to: stranger, gas: "0x1388" }, "latest"]),
    "eth_call with gas 5000");
  assert(/intrinsic gas too low/.test(e.message), e.message);
});

// ---- replacement and cancellation of a pending transaction (wallet "speed up"/"cancel") ----
async function replaceScenario(wallet, makeReplacement) {
  const n = await provider.getTransactionCount(wallet.address, "pending");
  const fees = { maxFeePerGas: 10n * GWEI, maxPriorityFeePerGas: 1n * GWEI, gasLimit: 21000n };
  const later = await wallet.sendTransaction({ to: stranger, value: 1n, nonce: n + 1, ...fees });
  const replacement = await wallet.sendTransaction({
    ...makeReplacement(wallet), nonce: n + 1, gasLimit: 21000n, maxFeePerGas: 20n * GWEI, maxPriorityFeePerGas: 2n * GWEI,
  });
  const first = await wallet.sendTransaction({ to: stranger, value: 1n, nonce: n, ...fees });
  const [r1, r2] = await Promise.all([first.wait(1, 8000), replacement.wait(1, 8000)]);
  assertEq(r1.status, 1, "nonce n");
  assertEq(r2.status, 1, "replacement");
  const e = await rejects(() => later.wait(1, 6000), "the replaced transaction must not be mined");
  assertEq(await provider.getTransactionReceipt(later.hash), null, "receipt of the replaced tx");
  assertEq(await provider.getTransactionCount(wallet.address, "latest"), n + 2, "nonce after");
  return e;
}

await check("replacement_speed_up", async () => {
  const e = await replaceScenario(speeder, () => ({ to: stranger, value: 1n }));
  assertEq(e.code, "TRANSACTION_REPLACED", `ethers' verdict on the replaced tx (${e.message})`);
  assertEq(e.reason, "repriced", "reason");
});

await check("replacement_cancel", async () => {
  const e = await replaceScenario(canceller, (w) => ({ to: w.address, value: 0n }));
  assertEq(e.code, "TRANSACTION_REPLACED", `ethers' verdict on the replaced tx (${e.message})`);
  assertEq(e.reason, "cancelled", "reason");
});

// ---- refusals ethers classifies by geth's wording (wallets branch on these codes) ----
await check("error_nonce_expired", async () => {
  const n = await provider.getTransactionCount(payer.address, "latest");
  assert(n > 0, "payer has sent before");
  const e = await rejects(() => payer.sendTransaction({ to: stranger, value: 1n, nonce: n - 1, gasLimit: 21000n }), "reused nonce");
  assertEq(e.code, "NONCE_EXPIRED", `ethers' code (${e.message})`);
});

await check("error_replacement_underpriced", async () => {
  const n = await provider.getTransactionCount(payer.address, "pending");
  const fees = { gasLimit: 21000n, maxFeePerGas: 10n * GWEI, maxPriorityFeePerGas: GWEI };
  // nonce n+1 waits for n, so the second send meets the first in the pool
  const first = await payer.sendTransaction({ to: stranger, value: 1n, nonce: n + 1, ...fees });
  const e = await rejects(() => payer.sendTransaction({ to: stranger, value: 2n, nonce: n + 1, ...fees }), "same fees");
  assertEq(e.code, "REPLACEMENT_UNDERPRICED", `ethers' code (${e.message})`);
  await (await payer.sendTransaction({ to: stranger, value: 1n, nonce: n, ...fees })).wait();
  await first.wait(1, 8000);
});

await check("error_insufficient_funds", async () => {
  const empty = Wallet.createRandom(provider);
  const e = await rejects(() => empty.sendTransaction({ to: stranger, value: 1n, gasLimit: 21000n, maxFeePerGas: 10n * GWEI, maxPriorityFeePerGas: GWEI }), "no funds");
  assertEq(e.code, "INSUFFICIENT_FUNDS", `ethers' code (${e.message})`);
});

// ---- reverts, decoded by ethers ----
await check("revert_error_string", async () => {
  const e = await rejects(() => reverter.failString.staticCall(), "failString");
  assertEq(e.code, "CALL_EXCEPTION", "code");
  assertEq(e.reason, "reverter: plain reason", "reason");
}, { needs: ["deploy_reverter"] });

await check("revert_panic", async () => {
  const e = await rejects(() => reverter.failPanic(0n), "failPanic(0)");
  assertEq(e.code, "CALL_EXCEPTION", "code");
  assertEq(e.revert?.name, "Panic", "revert name");
  assertEq(e.revert?.args?.[0], 0x12n, "panic code");
}, { needs: ["deploy_reverter"] });

await check("revert_custom_error", async () => {
  const e = await rejects(() => at("Reverter", reverter.target, payer).failCustom.staticCall(), "failCustom");
  assertEq(e.revert?.name, "Unauthorized", `custom error (${e.message})`);
  assertEq(e.revert.args[0], payer.address, "who");
  assertEq(e.revert.args[1], 42n, "code");
}, { needs: ["deploy_reverter"] });

await check("revert_in_estimate", async () => {
  const e = await rejects(() => reverter.mustBePositive.estimateGas(0n), "estimate of a reverting call");
  assertEq(e.code, "CALL_EXCEPTION", "code");
  assertEq(e.reason, "reverter: x must be positive", "reason");
}, { needs: ["deploy_reverter"] });

// ---- events: getLogs, filters (eth_newFilter polling), pending filter ----
await check("get_logs_query_filter", async () => {
  const head = await provider.getBlockNumber();
  const logs = await token.queryFilter(token.filters.Transfer(deployer.address, payer.address), 0, head);
  assert(logs.some((l) => l.args.value === 12345n), `Transfer in ${logs.length} logs`);
  const raw = await provider.getLogs({ address: token.target, topics: [topicId("Transfer(address,uint256,uint256)")], fromBlock: 0 });
  assertEq(raw.length, 0, "no log under another signature");
}, { needs: ["transfer_erc20"] });

async function expectEvent(contract, fire) {
  const seen = new Promise((resolve) => contract.once("Set", (who, value) => resolve(value)));
  await sleep(500); // let the subscriber install its filter first
  await fire();
  const value = await Promise.race([seen, sleep(8000).then(() => { throw new Error("no Set event in 8 s"); })]);
  return value;
}

await check("contract_on_filter_polling", async () => {
  const calls = [];
  const orig = provider.send.bind(provider);
  provider.send = (method, params) => { calls.push(method); return orig(method, params); };
  try {
    const c = at("Minimal", minimal.target, emitter);
    const value = await expectEvent(c, async () => (await c.set(11n)).wait());
    assertEq(value, 11n, "event value");
    assert(calls.includes("eth_newFilter") && calls.includes("eth_getFilterChanges"), `methods used: ${[...new Set(calls)]}`);
  } finally {
    provider.send = orig;
    await minimal.removeAllListeners();
  }
}, { needs: ["deploy_minimal"] });

await check("pending_transaction_filter", async () => {
  const seen = new Set();
  const listener = (h) => seen.add(h);
  await provider.on("pending", listener);
  try {
    await sleep(300);
    const tx = await emitter.sendTransaction({ to: stranger, value: 1n });
    await until(() => seen.has(tx.hash), 8000, "the pending hash");
    await tx.wait();
  } finally {
    await provider.off("pending", listener);
  }
});

// ---- WebSocket subscriptions ----
await check("ws_new_heads", async () => {
  const ws = new WebSocketProvider(WS_URL, CHAIN_ID, { staticNetwork: true });
  try {
    const n = await new Promise((resolve, reject) => {
      setTimeout(() => reject(new Error("no block in 8 s")), 8000);
      ws.once("block", resolve);
    });
    assert(typeof n === "number" && n > 0, `block ${n}`);
  } finally {
    await ws.destroy();
  }
});

await check("ws_logs", async () => {
  const ws = new WebSocketProvider(WS_URL, CHAIN_ID, { staticNetwork: true });
  try {
    const c = at("Minimal", minimal.target, ws);
    const value = await expectEvent(c, async () => (await at("Minimal", minimal.target, emitter).set(12n)).wait());
    assertEq(value, 12n, "event value");
  } finally {
    await ws.destroy();
  }
}, { needs: ["deploy_minimal"] });

await check("ws_new_pending_transactions", async () => {
  const ws = new WebSocketProvider(WS_URL, CHAIN_ID, { staticNetwork: true });
  try {
    const seen = new Set();
    await ws.on("pending", (h) => seen.add(h));
    await sleep(300);
    const tx = await emitter.sendTransaction({ to: stranger, value: 2n });
    await until(() => seen.has(tx.hash), 8000, "the pending hash over WebSocket");
    await tx.wait();
  } finally {
    await ws.destroy();
  }
});

// ---- block tags and block hash references ----
await check("block_tags_safe_finalized", async () => {
  const latest = await provider.getBlock("latest");
  for (const tag of ["safe", "finalized", "earliest", "pending"]) {
    const b = await provider.getBlock(tag);
    assert(b, `block ${tag}`);
    if (tag === "earliest") assertEq(b.number, 0, "earliest");
    else if (tag !== "pending") assert(b.number >= latest.number - 1 && b.number <= latest.number + 5, `${tag} is ${b.number}, latest ${latest.number}`);
  }
  await provider.getBalance(payer.address, "safe");
  await provider.call({ to: minimal.target, data: minimal.interface.encodeFunctionData("value"), blockTag: "finalized" });
}, { needs: ["deploy_minimal"] });

await check("call_at_block_hash", async () => {
  const receipt = await (await at("Minimal", minimal.target, emitter).set(21n)).wait();
  await (await at("Minimal", minimal.target, emitter).set(22n)).wait();
  const hash = receipt.blockHash;
  const data = minimal.interface.encodeFunctionData("value");
  const ret = await provider.call({ to: minimal.target, data, blockTag: hash });
  assertEq(BigInt(ret), 21n, "value at that block");
  assertEq(await minimal.value({ blockTag: hash }), 21n, "contract call at that block");
  const bal = await provider.getBalance(emitter.address, hash);
  assert(bal > 0n, "balance at a block hash");
}, { needs: ["deploy_minimal"] });

// ---- proofs ----
await check("get_proof_verified", async () => {
  const block = await provider.getBlock("latest");
  const slots = [toBeHex(2, 32) /* _totalSupply: slot 2 of OZ ERC20 */, toBeHex(9, 32) /* unused */];
  const proof = await provider.send("eth_getProof", [token.target, slots, toBeHex(block.number)]);
  const r = verifyAccountProof(block.stateRoot, proof);
  assert(r.exists && r.hasCode, "token account with code");
  assertEq(BigInt(proof.storageProof[0].value), parseEther("1000000"), "total supply slot");
  const absent = await provider.send("eth_getProof", [Wallet.createRandom().address, [], toBeHex(block.number)]);
  assert(!verifyAccountProof(block.stateRoot, absent).exists, "proof of absence");
}, { needs: ["deploy_erc20"] });

// ---- transactions, raw bytes, fees ----
await check("transaction_and_raw_by_hash", async () => {
  const tx = await payer.sendTransaction({ to: stranger, value: 3n });
  const receipt = await tx.wait();
  const got = await provider.getTransaction(tx.hash);
  assertEq(got.blockHash, receipt.blockHash, "blockHash");
  const raw = await provider.send("eth_getRawTransactionByHash", [tx.hash]);
  assertEq(Transaction.from(raw).hash, tx.hash, "raw bytes hash to the tx hash");
});

await check("fee_data", async () => {
  const f = await provider.getFeeData();
  assert(f.maxFeePerGas > 0n && f.maxPriorityFeePerGas > 0n && f.gasPrice > 0n, JSON.stringify(f));
  assert(f.maxFeePerGas < parseUnits("1000", "gwei"), "sane maxFee");
});

await provider.destroy();
done();
