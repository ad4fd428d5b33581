// Foundry's `cast` (npm @foundry-rs/cast) against a Motus node: each `check` is one case
// that the pytest wrapper (test_cast.py) reports by name. Run through pytest.
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { Wallet, AbiCoder, hexlify, randomBytes } from "ethers";
import { contracts } from "./lib/contracts.mjs";
import { verifyAccountProof } from "./lib/mpt.mjs";
import { CHAIN_ID, DEV_KEYS, RPC_URL, assert, assertEq, check, done, rejects } from "./lib/harness.mjs";

// The binary of @foundry-rs/cast-<os>-<arch>, found as the package's own `cast` shim finds
// it. Not through the shim: @foundry-rs/cast 1.7.1's bin.mjs exits 0 even when cast fails.
const PLATFORM = { x64: "amd64", arm64: "arm64" }[process.arch];
const CAST = createRequire(import.meta.url).resolve(`@foundry-rs/cast-${process.platform}-${PLATFORM}/bin/cast`);
const C = contracts();
const [deployer, payer, speeder, , estimator, emitter] = DEV_KEYS;
const addr = (k) => new Wallet(k).address;
const stranger = Wallet.createRandom().address;

/** Run cast with the node's URL; resolves to trimmed stdout, rejects with cast's stderr. */
function cast(args, { key, timeoutMs = 12000, offline = false } = {}) {
  // Options right after the subcommand: after `--create CODE` cast reads them as arguments.
  const full = [args[0], ...(offline ? [] : ["--rpc-url", RPC_URL]), ...(key ? ["--private-key", key] : []), ...args.slice(1)];
  return new Promise((resolve, reject) => {
    execFile(CAST, full, { timeout: timeoutMs, maxBuffer: 16 << 20, env: { ...process.env, NO_COLOR: "1" } }, (err, stdout, stderr) => {
      if (err && err.killed) reject(new Error(`cast ${args.join(" ").slice(0, 120)}: no answer within ${timeoutMs} ms`));
      else if (err) reject(new Error(`cast ${args[0]}: ${(stderr || err.message).trim().slice(0, 600)}`));
      else resolve(stdout.trim());
    });
  });
}
const json = async (args, opts) => JSON.parse(await cast([args[0], "--json", ...args.slice(1)], opts));
let minimal, reverter;

await check("chain_id", async () => assertEq(await cast(["chain-id"]), String(CHAIN_ID), "chain-id"));

await check("send_create_minimal", async () => {
  const r = await json(["send", "--create", C.Minimal.bytecode], { key: deployer });
  assertEq(r.status, "0x1", "status");
  minimal = r.contractAddress;
  assertEq(await cast(["code", minimal]), C.Minimal.deployedBytecode, "code");
});

await check("send_create_tiny", async () => {
  // The smallest creation: init code STOP, so an empty contract (estimate floor = intrinsic gas).
  const r = await json(["send", "--create", "0x00"], { key: deployer });
  assertEq(r.status, "0x1", "status");
});

await check("send_create_reverter", async () => {
  const r = await json(["send", "--create", C.Reverter.bytecode], { key: deployer });
  reverter = r.contractAddress;
});

await check("send_create_1kb_constructor_argument", async () => {
  const arg = AbiCoder.defaultAbiCoder().encode(["bytes"], [randomBytes(1024)]);
  const r = await json(["send", "--create", C.Payload.bytecode + arg.slice(2)], { key: deployer });
  assertEq(r.status, "0x1", "status");
  assertEq(await cast(["call", r.contractAddress, "size()(uint256)"]), "1024", "size");
});

await check("send_and_call", async () => {
  const r = await json(["send", minimal, "set(uint256)", "5"], { key: emitter });
  assertEq(r.status, "0x1", "status");
  assertEq(await cast(["call", minimal, "value()(uint256)"]), "5", "value");
}, { needs: ["send_create_minimal"] });

await check("estimate_data_to_eoa", async () => {
  const gas = BigInt(await cast(["estimate", stranger, "0xab", "--from", addr(estimator)]));
  assert(gas >= 21016n && gas < 30000n, `gas ${gas}`);
});

await check("estimate_create", async () => {
  const gas = BigInt(await cast(["estimate", "--from", addr(estimator), "--create", C.Minimal.bytecode]));
  assert(gas > 53000n, `gas ${gas}`);
});

await check("send_transfer", async () => {
  const r = await json(["send", stranger, "--value", "1ether"], { key: payer });
  assertEq(r.status, "0x1", "status");
  assertEq(await cast(["balance", stranger]), "1000000000000000000", "balance");
});

await check("send_legacy_transaction", async () => {
  const r = await json(["send", "--legacy", stranger, "--value", "1"], { key: payer });
  assertEq(r.status, "0x1", "status");
  assertEq(r.type, "0x0", "legacy type");
});

