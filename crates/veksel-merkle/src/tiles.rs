//! Tiled logs (c2sp.org/tlog-tiles): the log's hashes and entries as static,
//! immutable, cacheable files that any client, cache or mirror can serve and verify.
//!
//! A tile at level `L` and index `N` holds up to 256 hashes of tree level `8L`: the
//! `i`-th is the root of the perfect subtree of `256^L` leaves starting at leaf
//! `(256N + i) * 256^L` (level 0 holds the leaf hashes). A full tile is
//! `tile/<L>/<N>`; a partial tile of `W` hashes is `tile/<L>/<N>.p/<W>`. Entry bundles
//! `tile/entries/<N>[.p/<W>]` hold the entries of the matching level-0 tile, each as a
//! big-endian 16-bit length and the entry's bytes.
//!
//! [`TiledTree`] is the client side: it holds tiles fetched from anywhere, answers
//! proofs from them through [`HashSource`], and [`TiledTree::audit`] checks every
//! tile against the others and against a checkpoint, so one modified hash or entry
//! anywhere is found and named.

use crate::{Hash, HashSource, ProofError, leaf_hash, node_hash};
use std::collections::BTreeMap;

/// Hashes per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Longest entry an entry bundle can carry (16-bit length prefix).
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Why a tile path, a tile or an entry bundle is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// Not a tile path of this log.
    #[error("not a tile path: {0}")]
    BadPath(String),
    /// A tile or bundle has the wrong length or layout.
    #[error("malformed tile: {0}")]
    Malformed(String),
    /// A tile needed for the answer is not there.
    #[error("missing tile {0}")]
    Missing(String),
    /// A tile disagrees with the others, with its entries or with the checkpoint.
    #[error("tile {path} is inconsistent: {why}")]
    Inconsistent {
        /// Which tile (or bundle) is wrong.
        path: String,
        /// What does not match.
        why: String,
    },
}

/// Which kind of file a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TileKind {
    /// Hashes of tree level `8 * level`.
    Hashes {
        /// Tile level.
        level: u8,
    },
    /// The entries of the level-0 tile with the same index.
    Entries,
}

/// One tile or entry bundle: kind, index and width (1 to 256; 256 is a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileId {
    /// Hashes of which level, or entries.
    pub kind: TileKind,
    /// Index `N` within its level.
    pub index: u64,
    /// Number of hashes or entries, 1 to 256.
    pub width: u16,
}

/// Highest tile level: `8 * 8 = 64` tree levels cover every `u64` size.
const MAX_LEVEL: u8 = 8;

