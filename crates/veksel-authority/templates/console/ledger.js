// Checks, in the browser, what the ledger explorer's entry page shows: from the
// entry's own bytes, the hashes of its inclusion proof and the signed checkpoint
// note, with the public keys of the witness policy. Nothing here trusts what the
// server concluded; a page whose bytes were changed fails here.
//
// RFC 9162 §2.1.3.2 (inclusion proofs), c2sp.org/signed-note and
// c2sp.org/tlog-cosignature (Ed25519 signatures), by Web Crypto.
"use strict";

(function () {
  const data = document.getElementById("proof-data");
  const out = document.getElementById("browser-check");
  const again = document.getElementById("check-again");
  if (!data || !out) {
    return;
  }

  const bytesOfBase64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const bytesOfHex = (s) => {
    if (!/^([0-9a-f]{2})*$/.test(s)) {
      throw new Error("a proof hash is not hex");
    }
    return Uint8Array.from(s.match(/../g) || [], (h) => parseInt(h, 16));
  };
  const hexOf = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const concat = (...parts) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  };
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const utf8 = (s) => new TextEncoder().encode(s);
  const sha256 = async (b) => new Uint8Array(await crypto.subtle.digest("SHA-256", b));

  // The root the audit path leads to from leaf `index` of a tree of `size`.
  async function rootOf(leaf, index, size, proof) {
    let fn = BigInt(index);
    let sn = BigInt(size) - 1n;
    if (fn > sn) {
      throw new Error("the entry is not in a tree of this size");
    }
    let r = leaf;
    for (const p of proof) {
      if (p.length !== 32) {
        throw new Error("a proof hash is not 32 bytes");
      }
      if (sn === 0n) {
        throw new Error("the proof has more hashes than the tree has levels");
      }
      if ((fn & 1n) === 1n || fn === sn) {
        r = await sha256(concat(Uint8Array.of(1), p, r));
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      } else {
        r = await sha256(concat(Uint8Array.of(1), r, p));
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    if (sn !== 0n) {
      throw new Error("the proof has fewer hashes than the tree has levels");
    }
    return r;
  }

  // A verifier key name+hexid+base64(type || key) of the expected type.
  async function keyOf(vkey, type) {
    // The key's base64 may itself contain "+": only the first two separate.
    const first = vkey.indexOf("+");
    const second = vkey.indexOf("+", first + 1);
    if (first < 0 || second < 0) {
      throw new Error("a verifier key is not name+id+key");
    }
    const name = vkey.slice(0, first);
    const id = vkey.slice(first + 1, second);
    const b64 = vkey.slice(second + 1);
    const raw = bytesOfBase64(b64 || "");
    if (raw.length !== 33 || raw[0] !== type) {
      throw new Error("verifier key of " + name + " is not an Ed25519 key of type " + type);
    }
    const public_ = raw.slice(1);
    const expectedId = (await sha256(concat(utf8(name), Uint8Array.of(0x0a, type), public_))).slice(0, 4);
    if (hexOf(expectedId) !== id.toLowerCase()) {
      throw new Error("verifier key of " + name + " has a wrong key ID");
    }
    const key = await crypto.subtle.importKey("raw", public_, { name: "Ed25519" }, false, ["verify"]);
    return { name, id: expectedId, key };
  }

  // The signature blobs of the note's lines by `key` (name and key ID).
  function signaturesBy(lines, key) {
    const found = [];
    for (const line of lines) {
      const m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m || m[1] !== key.name) {
        continue;
      }
      const blob = bytesOfBase64(m[2]);
      if (blob.length > 4 && same(blob.slice(0, 4), key.id)) {
        found.push(blob.slice(4));
      }
    }
    return found;
  }

  // Whether the witnesses that cosigned meet the policy's quorum: a witness, or a
  // group of k (any = 1, all = every) members that are witnesses or groups above it.
  function quorum(policy, cosigned) {
    const groups = new Map();
    let wanted = null;
    for (const w of policy) {
      if (w[0] === "group" && w.length >= 4) {
        groups.set(w[1], { k: w[2], members: w.slice(3) });
      } else if (w[0] === "quorum" && w.length === 2) {
        wanted = w[1];
      }
    }
    if (wanted === null) {
      throw new Error("the witness policy names no quorum");
    }
    if (wanted === "none") {
      return "the policy asks for no cosignature: the ledger's signature alone";
    }
    const met = (name, depth) => {
      if (depth > 32) {
        throw new Error("the witness policy's groups nest too deep");
      }
      const g = groups.get(name);
      if (!g) {
        return cosigned.has(name);
      }
      const count = g.members.filter((m) => met(m, depth + 1)).length;
      const k = g.k === "any" ? 1 : g.k === "all" ? g.members.length : Number(g.k);
      return Number.isInteger(k) && count >= k;
    };
    if (!met(wanted, 0)) {
      throw new Error("the witness policy's quorum " + wanted + " is not met by the cosignatures");
    }
    return "the witness policy's quorum " + wanted + " is met";
  }

  async function check() {
    const facts = [];
    const entry = bytesOfBase64(data.dataset.entry);
    const index = data.dataset.index;
    const proof = (data.dataset.proof || "").split(",").filter((h) => h !== "").map(bytesOfHex);
    const note = data.dataset.note;
    const split = note.lastIndexOf("\n\n");
    if (split < 0) {
      throw new Error("the checkpoint note has no signatures");
    }
    const body = note.slice(0, split + 1);
    const sigLines = note.slice(split + 2).split("\n").filter((l) => l !== "");
    const [origin, sizeText, rootText] = body.split("\n");
    if (!/^[0-9]+$/.test(sizeText || "")) {
      throw new Error("the checkpoint's size is not a number");
    }
    const root = bytesOfBase64(rootText || "");

    const leaf = await sha256(concat(Uint8Array.of(0), entry));
    const computed = await rootOf(leaf, index, sizeText, proof);
    if (!same(computed, root)) {
      throw new Error("the proof leads to " + hexOf(computed) + ", not to the checkpoint's root " + hexOf(root));
    }
    facts.push("entry " + index + " (leaf " + hexOf(leaf) + ") is in " + origin + " of " + sizeText + " entries, root " + hexOf(root));

    const policy = (data.dataset.policy || "").split("\n").map((l) => l.split("#")[0].trim().split(/\s+/));
    const logLine = policy.find((w) => w[0] === "log" && w.length === 2);
    if (!logLine) {
      throw new Error("the policy names no log key");
    }
    const logKey = await keyOf(logLine[1], 0x01);
    const logSignatures = signaturesBy(sigLines, logKey);
    let logVerified = false;
    for (const sig of logSignatures) {
      if (await crypto.subtle.verify({ name: "Ed25519" }, logKey.key, sig, utf8(body))) {
        logVerified = true;
      } else {
        throw new Error("the ledger's signature (" + logKey.name + ") does not verify");
      }
    }
    if (!logVerified) {
      throw new Error("the checkpoint has no signature by the ledger's key " + logKey.name);
    }
    facts.push("signed by the ledger key " + logKey.name);

    const cosigned = new Set();
    for (const w of policy.filter((w) => w[0] === "witness" && w.length === 3)) {
      const key = await keyOf(w[2], 0x04);
      const blobs = signaturesBy(sigLines, key);
      if (blobs.length === 0) {
        facts.push("no cosignature by " + key.name);
        continue;
      }
      cosigned.add(w[1]);
      for (const blob of blobs) {
        if (blob.length !== 8 + 64) {
          throw new Error("the cosignature of " + key.name + " has the wrong length");
        }
        const time = new DataView(blob.buffer, blob.byteOffset, 8).getBigUint64(0);
        const message = utf8("cosignature/v1\ntime " + time + "\n" + body);
        if (!(await crypto.subtle.verify({ name: "Ed25519" }, key.key, blob.slice(8), message))) {
          throw new Error("the cosignature of " + key.name + " does not verify");
        }
        facts.push("cosigned by " + key.name + " at " + new Date(Number(time) * 1000).toISOString());
      }
    }
    facts.push(quorum(policy, cosigned));
    return facts;
  }

  function show(ok, headline, lines) {
    out.replaceChildren();
    const p = document.createElement("p");
    p.className = ok ? "ok" : "bad";
    p.id = "browser-verdict";
    p.textContent = headline;
    out.append(p);
    const ul = document.createElement("ul");
    for (const l of lines) {
      const li = document.createElement("li");
      li.textContent = l;
      ul.append(li);
    }
    out.append(ul);
  }

  async function run() {
    try {
      const facts = await check();
      show(true, data.dataset.ok, facts);
    } catch (e) {
      show(false, data.dataset.bad + ": " + e.message, []);
    }
  }

  if (again) {
    again.addEventListener("click", run);
  }
  run();
})();