await check("receipt_and_tx", async () => {
  const sent = await json(["send", stranger, "--value", "1"], { key: payer });
  const r = await json(["receipt", sent.transactionHash]);
  assertEq(r.blockHash, sent.blockHash, "receipt blockHash");
  const tx = await json(["tx", sent.transactionHash]);
  assertEq(tx.hash, sent.transactionHash, "tx hash");
  const raw = await cast(["rpc", "eth_getRawTransactionByHash", sent.transactionHash]);
  assert(/^"0x02/.test(raw), `raw EIP-1559 bytes, got ${raw.slice(0, 40)}`);
});

await check("logs", async () => {
  const logs = await json(["logs", "--from-block", "0", "--address", minimal, "Set(address indexed,uint256)"]);
  assert(logs.length >= 1, `${logs.length} logs`);
  assertEq(BigInt(logs.at(-1).data), 5n, "Set value");
}, { needs: ["send_and_call"] });

await check("storage", async () => {
  assertEq(BigInt(await cast(["storage", minimal, "0"])), 5n, "slot 0");
}, { needs: ["send_and_call"] });

await check("proof_verified", async () => {
  const n = await cast(["block-number"]);
  const block = await json(["block", n]);
  const proof = await json(["proof", minimal, "0", "--block", n]);
  const v = verifyAccountProof(block.stateRoot, proof);
  assert(v.exists && v.hasCode, "minimal with code");
  assertEq(BigInt(proof.storageProof[0].value), 5n, "slot 0");
}, { needs: ["send_and_call"] });

await check("block_tags_safe_finalized", async () => {
  for (const tag of ["safe", "finalized", "latest", "earliest"]) {
    const b = await json(["block", tag]);
    assert(b.hash, `block ${tag}`);
    await cast(["balance", addr(payer), "--block", tag]);
  }
  await cast(["call", minimal, "value()(uint256)", "--block", "finalized"]);
}, { needs: ["send_create_minimal"] });

await check("call_at_block_hash", async () => {
  const r = await json(["send", minimal, "set(uint256)", "6"], { key: emitter });
  await json(["send", minimal, "set(uint256)", "7"], { key: emitter });
  assertEq(await cast(["call", minimal, "value()(uint256)", "--block", r.blockHash]), "6", "value at the hash");
  assertEq(BigInt(await cast(["rpc", "eth_getBalance", addr(emitter), r.blockHash]).then(JSON.parse)) > 0n, true, "balance at a bare hash");
}, { needs: ["send_and_call"] });

await check("replacement_with_nonce", async () => {
  const from = addr(speeder);
  const n = Number(await cast(["nonce", from, "--block", "pending"]));
  const fee = (max, tip) => ["--gas-limit", "21000", "--gas-price", max, "--priority-gas-price", tip];
  const later = await cast(["send", "--async", "--nonce", String(n + 1), stranger, "--value", "1", ...fee("10gwei", "1gwei")], { key: speeder });
  const repl = await cast(["send", "--async", "--nonce", String(n + 1), stranger, "--value", "2", ...fee("20gwei", "2gwei")], { key: speeder });
  assert(later !== repl, "distinct hashes");
  const first = await json(["send", "--nonce", String(n), stranger, "--value", "1", ...fee("10gwei", "1gwei")], { key: speeder });
  assertEq(first.status, "0x1", "nonce n");
  const r = await json(["receipt", repl], { timeoutMs: 8000 });
  assertEq(r.status, "0x1", "replacement mined");
  await rejects(() => cast(["receipt", later, "--async"]), "the replaced tx has no receipt");
  assertEq(await cast(["nonce", from]), String(n + 2), "nonce after");
});

await check("revert_reason", async () => {
  const e = await rejects(() => cast(["call", reverter, "failString()"]), "failString");
  assert(/reverter: plain reason/.test(e.message), e.message);
}, { needs: ["send_create_reverter"] });

await check("revert_custom_error_data", async () => {
  const e = await rejects(() => cast(["call", reverter, "failCustom()", "--from", addr(payer)]), "failCustom");
  const data = (e.message.match(/0x[0-9a-fA-F]{8,}/g) || []).find((d) => d.length === 2 + 8 + 128);
  assert(data, `revert data in: ${e.message}`);
  const decoded = await cast(["decode-error", "--sig", "Unauthorized(address,uint256)", data], { offline: true });
  assert(decoded.includes("42") && decoded.toLowerCase().includes(addr(payer).toLowerCase().slice(2)), decoded);
}, { needs: ["send_create_reverter"] });

await check("revert_panic", async () => {
  const e = await rejects(() => cast(["call", reverter, "failPanic(uint256)", "0"]), "failPanic");
  assert(/panic|0x4e487b71/i.test(e.message), e.message);
}, { needs: ["send_create_reverter"] });

await check("access_list", async () => {
  const out = await json(["access-list", minimal, "set(uint256)", "3", "--from", addr(emitter)]);
  const list = out.access_list || out.accessList || out;
  assert(JSON.stringify(list).toLowerCase().includes(minimal.toLowerCase().slice(2)), JSON.stringify(out));
}, { needs: ["send_create_minimal"] });

await check("mktx_publish", async () => {
  const raw = await cast(["mktx", stranger, "0xbeef"], { key: estimator });
  const hash = await cast(["publish", raw]);
  const r = await json(["receipt", JSON.parse(hash).transactionHash ?? hash.replace(/"/g, "")]);
  assertEq(r.status, "0x1", "status");
});

await check("rpc_txpool_status", async () => {
  const s = JSON.parse(await cast(["rpc", "txpool_status"]));
  assert("pending" in s && "queued" in s, JSON.stringify(s));
});

done();