fn encode_index(mut n: u64) -> String {
    // Groups of three digits, every group but the last marked with `x`, so no
    // directory ever holds more than 1,000 names.
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn parse_index(groups: &[&str]) -> Option<u64> {
    let (last, prefix) = groups.split_last()?;
    let mut n: u64 = 0;
    for g in prefix {
        let digits = g.strip_prefix('x')?;
        n = n.checked_mul(1000)?.checked_add(three_digits(digits)?)?;
    }
    let n = n.checked_mul(1000)?.checked_add(three_digits(last)?)?;
    // One encoding per index: no leading zero groups.
    (encode_index(n) == groups.join("/")).then_some(n)
}

fn three_digits(s: &str) -> Option<u64> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl TileId {
    /// The path of this tile relative to the log's prefix, e.g. `tile/0/x001/234.p/7`.
    pub fn path(&self) -> String {
        let kind = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut p = format!("tile/{kind}/{}", encode_index(self.index));
        if u64::from(self.width) < TILE_WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a path made by [`TileId::path`]; anything else (other spellings of the
    /// same tile included) is refused.
    pub fn parse(path: &str) -> Result<Self, TileError> {
        let bad = || TileError::BadPath(path.chars().take(200).collect());
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (kind, rest) = rest.split_once('/').ok_or_else(bad)?;
        let kind = if kind == "entries" {
            TileKind::Entries
        } else {
            let level: u8 = kind
                .parse()
                .ok()
                .filter(|l: &u8| *l <= MAX_LEVEL && kind == l.to_string())
                .ok_or_else(bad)?;
            TileKind::Hashes { level }
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((index, w)) => {
                let width: u16 = w
                    .parse()
                    .ok()
                    .filter(|n: &u16| (1..256).contains(n) && n.to_string() == w)
                    .ok_or_else(bad)?;
                (index, width)
            }
            None => (rest, 256),
        };
        let groups: Vec<&str> = index_part.split('/').collect();
        if groups.len() > 7 {
            return Err(bad());
        }
        let index = parse_index(&groups).ok_or_else(bad)?;
        Ok(Self { kind, index, width })
    }

    /// The hash tile of `level` that holds tree-level-`8 * level` hash number `n`, as
    /// wide as a tree of `size` leaves makes it.
    pub fn covering(level: u8, n: u64, size: u64) -> Option<Self> {
        let available = hashes_at_level(level, size);
        if n >= available {
            return None;
        }
        let index = n / TILE_WIDTH;
        let width = (available - index * TILE_WIDTH).min(TILE_WIDTH);
        Some(Self {
            kind: TileKind::Hashes { level },
            index,
            width: width as u16,
        })
    }

    /// The entry bundle that matches this level-0 tile.
    pub fn entries(&self) -> Self {
        Self {
            kind: TileKind::Entries,
            ..*self
        }
    }
}

/// How many complete hashes tree level `8 * level` has in a tree of `size` leaves.
fn hashes_at_level(level: u8, size: u64) -> u64 {
    let shift = u32::from(level) * TILE_HEIGHT;
    if shift >= 64 { 0 } else { size >> shift }
}

/// Every tile (hash tiles of every level, and entry bundles if `with_entries`) of a
/// tree of `size` leaves: what a full audit or a mirror fetches.
pub fn tiles_for_size(size: u64, with_entries: bool) -> Vec<TileId> {
    let mut out = Vec::new();
    for level in 0..=MAX_LEVEL {
        let n = hashes_at_level(level, size);
        if n == 0 {
            break;
        }
        for index in 0..n.div_ceil(TILE_WIDTH) {
            let width = (n - index * TILE_WIDTH).min(TILE_WIDTH) as u16;
            let tile = TileId {
                kind: TileKind::Hashes { level },
                index,
                width,
            };
            out.push(tile);
            if level == 0 && with_entries {
                out.push(tile.entries());
            }
        }
    }
    out
}

/// The tiles an inclusion proof of leaf `index` in a tree of `size` needs, with the
/// level-0 tile of the leaf itself first.
pub fn tiles_for_inclusion(index: u64, size: u64) -> Result<Vec<TileId>, ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of {size}"
        )));
    }
    let recorder = Recorder::new(size);
    crate::inclusion_proof(&recorder, index, size)?;
    recorder.need(0, index);
    Ok(recorder.into_tiles())
}

/// The tiles a consistency proof between two sizes needs.
pub fn tiles_for_consistency(old_size: u64, new_size: u64) -> Result<Vec<TileId>, ProofError> {
    let recorder = Recorder::new(new_size);
    crate::consistency_proof(&recorder, old_size, new_size)?;
    // The old root too, so a client can check the proof against what it computes.
    crate::root(&recorder, old_size)?;
    Ok(recorder.into_tiles())
}

/// A hash source that answers nothing but records which tiles would be read.
struct Recorder {
    size: u64,
    needed: std::cell::RefCell<std::collections::BTreeSet<TileId>>,
}

impl Recorder {
    fn new(size: u64) -> Self {
        Self {
            size,
            needed: Default::default(),
        }
    }

    fn need(&self, level: u8, n: u64) {
        if let Some(t) = TileId::covering(level, n, self.size) {
            self.needed.borrow_mut().insert(t);
        }
    }

    fn into_tiles(self) -> Vec<TileId> {
        let mut tiles: Vec<TileId> = self.needed.into_inner().into_iter().collect();
        tiles.sort_by_key(|t| (t.kind, t.index));
        tiles
    }
}

impl HashSource for Recorder {
    fn leaf(&self, index: u64) -> Result<Hash, ProofError> {
        self.need(0, index);
        Ok([0; 32])
    }

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        tiled_subtree(self, start, end, |level, n| {
            self.need(level, n);
            Ok([0; 32])
        })
    }
}

