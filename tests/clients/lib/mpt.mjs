// An independent Merkle-Patricia proof check (EIP-1186 answers against a state root), built
// on ethers' keccak and RLP only, so a node's own trie code cannot vouch for itself.
import { decodeRlp, getBytes, hexlify, keccak256 } from "ethers";

function nibbles(bytes) {
  const out = [];
  for (const b of bytes) out.push(b >> 4, b & 15);
  return out;
}

/** The compact (hex-prefix) path of a leaf or extension node: [isLeaf, nibbles]. */
function decodePath(encoded) {
  const n = nibbles(getBytes(encoded));
  const flag = n[0];
  return [flag >= 2, flag & 1 ? n.slice(1) : n.slice(2)];
}

/**
 * Walk `proof` (hex RLP nodes) from `root` along keccak(key). Returns the value's bytes
 * (hex) or null for a proven absence; throws when the proof does not hash up to `root`.
 */
export function verifyProof(root, key, proof) {
  const path = nibbles(getBytes(keccak256(key)));
  const byHash = new Map(proof.map((n) => [keccak256(n).toLowerCase(), n]));
  let ref = root.toLowerCase(); // a 32-byte hash, or an embedded node (decoded RLP list)
  let i = 0;
  for (;;) {
    let node;
    if (typeof ref === "string") {
      if (ref === "0x") return null; // empty branch slot
      const raw = byHash.get(ref.toLowerCase());
      if (!raw) {
        // The empty trie's root proves every key absent.
        if (ref === keccak256("0x80")) return null;
        throw new Error(`proof lacks node ${ref}`);
      }
      node = decodeRlp(raw);
    } else {
      node = ref;
    }
    if (node.length === 17) {
      if (i === path.length) return node[16] === "0x" ? null : node[16];
      ref = node[path[i++]];
      if (Array.isArray(ref)) continue;
      if (ref !== "0x" && getBytes(ref).length !== 32) throw new Error("bad branch reference");
      continue;
    }
    if (node.length !== 2) throw new Error(`bad node of ${node.length} items`);
    const [isLeaf, part] = decodePath(node[0]);
    const rest = path.slice(i, i + part.length);
    if (rest.length !== part.length || rest.some((x, k) => x !== part[k])) return null; // diverges: absent
    i += part.length;
    if (isLeaf) return i === path.length ? node[1] : null;
    ref = node[1];
  }
}

/** Check an eth_getProof answer against `stateRoot`; throws on any mismatch. */
export function verifyAccountProof(stateRoot, proof) {
  const leaf = verifyProof(stateRoot, proof.address, proof.accountProof);
  const EMPTY_ROOT = keccak256("0x80");
  const EMPTY_CODE = keccak256("0x");
  const big = (x) => BigInt(x === "0x" ? 0 : x);
  if (leaf === null) {
    if (big(proof.balance) !== 0n || big(proof.nonce) !== 0n) throw new Error("absent account with a balance or nonce");
    return { exists: false };
  }
  const [nonce, balance, storageRoot, codeHash] = decodeRlp(leaf);
  if (big(nonce) !== big(proof.nonce)) throw new Error(`nonce ${proof.nonce} is not the proven ${nonce}`);
  if (big(balance) !== big(proof.balance)) throw new Error(`balance ${proof.balance} is not the proven ${balance}`);
  if (storageRoot.toLowerCase() !== proof.storageHash.toLowerCase()) throw new Error("storageHash is not the proven one");
  if (codeHash.toLowerCase() !== proof.codeHash.toLowerCase()) throw new Error("codeHash is not the proven one");
  for (const sp of proof.storageProof) {
    const slotKey = hexlify(getBytes("0x" + BigInt(sp.key).toString(16).padStart(64, "0")));
    const v = verifyProof(proof.storageHash, slotKey, sp.proof);
    const proven = v === null ? 0n : big(decodeRlp(v));
    if (proven !== big(sp.value)) throw new Error(`slot ${sp.key}: value ${sp.value} is not the proven ${proven}`);
  }
  return { exists: true, emptyStorage: storageRoot === EMPTY_ROOT, hasCode: codeHash !== EMPTY_CODE };
}
