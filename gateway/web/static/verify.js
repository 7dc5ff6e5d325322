// Verifies the receipt shown on this page, in the browser, with WebCrypto:
// the SHA-256 of the RFC 8785 canonical core, then the receipt's proof
// (its detached JWS signature, and/or its log block: an RFC 9162 inclusion
// path to the root of a signed checkpoint), then the link to the previous
// receipt. The keys come from the service's public JWKS.
"use strict";
(function () {
  const CORE = ["receipt_id", "customer_id", "seq", "idempotency_key", "entitlement_id",
    "amount_minor", "currency", "usage_description", "event_timestamp", "recorded_at",
    "balance_after_minor", "quota_remaining_minor", "previous_receipt_hash"];
  const INTEGERS = new Set(["seq", "amount_minor", "balance_after_minor"]);
  const NULLABLE_INTEGERS = new Set(["quota_remaining_minor"]);
  const GENESIS = "sha256:" + "0".repeat(64);
  const CHECKPOINT_TYP = "vexa-checkpoint+jwt";
  const CHECKPOINT_FIELDS = ["origin", "root_hash", "timestamp", "tree_size"];
  const ALGS = {
    RS256: { key: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } },
    ES256: { key: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } },
    EdDSA: { key: { name: "Ed25519" }, verify: { name: "Ed25519" } },
  };
  const encoder = new TextEncoder();

  class Failure extends Error {
    constructor(reason, detail) { super(detail); this.reason = reason; }
  }

  // -- RFC 8785 for the core's types: strings, integers below 2^53, null ----
  function canonicalValue(value, name) {
    if (value === null) return "null";
    if (typeof value === "string") return JSON.stringify(value);  // RFC 8785 3.2.2.2
    if (typeof value === "number" && Number.isSafeInteger(value)) return String(value);
    throw new Failure("invalid_field", name + " is neither a string, an integer below 2^53 nor null");
  }
  function canonicalCore(receipt) {
    // Array.prototype.sort compares UTF-16 code units, as RFC 8785 3.2.3 asks.
    const names = CORE.slice().sort();
    return "{" + names.map((n) => JSON.stringify(n) + ":" + canonicalValue(receipt[n], n)).join(",") + "}";
  }
  function checkFields(receipt) {
    const missing = CORE.concat(["receipt_hash"]).filter((n) => !(n in receipt));
    if (missing.length) throw new Failure("missing_field", "missing " + missing.join(", "));
    for (const name of CORE) {
      const value = receipt[name];
      const integer = INTEGERS.has(name) || (NULLABLE_INTEGERS.has(name) && value !== null);
      if (integer ? !Number.isSafeInteger(value) : (!NULLABLE_INTEGERS.has(name) && typeof value !== "string")) {
        throw new Failure("invalid_field", name + " has the wrong type");
      }
    }
  }

  // -- bytes ------------------------------------------------------------------
  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  function unhex(text, what) {
    if (typeof text !== "string" || !/^[0-9a-f]{64}$/.test(text)) {
      throw new Failure("invalid_field", what + " is not 64 lowercase hex digits");
    }
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }
  function unb64url(text, what) {
    if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) {
      throw new Failure("malformed_signature", what + " is not base64url");
    }
    let b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  }
  function b64url(bytes) {
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }
  function equal(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  // -- JWS (RFC 7515) with a key from the JWKS, by kid ------------------------
  async function verifyJws(headerB64, payloadB64, signatureB64, jwks) {
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(unb64url(headerB64, "the JWS header")));
    } catch (error) {
      throw error instanceof Failure ? error : new Failure("malformed_signature", "the JWS header is not JSON");
    }
    const alg = ALGS[header.alg];
    if (!alg) throw new Failure("unsupported_alg", "unsupported algorithm " + header.alg);
    const jwk = (jwks.keys || []).find((k) => k.kid === header.kid);
    if (!jwk) throw new Failure("unknown_kid", "no key " + header.kid + " in the JWKS");
    if (jwk.alg && jwk.alg !== header.alg) throw new Failure("unsupported_alg", "key " + header.kid + " is for " + jwk.alg);
    const publicJwk = {};
    for (const field of ["kty", "crv", "n", "e", "x", "y"]) if (field in jwk) publicJwk[field] = jwk[field];
    let key;
    try {
      key = await crypto.subtle.importKey("jwk", publicJwk, alg.key, false, ["verify"]);
    } catch (error) {
      throw new Failure("unsupported_alg", "this browser cannot check " + header.alg + " signatures (" + error.message + ")");
    }
    const signed = encoder.encode(headerB64 + "." + payloadB64);
    const ok = await crypto.subtle.verify(alg.verify, key, unb64url(signatureB64, "the JWS signature"), signed);
    if (!ok) throw new Failure("bad_signature", "the signature by key " + header.kid + " does not match");
    return header;
  }

  // -- RFC 9162 2.1.3.2: from a leaf and its inclusion path to the root --------
  async function nodeHash(left, right) {
    const bytes = new Uint8Array(65);
    bytes[0] = 1; bytes.set(left, 1); bytes.set(right, 33);
    return sha256(bytes);
  }
  async function rootFromPath(leaf, index, size, path) {
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
      throw new Failure("invalid_field", "log needs integers 0 <= index < tree_size");
    }
    let fn = index, sn = size - 1, result = leaf;  // numbers, not 32-bit bit operations
    for (const sibling of path) {
      if (sn === 0) throw new Failure("not_in_log", "the inclusion path is longer than the tree");
      if (fn % 2 === 1 || fn === sn) {
        result = await nodeHash(sibling, result);
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        result = await nodeHash(result, sibling);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    if (sn !== 0) throw new Failure("not_in_log", "the inclusion path is shorter than the tree");
    return result;
  }

  async function checkSignature(signature, coreBytes, jwks) {
    const parts = typeof signature === "string" ? signature.split(".") : [];
    if (parts.length !== 3 || parts[1] !== "") {
      throw new Failure("malformed_signature", "signature is not a compact JWS with a detached payload");
    }
    const header = await verifyJws(parts[0], b64url(coreBytes), parts[2], jwks);
    return "Its signature verifies with key " + header.kid + " (" + header.alg + ")";
  }

  async function checkLog(block, receiptHash, jwks) {
    if (!block || typeof block !== "object") throw new Failure("invalid_field", "log must be an object");
    const parts = typeof block.checkpoint === "string" ? block.checkpoint.split(".") : [];
    if (parts.length !== 3 || !parts[1]) throw new Failure("malformed", "log.checkpoint is not a compact JWS");
    const header = await verifyJws(parts[0], parts[1], parts[2], jwks);
    if (header.typ !== CHECKPOINT_TYP) throw new Failure("malformed", "the checkpoint's typ is " + header.typ);
    let claims;
    try { claims = JSON.parse(new TextDecoder().decode(unb64url(parts[1], "the checkpoint"))); } catch (error) {
      throw new Failure("invalid_payload", "the checkpoint's payload is not JSON");
    }
    if (!claims || Object.keys(claims).sort().join() !== CHECKPOINT_FIELDS.join()) {
      throw new Failure("invalid_payload", "the checkpoint must hold exactly " + CHECKPOINT_FIELDS.join(", "));
    }
    if (claims.tree_size !== block.tree_size) {
      throw new Failure("checkpoint_size_mismatch", "log.tree_size is " + block.tree_size + " but the checkpoint is for " + claims.tree_size + " leaves");
    }
    if (typeof claims.root_hash !== "string" || !claims.root_hash.startsWith("sha256:")) {
      throw new Failure("invalid_payload", "the checkpoint's root_hash is not sha256:<hex>");
    }
    const root = unhex(claims.root_hash.slice(7), "the checkpoint's root_hash");
    if (!Array.isArray(block.inclusion)) throw new Failure("invalid_field", "log.inclusion must be a list");
    const path = block.inclusion.map((node, i) => unhex(node, "log.inclusion[" + i + "]"));
    const leafInput = new Uint8Array(33);
    leafInput.set(unhex(receiptHash.slice(7), "receipt_hash"), 1);  // 0x00 || hash
    const computed = await rootFromPath(await sha256(leafInput), block.index, block.tree_size, path);
    if (!equal(computed, root)) {
      throw new Failure("not_in_log", "inclusion proof: the path from leaf " + block.index + " leads to another root");
    }
    return "It is leaf " + block.index + " of the log of " + claims.tree_size +
      " receipts whose checkpoint (" + claims.timestamp + ") is signed by key " + header.kid;
  }

  async function fetchJson(url, what) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Failure("unavailable", "could not load " + what + " (HTTP " + response.status + ")");
    try { return await response.json(); } catch (error) { throw new Failure("invalid_json", what + " is not JSON"); }
  }

  // The previous receipt is either whole (the owner's page: its core is hashed
  // again) or only its seq, hash and log proof (a shared page: its hash must be
  // a leaf of the signed log). Either way it must be receipt seq - 1 and its
  // hash the one this receipt links to.
  async function checkPrevious(receipt, previousUrl, jwks) {
    if (receipt.seq === 1) {
      if (receipt.previous_receipt_hash !== GENESIS) throw new Failure("chain_broken", "the first receipt must link to the genesis hash");
      return "It is the first receipt of its chain";
    }
    if (!previousUrl) return "It links to the previous receipt by hash (not shared here)";
    const previous = await fetchJson(previousUrl, "the previous receipt");
    if (!previous || previous.receipt_hash !== receipt.previous_receipt_hash || previous.seq !== receipt.seq - 1) {
      throw new Failure("chain_broken", "previous_receipt_hash is not the hash of receipt " + (receipt.seq - 1));
    }
    if (CORE.every((name) => name in previous)) {
      checkFields(previous);
      const computed = "sha256:" + hex(await sha256(encoder.encode(canonicalCore(previous))));
      if (computed !== previous.receipt_hash) {
        throw new Failure("chain_broken", "receipt " + previous.seq + "'s fields do not hash to its receipt_hash");
      }
      return "It links to receipt " + previous.seq + " by that receipt's hash";
    }
    if (!("log" in previous)) {
      return "It links to receipt " + previous.seq + " by hash; that receipt is not in a signed checkpoint yet, so its hash is not checked here";
    }
    try {
      await checkLog(previous.log, previous.receipt_hash, jwks);
    } catch (error) {
      if (error instanceof Failure) throw new Failure(error.reason, "receipt " + previous.seq + ": " + error.message);
      throw error;
    }
    return "It links to receipt " + previous.seq + ", whose hash is leaf " + previous.log.index +
      " of the signed log (its contents are not shared)";
  }

  async function verify(section, say) {
    const [receipt, jwks] = await Promise.all([
      fetchJson(section.dataset.documentUrl, "the receipt"),
      fetchJson(section.dataset.jwksUrl, "the public keys"),
    ]);
    if (!receipt || typeof receipt !== "object") throw new Failure("invalid_json", "the receipt is not an object");
    checkFields(receipt);
    const coreBytes = encoder.encode(canonicalCore(receipt));
    const computed = "sha256:" + hex(await sha256(coreBytes));
    if (computed !== receipt.receipt_hash) {
      throw new Failure("hash_mismatch", "receipt_hash is " + receipt.receipt_hash + " but the core fields hash to " + computed);
    }
    say("Its canonical core (RFC 8785) hashes to its receipt_hash");
    if (!("signature" in receipt) && !("log" in receipt)) {
      throw new Failure("missing_field", "the receipt carries neither a signature nor a log proof");
    }
    if ("signature" in receipt) say(await checkSignature(receipt.signature, coreBytes, jwks));
    if ("log" in receipt) say(await checkLog(receipt.log, receipt.receipt_hash, jwks));
    say(await checkPrevious(receipt, section.dataset.previousUrl, jwks));
  }

  function show(section, state, title, detail) {
    section.className = "verdict " + state;
    section.dataset.verdict = state;
    document.getElementById("verdict-title").textContent = title;
    document.getElementById("verdict-detail").textContent = detail;
  }

  async function main() {
    const section = document.getElementById("verdict");
    if (!section) return;
    const steps = document.getElementById("verdict-steps");
    const say = (text) => { const li = document.createElement("li"); li.textContent = text; steps.appendChild(li); };
    show(section, "pending", "Verifying…", "Checking the receipt in your browser.");
    if (!(window.crypto && crypto.subtle)) {
      show(section, "failed", "Cannot verify here", "This browser has no WebCrypto (it needs https:// or localhost).");
      return;
    }
    try {
      await verify(section, say);
      show(section, "verified", "Verified", "This receipt is authentic: the service's public keys vouch for every field shown.");
    } catch (error) {
      const reason = error instanceof Failure ? error.reason : "error";
      show(section, "failed", "Not verified (" + reason + ")", error.message);
    }
  }

  main();
})();