/// The subtree root over `[start, end)`, reading a stored hash wherever the range is
/// a perfect, aligned subtree of a height that tiles store (a multiple of 8), and
/// splitting as RFC 9162 does everywhere else.
fn tiled_subtree<S: HashSource + ?Sized>(
    source: &S,
    start: u64,
    end: u64,
    stored: impl Fn(u8, u64) -> Result<Hash, ProofError> + Copy,
) -> Result<Hash, ProofError> {
    let n = end - start;
    match n {
        0 => Ok(crate::empty_root()),
        1 => source.leaf(start),
        _ => {
            if n.is_power_of_two() && start.is_multiple_of(n) {
                let height = n.trailing_zeros();
                if height.is_multiple_of(TILE_HEIGHT) {
                    return stored((height / TILE_HEIGHT) as u8, start >> height);
                }
            }
            let k = crate::split(n);
            Ok(node_hash(
                &tiled_subtree(source, start, start + k, stored)?,
                &tiled_subtree(source, start + k, end, stored)?,
            ))
        }
    }
}

/// Encodes entries as an entry bundle.
pub fn encode_entries<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).map_err(|_| {
            TileError::Malformed(format!(
                "an entry of {} bytes does not fit a bundle",
                e.len()
            ))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Splits an entry bundle into its entries.
pub fn decode_entries(bundle: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while !rest.is_empty() {
        let [hi, lo, tail @ ..] = rest else {
            return Err(TileError::Malformed("truncated entry length".into()));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if tail.len() < len {
            return Err(TileError::Malformed("truncated entry".into()));
        }
        let (entry, next) = tail.split_at(len);
        out.push(entry);
        rest = next;
        if out.len() as u64 > TILE_WIDTH {
            return Err(TileError::Malformed("more than 256 entries".into()));
        }
    }
    Ok(out)
}

/// Splits a hash tile into its hashes.
pub fn decode_hashes(tile: &[u8]) -> Result<Vec<Hash>, TileError> {
    if tile.is_empty() || !tile.len().is_multiple_of(32) || tile.len() as u64 > 32 * TILE_WIDTH {
        return Err(TileError::Malformed(format!(
            "a hash tile holds 1 to 256 hashes of 32 bytes, not {} bytes",
            tile.len()
        )));
    }
    Ok(tile
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// The Merkle root of the hashes of one tile, if they fill it: the hash one tile
/// level up.
fn full_tile_root(hashes: &[Hash]) -> Hash {
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    level.first().copied().unwrap_or_else(crate::empty_root)
}

/// Tiles of one log fetched by a client, for proofs and audits of a tree of `size`.
#[derive(Debug, Clone)]
pub struct TiledTree {
    size: u64,
    hashes: BTreeMap<(u8, u64), Vec<Hash>>,
    entries: BTreeMap<u64, Vec<Vec<u8>>>,
}

impl TiledTree {
    /// An empty set of tiles for a tree of `size` leaves.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            hashes: BTreeMap::new(),
            entries: BTreeMap::new(),
        }
    }

    /// The tree size the tiles are read for.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds a fetched tile or bundle. Its length must be what `tile` names; a wider
    /// tile than the tree needs (a later, fuller version) is cut to the width needed.
    pub fn insert(&mut self, tile: TileId, data: &[u8]) -> Result<(), TileError> {
        let width = usize::from(tile.width);
        match tile.kind {
            TileKind::Hashes { level } => {
                let hashes = decode_hashes(data)?;
                if hashes.len() != width {
                    return Err(TileError::Malformed(format!(
                        "{} holds {} hashes",
                        tile.path(),
                        hashes.len()
                    )));
                }
                self.hashes.insert((level, tile.index), hashes);
            }
            TileKind::Entries => {
                let entries = decode_entries(data)?;
                if entries.len() != width {
                    return Err(TileError::Malformed(format!(
                        "{} holds {} entries",
                        tile.path(),
                        entries.len()
                    )));
                }
                self.entries.insert(
                    tile.index,
                    entries.into_iter().map(<[u8]>::to_vec).collect(),
                );
            }
        }
        Ok(())
    }

    fn stored(&self, level: u8, n: u64) -> Result<Hash, ProofError> {
        let tile = n / TILE_WIDTH;
        self.hashes
            .get(&(level, tile))
            .and_then(|h| h.get((n % TILE_WIDTH) as usize))
            .copied()
            .ok_or_else(|| {
                let id = TileId::covering(level, n, self.size)
                    .map_or_else(|| format!("{level}/{tile}"), |t| t.path());
                ProofError::Source(TileError::Missing(id).to_string())
            })
    }

    /// Entry `index`, if its bundle was fetched.
    pub fn entry(&self, index: u64) -> Option<&[u8]> {
        self.entries
            .get(&(index / TILE_WIDTH))
            .and_then(|b| b.get((index % TILE_WIDTH) as usize))
            .map(Vec::as_slice)
    }

    /// Checks every tile held: each full tile hashes to its parent hash one level up,
    /// each entry hashes to its leaf hash, and the tree they make has `root`. The
    /// first disagreement is named; tiles needed for the root must all be present.
    pub fn audit(&self, root: &Hash) -> Result<(), TileError> {
        for ((level, index), hashes) in &self.hashes {
            if hashes.len() as u64 == TILE_WIDTH {
                let parent = index;
                let Ok(want) = self.stored(level + 1, *parent) else {
                    continue;
                };
                if full_tile_root(hashes) != want {
                    let path = TileId {
                        kind: TileKind::Hashes { level: *level },
                        index: *index,
                        width: 256,
                    }
                    .path();
                    return Err(TileError::Inconsistent {
                        path,
                        why: format!("it does not hash to hash {parent} of level {}", level + 1),
                    });
                }
            }
        }
        for (index, entries) in &self.entries {
            for (i, e) in entries.iter().enumerate() {
                let n = index * TILE_WIDTH + i as u64;
                let want = self
                    .stored(0, n)
                    .map_err(|e| TileError::Missing(e.to_string()))?;
                if leaf_hash(e) != want {
                    let path = TileId {
                        kind: TileKind::Entries,
                        index: *index,
                        width: entries.len() as u16,
                    }
                    .path();
                    return Err(TileError::Inconsistent {
                        path,
                        why: format!("entry {n} does not hash to its leaf hash"),
                    });
                }
            }
        }
        let computed = crate::root(self, self.size).map_err(|e| match e {
            ProofError::Source(m) => TileError::Missing(m),
            other => TileError::Malformed(other.to_string()),
        })?;
        if &computed != root {
            return Err(TileError::Inconsistent {
                path: "tile/*".into(),
                why: format!(
                    "the tiles make a tree of {} leaves with another root than the checkpoint's",
                    self.size
                ),
            });
        }
        Ok(())
    }
}

impl HashSource for TiledTree {
    fn leaf(&self, index: u64) -> Result<Hash, ProofError> {
        if index >= self.size {
            return Err(ProofError::Range(format!(
                "leaf {index} is beyond the tree"
            )));
        }
        self.stored(0, index)
    }

    fn subtree(&self, start: u64, end: u64) -> Result<Hash, ProofError> {
        tiled_subtree(self, start, end, |level, n| self.stored(level, n))
    }
}

/// Builds tiles as leaves are appended: the writer side of a tiled log. Holds the
/// rightmost (incomplete) tile of each level; full tiles are handed out once.
#[derive(Debug, Clone, Default)]
pub struct TileBuilder {
    size: u64,
    /// The incomplete tile of each level, lowest first.
    open: Vec<Vec<Hash>>,
}

impl TileBuilder {
    /// A builder for an empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from the open (rightmost, incomplete) tiles of a log of `size`
    /// leaves, as [`TileBuilder::open_tiles`] lists them.
    pub fn resume(size: u64, open: Vec<Vec<Hash>>) -> Result<Self, TileError> {
        let mut expected = Vec::new();
        for level in 0..=MAX_LEVEL {
            let n = hashes_at_level(level, size);
            if n == 0 {
                break;
            }
            expected.push((n % TILE_WIDTH) as usize);
        }
        let widths: Vec<usize> = open.iter().map(Vec::len).collect();
        if widths.len() > expected.len() || widths[..] != expected[..widths.len()] {
            return Err(TileError::Malformed(format!(
                "open tiles of widths {widths:?} do not fit a log of {size} leaves"
            )));
        }
        let mut open = open;
        open.resize(expected.len(), Vec::new());
        Ok(Self { size, open })
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The open tiles, lowest level first.
    pub fn open_tiles(&self) -> &[Vec<Hash>] {
        &self.open
    }

    /// Appends a leaf hash; returns every tile it changed, with its full content
    /// (partial tiles included), so the caller can store them.
    pub fn push(&mut self, leaf: Hash) -> Vec<(TileId, Vec<Hash>)> {
        let mut changed = Vec::new();
        let mut hash = leaf;
        let mut level = 0usize;
        loop {
            if self.open.len() <= level {
                self.open.push(Vec::new());
            }
            let tile = &mut self.open[level];
            tile.push(hash);
            let count = hashes_at_level(level as u8, self.size + 1);
            let index = (count - 1) / TILE_WIDTH;
            let id = TileId {
                kind: TileKind::Hashes { level: level as u8 },
                index,
                width: tile.len() as u16,
            };
            changed.push((id, tile.clone()));
            if tile.len() as u64 == TILE_WIDTH {
                hash = full_tile_root(tile);
                tile.clear();
                level += 1;
            } else {
                break;
            }
        }
        self.size += 1;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion};

    #[test]
    fn paths_follow_the_spec_and_parse_back() {
        let cases = [
            ((0, 0, 256), "tile/0/000"),
            ((0, 1_234_067, 256), "tile/0/x001/x234/067"),
            ((1, 5, 7), "tile/1/005.p/7"),
            ((2, 1000, 255), "tile/2/x001/000.p/255"),
        ];
        for ((level, index, width), path) in cases {
            let t = TileId {
                kind: TileKind::Hashes { level },
                index,
                width,
            };
            assert_eq!(t.path(), path);
            assert_eq!(TileId::parse(path).unwrap(), t);
        }
        let e = TileId::parse("tile/entries/x002/003.p/9").unwrap();
        assert_eq!((e.kind, e.index, e.width), (TileKind::Entries, 2003, 9));
        for bad in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001.p/256",
            "tile/0/001.p/0",
            "tile/0/001.p/07",
            "tile/00/001",
            "tile/9/001",
            "tile/0/../001",
            "tile/0/001/",
            "tile/0/x001",
            "tile/x/001",
            "tile/0/x001/x002/x003/x004/x005/x006/x007/000",
        ] {
            assert!(TileId::parse(bad).is_err(), "{bad}");
        }
    }

    fn log(n: u64) -> (Vec<Vec<u8>>, Vec<Hash>) {
        let entries: Vec<Vec<u8>> = (0..n).map(|i| format!("entry {i}").into_bytes()).collect();
        let hashes = entries.iter().map(|e| leaf_hash(e)).collect();
        (entries, hashes)
    }

    /// Builds every tile with the builder and loads them into a client tree.
    fn tiled(entries: &[Vec<u8>], size: u64) -> (TiledTree, BTreeMap<TileId, Vec<u8>>) {
        let mut builder = TileBuilder::new();
        let mut store: BTreeMap<(TileKind, u64), Vec<Hash>> = BTreeMap::new();
        for e in &entries[..size as usize] {
            for (id, hashes) in builder.push(leaf_hash(e)) {
                store.insert((id.kind, id.index), hashes);
            }
        }
        let mut files = BTreeMap::new();
        let mut tree = TiledTree::new(size);
        for id in tiles_for_size(size, true) {
            let data = match id.kind {
                TileKind::Hashes { .. } => {
                    let hashes = &store[&(id.kind, id.index)];
                    hashes[..usize::from(id.width)].concat()
                }
                TileKind::Entries => {
                    let start = (id.index * TILE_WIDTH) as usize;
                    let slice = &entries[start..start + usize::from(id.width)];
                    encode_entries(slice.iter().map(Vec::as_slice)).unwrap()
                }
            };
            tree.insert(id, &data).unwrap();
            files.insert(id, data);
        }
        (tree, files)
    }

    #[test]
    fn tiles_reproduce_roots_and_proofs() {
        let (entries, hashes) = log(70_000);
        for size in [1u64, 255, 256, 257, 65_535, 65_536, 65_537, 70_000] {
            let (tree, _) = tiled(&entries, size);
            let want = root(&hashes, size).unwrap();
            assert_eq!(root(&tree, size).unwrap(), want, "size {size}");
            tree.audit(&want).unwrap();
            for index in [0, size / 2, size - 1] {
                let p = inclusion_proof(&tree, index, size).unwrap();
                assert_eq!(p, inclusion_proof(&hashes, index, size).unwrap());
                verify_inclusion(&hashes[index as usize], index, size, &p, &want).unwrap();
                assert_eq!(tree.entry(index), Some(entries[index as usize].as_slice()));
            }
            if size > 3 {
                let old = size / 3;
                let p = consistency_proof(&tree, old, size).unwrap();
                assert_eq!(p, consistency_proof(&hashes, old, size).unwrap());
                verify_consistency(old, size, &root(&hashes, old).unwrap(), &want, &p).unwrap();
            }
        }
    }

    #[test]
    fn proofs_need_only_the_tiles_named() {
        let (entries, hashes) = log(70_000);
        let size = 70_000;
        let (_, files) = tiled(&entries, size);
        let want = root(&hashes, size).unwrap();
        for index in [0u64, 12_345, 69_999] {
            let needed = tiles_for_inclusion(index, size).unwrap();
            assert!(needed.len() <= 4, "{needed:?}");
            let mut tree = TiledTree::new(size);
            for id in &needed {
                tree.insert(*id, &files[id]).unwrap();
            }
            let p = inclusion_proof(&tree, index, size).unwrap();
            verify_inclusion(&hashes[index as usize], index, size, &p, &want).unwrap();
        }
        let needed = tiles_for_consistency(1000, size).unwrap();
        let mut tree = TiledTree::new(size);
        for id in &needed {
            tree.insert(*id, &files[id]).unwrap();
        }
        let p = consistency_proof(&tree, 1000, size).unwrap();
        let old_root = root(&tree, 1000).unwrap();
        verify_consistency(1000, size, &old_root, &want, &p).unwrap();
    }

    #[test]
    fn a_modified_tile_or_entry_is_found() {
        let (entries, hashes) = log(600);
        let size = 600;
        let want = root(&hashes, size).unwrap();
        let (_, files) = tiled(&entries, size);
        for (id, data) in &files {
            for offset in [0, data.len() / 2, data.len() - 1] {
                let mut tree = TiledTree::new(size);
                let mut refused = false;
                for (other, d) in &files {
                    let mut d = d.clone();
                    if other == id {
                        d[offset] ^= 1;
                    }
                    // A flipped length byte may make the bundle unreadable: also found.
                    if tree.insert(*other, &d).is_err() {
                        assert_eq!(other, id);
                        refused = true;
                    }
                }
                assert!(
                    refused || tree.audit(&want).is_err(),
                    "{} byte {offset} changed unnoticed",
                    id.path()
                );
            }
        }
        let (tree, _) = tiled(&entries, size);
        assert!(matches!(
            tree.audit(&[0; 32]),
            Err(TileError::Inconsistent { .. })
        ));
    }

    #[test]
    fn builder_resumes_from_its_open_tiles() {
        let (_, hashes) = log(66_000);
        let mut whole = TileBuilder::new();
        let mut resumed = TileBuilder::new();
        for (i, h) in hashes.iter().enumerate() {
            let a = whole.push(*h);
            if i % 9_999 == 0 {
                resumed =
                    TileBuilder::resume(resumed.size(), resumed.open_tiles().to_vec()).unwrap();
            }
            assert_eq!(resumed.push(*h), a);
        }
        assert!(TileBuilder::resume(10, vec![vec![[0; 32]; 3]]).is_err());
    }

    #[test]
    fn bundles_are_checked() {
        let b = encode_entries([b"ab".as_slice(), b"", b"xyz"]).unwrap();
        assert_eq!(decode_entries(&b).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
        assert!(decode_entries(&b[..b.len() - 1]).is_err());
        assert!(decode_entries(&[0]).is_err());
        assert!(encode_entries([vec![0u8; 70_000].as_slice()]).is_err());
        assert!(decode_hashes(&[0; 33]).is_err());
        assert!(decode_hashes(&[]).is_err());
    }
}
