//! Append-only Merkle logs as RFC 9162 (Certificate Transparency 2.0) defines them:
//! leaf hash `SHA-256(0x00 || data)`, node hash `SHA-256(0x01 || left || right)`,
//! audit paths (inclusion proofs) and consistency proofs, both generated and verified.
//!
//! One implementation serves the gateways' message logs and the network's ledger.
//! Nothing here does I/O: proofs are computed over a [`HashSource`] that the caller
//! backs with memory, a database or tiles.
//!
//! [`checkpoint`] holds the C2SP signed-note checkpoint format.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod checkpoint;
pub mod tiles;
pub mod witness;

use aws_lc_rs::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof could not be made or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are out of range for the tree.
    #[error("invalid request: {0}")]
    Range(String),
    /// The proof does not lead to the expected root.
    #[error("the proof does not verify: {0}")]
    Mismatch(&'static str),
    /// The proof has the wrong number of hashes.
    #[error("the proof has the wrong length: {0}")]
    Length(&'static str),
    /// The hash source failed.
    #[error("hash source: {0}")]
    Source(String),
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: `SHA-256()` of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Where proofs get leaf hashes from. `subtree` may be overridden by stores that keep
/// interior hashes (tiles) so proofs stay logarithmic in cost.
pub trait HashSource {
    /// The hash of leaf `index`.
    fn leaf(&self, index: u64) -> Result<Hash, ProofError>;

    /// The root of the subtree over leaves `[start, end)`.
    fn subtree(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        match end - start {
            0 => Ok(empty_root()),
            1 => self.leaf(start),
            n => {
                let k = split(n);
                Ok(node_hash(
                    &self.subtree(start, start + k)?,
                    &self.subtree(start + k, end)?,
                ))
            }
        }
    }
}

impl HashSource for [Hash] {
    fn leaf(&self, index: u64) -> Result<Hash, ProofError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i))
            .copied()
            .ok_or_else(|| ProofError::Range(format!("leaf {index} does not exist")))
    }
}

impl HashSource for Vec<Hash> {
    fn leaf(&self, index: u64) -> Result<Hash, ProofError> {
        self.as_slice().leaf(index)
    }
}

