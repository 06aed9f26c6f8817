//! The replay guard in memory: the request ids this gateway has accepted within their
//! time window. A request is checked here before the provider's system is called; its
//! id becomes durable with the exchange's message-log record (the record itself is
//! the claim: one record per request and side), or with its monitoring record when
//! the exchange ended in a fault, so the guard costs no commit and no row of its own.
//!
//! What holds:
//! - One gateway node: a request id is served once within its window. After a crash,
//!   ids whose records were committed are loaded back; an id accepted but not yet
//!   committed when the process died is forgotten, so a replay of it inside the
//!   window would call the provider's system again. Its first answer was never
//!   released (nothing is released before its record commits), and the replay's is
//!   logged as an exchange of its own.
//! - Several nodes sharing one database (`replay_claim: memory`, the default): a
//!   replay that reaches another node inside the window passes that node's memory,
//!   so the provider's system may see it twice; its record then fails the durable
//!   check at commit, its answer is withheld and the consumer gets
//!   `Server.ServerProxy.ReplayedMessage`. With `replay_claim: database` every id is
//!   committed before the system is called, as a commit of its own: a replay is
//!   refused before any node calls the system.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most ids kept: a window's worth at several thousand requests per second. Beyond
/// it the oldest-expiring are not evicted; new requests are refused as replays would
/// be, so the guard fails closed rather than forgetting.
const MAX_IDS: usize = 4_000_000;

/// Request ids seen and when each stops mattering (Unix ms).
#[derive(Debug)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<u128, i64>>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(MAX_IDS)
    }
}

/// What the guard says about a request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First seen: go on.
    Fresh,
    /// Seen before within its window.
    Replayed,
    /// The guard is full; refused without being a known replay.
    Full,
}

impl ReplayGuard {
    /// A guard that holds at most `capacity` live ids.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: Mutex::default(),
            capacity,
        }
    }

    /// Claims `request_id` (a UUID, checked by the codec) until `expires_at`.
    pub fn claim(&self, request_id: &str, expires_at: i64, now: i64) -> Claim {
        let Ok(id) = uuid::Uuid::parse_str(request_id) else {
            return Claim::Replayed;
        };
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get(&id.as_u128()) {
            Some(&until) if until >= now => return Claim::Replayed,
            _ => {}
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.capacity {
                return Claim::Full;
            }
        }
        seen.insert(id.as_u128(), expires_at);
        Claim::Fresh
    }

    /// Adds ids known from the database (at start, and ids another node committed).
    pub fn load(&self, ids: impl IntoIterator<Item = (String, i64)>) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, until) in ids {
            if let Ok(id) = uuid::Uuid::parse_str(&id) {
                seen.insert(id.as_u128(), until);
            }
        }
    }

    /// Forgets ids whose window has passed.
    pub fn purge(&self, now: i64) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, until| *until >= now);
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8c7b0a52-6f0e-4a4e-9d8e-1f2f3a4b5c6d";

    #[test]
    fn an_id_is_fresh_once_within_its_window() {
        let g = ReplayGuard::default();
        assert_eq!(g.claim(ID, 1_000, 0), Claim::Fresh);
        assert_eq!(g.claim(ID, 1_000, 999), Claim::Replayed);
        assert_eq!(g.claim(&ID.to_uppercase(), 1_000, 999), Claim::Replayed);
        // Past its window it matters no more (the time window refuses it anyway).
        assert_eq!(g.claim(ID, 3_000, 1_001), Claim::Fresh);
        g.purge(5_000);
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_guard_refuses_rather_than_forgets() {
        let g = ReplayGuard::with_capacity(2);
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        assert_eq!(g.claim(&ids[0], 1_000, 0), Claim::Fresh);
        assert_eq!(g.claim(&ids[1], 2_000, 0), Claim::Fresh);
        assert_eq!(g.claim(&ids[2], 2_000, 10), Claim::Full);
        // Once an id's window has passed, its place is free again.
        assert_eq!(g.claim(&ids[2], 2_000, 1_001), Claim::Fresh);
        assert_eq!(g.claim(&ids[1], 2_000, 1_001), Claim::Replayed);
    }

    #[test]
    fn ids_loaded_from_the_database_are_replays() {
        let g = ReplayGuard::default();
        g.load([(ID.to_owned(), 1_000)]);
        assert_eq!(g.claim(ID, 1_000, 10), Claim::Replayed);
        assert_eq!(g.claim("not a uuid", 1_000, 10), Claim::Replayed);
    }
}
