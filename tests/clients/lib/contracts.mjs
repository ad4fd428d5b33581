// The suite's contracts (../contracts/*.sol), compiled once with solc-js and cached
// outside git under node_modules/.cache/motus-contracts/<sha256 of sources + compiler>.json.
//   import { contracts } from "./lib/contracts.mjs"   -> { Token: {abi, bytecode}, ... }
//   node lib/contracts.mjs                            -> prints the cache file's path
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..");
const SOURCES = path.join(ROOT, "contracts");
const CACHE = path.join(ROOT, "node_modules", ".cache", "motus-contracts");
const require = createRequire(import.meta.url);

const SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function sources() {
  const out = {};
  for (const f of fs.readdirSync(SOURCES).filter((f) => f.endsWith(".sol")).sort()) {
    out[f] = { content: fs.readFileSync(path.join(SOURCES, f), "utf8") };
  }
  return out;
}

function cacheKey(srcs) {
  const h = createHash("sha256");
  h.update(require("solc/package.json").version);
  h.update(require("@openzeppelin/contracts/package.json").version);
  h.update(JSON.stringify(SETTINGS));
  for (const [name, { content }] of Object.entries(srcs)) h.update(name).update("\0").update(content);
  return h.digest("hex").slice(0, 32);
}

function compile(srcs) {
  const solc = require("solc");
  const findImports = (p) => {
    try {
      return { contents: fs.readFileSync(require.resolve(p), "utf8") };
    } catch (e) {
      return { error: `import ${p}: ${e.message}` };
    }
  };
  const input = { language: "Solidity", sources: srcs, settings: SETTINGS };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length) throw new Error(errors.map((e) => e.formattedMessage).join("\n"));
  const result = { compiler: "solc-js " + solc.version() };
  for (const file of Object.keys(srcs)) {
    for (const [name, c] of Object.entries(out.contracts[file])) {
      result[name] = {
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      };
    }
  }
  return result;
}

/** Path of the compiled JSON, compiling first when the cache has no entry for these sources. */
export function contractsPath() {
  const srcs = sources();
  const file = path.join(CACHE, cacheKey(srcs) + ".json");
  if (!fs.existsSync(file)) {
    const built = compile(srcs);
    fs.mkdirSync(CACHE, { recursive: true });
    // Two test workers may compile at once: write aside, then rename (atomic).
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(built));
    fs.renameSync(tmp, file);
  }
  return file;
}

export function contracts() {
  return JSON.parse(fs.readFileSync(contractsPath(), "utf8"));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(contractsPath());
}
