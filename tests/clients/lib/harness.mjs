// What every client script shares: the node it drives (from the environment the pytest
// wrapper sets), the development keys, and `check(name, fn)`, which runs one case with a
// time bound and prints one JSON line {"name", "ok", "detail"} (the wrapper reads them).
export const RPC_URL = process.env.MOTUS_RPC_URL;
export const WS_URL = process.env.MOTUS_WS_URL;
export const CHAIN_ID = Number(process.env.MOTUS_CHAIN_ID || 7077);
export const DEV_KEYS = (process.env.MOTUS_DEV_KEYS || "").split(",").filter(Boolean).map((k) => (k.startsWith("0x") ? k : "0x" + k));
const CASE_TIMEOUT_MS = Number(process.env.MOTUS_CASE_TIMEOUT_MS || 20000);

if (!RPC_URL || DEV_KEYS.length < 6) {
  console.error("set MOTUS_RPC_URL, MOTUS_WS_URL and MOTUS_DEV_KEYS (run through pytest: tests/clients/test_*.py)");
  process.exit(2);
}

const results = new Map();

// Client libraries log and throw from their own timers (ethers retries a failed filter
// forever, printing each failure): keep stdout for result lines only, print each distinct
// background error once, and never let one end the run.
const seenErrors = new Set();
for (const fn of ["log", "info", "warn", "error", "debug"]) {
  console[fn] = (...args) => {
    const line = args.map((a) => (a instanceof Error ? a.message : String(a))).join(" ").slice(0, 300);
    if (!seenErrors.has(line)) {
      seenErrors.add(line);
      process.stderr.write(line + "\n");
    }
  };
}
process.on("unhandledRejection", (e) => console.error("background error:", e instanceof Error ? e.message : e));
process.on("uncaughtException", (e) => console.error("background exception:", e instanceof Error ? e.message : e));

function emit(name, ok, detail) {
  results.set(name, ok);
  process.stdout.write(JSON.stringify({ name, ok, detail: String(detail ?? "").slice(0, 2000) }) + "\n");
}

/** A case's failure message: the client's own error, with the RPC error it carries. */
export function describe(e) {
  if (!(e instanceof Error)) return typeof e === "object" ? JSON.stringify(e) : String(e);
  const parts = [e.shortMessage || e.message];
  if (e.details) parts.push(`details: ${e.details}`); // viem: the node's own message
  const rpcErr = e.info?.error || e.error; // ethers: the JSON-RPC error object
  if (rpcErr && rpcErr !== e && (rpcErr.message || rpcErr.code)) parts.push(`rpc: ${rpcErr.code ?? ""} ${rpcErr.message ?? ""}`);
  return parts.join(" | ");
}

/**
 * Run one named case. `needs` lists cases that must have passed first; when one did not,
 * this case fails at once saying so (instead of a confusing second-order error).
 * Returns the case's value (or undefined when it failed).
 */
export async function check(name, fn, { needs = [], timeoutMs = CASE_TIMEOUT_MS } = {}) {
  const missing = needs.filter((n) => results.get(n) !== true);
  if (missing.length) {
    emit(name, false, `not run: depends on failed case(s) ${missing.join(", ")}`);
    return undefined;
  }
  let timer;
  try {
    const value = await Promise.race([
      Promise.resolve().then(fn),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    emit(name, true, typeof value === "string" ? value : "");
    return value ?? true;
  } catch (e) {
    emit(name, false, describe(e));
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

export function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

export function assertEq(actual, expected, msg) {
  if (actual !== expected && String(actual) !== String(expected)) {
    throw new Error(`${msg}: expected ${String(expected)}, got ${String(actual)}`);
  }
}

/** Expect `fn` to throw; returns the error for the caller to inspect. */
export async function rejects(fn, msg) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  throw new Error(`expected a failure: ${msg}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value, at most `ms` milliseconds. */
export async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A plain JSON-RPC call (for methods a client library has no wrapper for). */
export async function rawRpc(method, params = []) {
  const res = await fetch(RPC_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
  });
  const doc = await res.json();
  if (doc.error) {
    const e = new Error(`${method}: ${doc.error.code} ${doc.error.message}`);
    e.rpc = doc.error;
    throw e;
  }
  return doc.result;
}

/** Print the closing line; exit non-zero when a case failed (the wrapper reads the lines). */
export function done() {
  const failed = [...results].filter(([, ok]) => !ok).map(([n]) => n);
  process.stderr.write(`${results.size - failed.length} passed, ${failed.length} failed\n`);
  process.exit(failed.length ? 1 : 0);
}