/// The root hash of the first `size` leaves (RFC 9162 MTH).
pub fn root(source: &(impl HashSource + ?Sized), size: u64) -> Result<Hash, ProofError> {
    source.subtree(0, size)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(
    source: &(impl HashSource + ?Sized),
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    let mut proof = Vec::new();
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// PATH(m, D[start:end]) of RFC 9162 §2.1.3.1, appending in the order the RFC lists.
fn path(
    source: &(impl HashSource + ?Sized),
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(source, m, start, start + k, out)?;
        out.push(source.subtree(start + k, end)?);
    } else {
        path(source, m - k, start + k, end, out)?;
        out.push(source.subtree(start, start + k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `old_size` and `new_size` leaves.
pub fn consistency_proof(
    source: &(impl HashSource + ?Sized),
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::Range(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    let mut proof = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    subproof(source, old_size, 0, new_size, true, &mut proof)?;
    Ok(proof)
}

/// SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1.
fn subproof(
    source: &(impl HashSource + ?Sized),
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(source.subtree(start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(source, m, start, start + k, complete, out)?;
        out.push(source.subtree(start + k, end)?);
    } else {
        subproof(source, m - k, start + k, end, false, out)?;
        out.push(source.subtree(start, start + k)?);
    }
    Ok(())
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::Length("more hashes than the tree has levels"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::Length("fewer hashes than the tree has levels"));
    }
    if &r != root {
        return Err(ProofError::Mismatch("the computed root differs"));
    }
    Ok(())
}

/// [`verify_consistency`] over hashes as they arrive off the wire, of any length: two
/// trees of the same (non-zero) size are consistent when their roots are the same
/// bytes, whatever they are; everything else needs 32-byte hashes. This is
/// transparency-dev/merkle's convention, and what a client comparing two checkpoints
/// of one size needs before it knows the hashes are well-formed.
pub fn verify_consistency_bytes(
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[Vec<u8>],
) -> Result<(), ProofError> {
    if old_size == new_size && old_size > 0 {
        if !proof.is_empty() {
            return Err(ProofError::Length(
                "trees of equal size need an empty proof",
            ));
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch("equal sizes with different roots"))
        };
    }
    let hash = |b: &[u8]| -> Result<Hash, ProofError> {
        b.try_into()
            .map_err(|_| ProofError::Length("a hash is not 32 bytes"))
    };
    let proof = proof
        .iter()
        .map(|h| hash(h))
        .collect::<Result<Vec<_>, _>>()?;
    verify_consistency(
        old_size,
        new_size,
        &hash(old_root)?,
        &hash(new_root)?,
        &proof,
    )
}

/// Verifies a consistency proof (RFC 9162 §2.1.4.2), with the conventions of
/// transparency-dev/merkle for the edge cases: equal sizes need an empty proof and
/// equal roots; an empty old tree needs an empty proof and the empty tree's root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::Range(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::Length(
                "trees of equal size need an empty proof",
            ));
        }
        return if old_root != new_root {
            Err(ProofError::Mismatch("equal sizes with different roots"))
        } else if old_size == 0 && old_root != &empty_root() {
            Err(ProofError::Mismatch(
                "the root of an empty tree is SHA-256 of nothing",
            ))
        } else {
            Ok(())
        };
    }
    if old_size == 0 {
        return if !proof.is_empty() {
            Err(ProofError::Length("an empty tree needs an empty proof"))
        } else if old_root != &empty_root() {
            Err(ProofError::Mismatch("the old root is not the empty tree's"))
        } else {
            Ok(())
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length("empty proof"));
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::Length("more hashes than the trees need"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::Length("fewer hashes than the trees need"));
    }
    if &fr != old_root {
        return Err(ProofError::Mismatch("the computed old root differs"));
    }
    if &sr != new_root {
        return Err(ProofError::Mismatch("the computed new root differs"));
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest
/// first. Appending a leaf and computing the root take O(log n) time and space, so a
/// log can keep its current root without holding its leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, left to right (sizes are the set bits of `size`).
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the first `size` leaves of a source.
    pub fn from_source(source: &(impl HashSource + ?Sized), size: u64) -> Result<Self, ProofError> {
        let mut peaks = Vec::new();
        let mut start = 0;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if size & width != 0 {
                peaks.push(source.subtree(start, start + width)?);
                start += width;
            }
        }
        Ok(Self { size, peaks })
    }

    /// Rebuilds a frontier from stored peaks; `None` if they do not fit `size`.
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// The roots of the perfect subtrees, largest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            if let Some(left) = self.peaks.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        match self.peaks.split_last() {
            None => empty_root(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |acc, peak| node_hash(peak, &acc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of the reference tests of RFC 6962 implementations (Certificate
    /// Transparency's C++ and Go test suites).
    fn reference_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    const REFERENCE_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn reference_roots() {
        let leaves = reference_leaves();
        assert_eq!(
            hex::encode(root(&leaves, 0).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut frontier = Frontier::new();
        for (i, want) in REFERENCE_ROOTS.iter().enumerate() {
            let size = i as u64 + 1;
            assert_eq!(
                hex::encode(root(&leaves, size).unwrap()),
                *want,
                "size {size}"
            );
            frontier.push(leaves[i]);
            assert_eq!(hex::encode(frontier.root()), *want, "frontier size {size}");
            assert_eq!(Frontier::from_source(&leaves, size).unwrap(), frontier);
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let all = leaves(70);
        for size in 1..=70u64 {
            let r = root(&all, size).unwrap();
            for index in 0..size {
                let proof = inclusion_proof(&all, index, size).unwrap();
                assert!(proof.len() <= 64 - (size.leading_zeros() as usize) + 1);
                verify_inclusion(&all[index as usize], index, size, &proof, &r).unwrap();
                // Wrong leaf, wrong index, wrong size, extra or missing hash, flipped bit.
                assert!(verify_inclusion(&leaf_hash(b"x"), index, size, &proof, &r).is_err());
                if size > 1 {
                    assert!(
                        verify_inclusion(
                            &all[index as usize],
                            (index + 1) % size,
                            size,
                            &proof,
                            &r
                        )
                        .is_err()
                    );
                    let mut bad = proof.clone();
                    bad[0][7] ^= 1;
                    assert!(verify_inclusion(&all[index as usize], index, size, &bad, &r).is_err());
                    assert!(
                        verify_inclusion(&all[index as usize], index, size, &proof[1..], &r)
                            .is_err()
                    );
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(verify_inclusion(&all[index as usize], index, size, &longer, &r).is_err());
                // (A wrong size is not always detectable from the path alone: a
                // checkpoint binds the root to its size.)
            }
        }
        assert!(inclusion_proof(&all, 5, 5).is_err());
        assert!(verify_inclusion(&all[0], 3, 3, &[], &root(&all, 3).unwrap()).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_tampering_fails() {
        let all = leaves(50);
        for new in 0..=50u64 {
            let new_root = root(&all, new).unwrap();
            for old in 0..=new {
                let old_root = root(&all, old).unwrap();
                let proof = consistency_proof(&all, old, new).unwrap();
                verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
                if old > 0 && old < new {
                    let forked = node_hash(&old_root, &old_root);
                    assert!(verify_consistency(old, new, &forked, &new_root, &proof).is_err());
                    assert!(verify_consistency(old, new, &old_root, &forked, &proof).is_err());
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last][0] ^= 0x80;
                    assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                    assert!(
                        verify_consistency(old, new, &old_root, &new_root, &proof[..last]).is_err()
                    );
                    if old + 1 < new {
                        assert!(
                            verify_consistency(old + 1, new, &old_root, &new_root, &proof).is_err()
                        );
                    }
                }
            }
        }
        assert!(consistency_proof(&all, 5, 4).is_err());
        assert!(verify_consistency(3, 3, &[0; 32], &[1; 32], &[]).is_err());
        assert!(verify_consistency(0, 3, &[0; 32], &root(&all, 3).unwrap(), &[[0; 32]]).is_err());
    }

    #[test]
    fn frontier_matches_the_full_computation() {
        let all = leaves(300);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        assert!(Frontier::from_peaks(3, vec![[0; 32]]).is_none());
        for (i, l) in all.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root(&all, i as u64 + 1).unwrap());
            assert_eq!(
                Frontier::from_peaks(f.size(), f.peaks().to_vec()).as_ref(),
                Some(&f)
            );
        }
    }
}
