//! Copies of message bodies kept for the message log in `full` mode, within a memory
//! budget shared by every exchange of the gateway.
//!
//! Each body is capped at `max_logged_body_bytes`; without a shared budget, many large
//! exchanges at once would each hold a capped copy (64 × 10 MiB × two directions) and
//! the gateway's memory would grow with its concurrency. The budget is leased in
//! [`UNIT`]-byte steps as a copy grows and returned when the copy is dropped (after the
//! record is written). A body that finds the budget in use is passed on and logged
//! with its signed digest as always, but its content is not stored; the record says
//! why, and a metric counts it. The exchange itself never waits for the budget: waiting
//! could deadlock requests that hold leases while their responses need more.
//!
//! A record keeps both bodies or neither, and a request's copy is held until its
//! response has been copied too. So request copies may not take the last quarter of
//! the budget: were they to take all of it, every response copy would fail and full
//! mode would store nothing at all while the budget sat fully lent.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of the budget.
pub const UNIT: u64 = 4096;

/// Memory lent to body copies, shared by every exchange of a gateway.
#[derive(Debug, Clone)]
pub struct CaptureBudget {
    units: Arc<Semaphore>,
    total_units: u32,
}

impl CaptureBudget {
    /// A budget of `bytes` (rounded down to [`UNIT`]s).
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT)
            .min(u64::from(u32::MAX))
            .min(Semaphore::MAX_PERMITS as u64);
        let total_units = u32::try_from(units).unwrap_or(u32::MAX);
        Self {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// The whole budget, bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_units) * UNIT
    }

    /// Bytes not lent out now.
    pub fn available_bytes(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }

    /// The most a single request copy can ever lease, bytes: all but the quarter
    /// kept for responses.
    pub fn largest_request_copy(&self) -> u64 {
        u64::from(self.total_units - self.response_reserve_units()) * UNIT
    }

    fn response_reserve_units(&self) -> u32 {
        self.total_units / 4
    }

    /// Lends `units` more, or nothing if the budget does not have them now. Request
    /// copies must leave the response reserve free; the check and the lease are not
    /// one step, so concurrent requests may dip into the reserve briefly, but never
    /// beyond the budget itself.
    fn try_lend(&self, units: u64, direction: Direction) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(units).ok()?;
        if direction == Direction::Request {
            let available = u32::try_from(self.units.available_permits()).unwrap_or(u32::MAX);
            if available.saturating_sub(units) < self.response_reserve_units() {
                return None;
            }
        }
        self.units.clone().try_acquire_many_owned(units).ok()
    }
}

/// Which body of an exchange a copy is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request: its copy waits for the response's.
    Request,
    /// The response.
    Response,
}

/// What to capture: bodies up to `up_to` bytes, within `budget`.
#[derive(Debug, Clone)]
pub struct CapturePolicy {
    /// Largest body stored, bytes.
    pub up_to: u64,
    /// The gateway's shared budget.
    pub budget: CaptureBudget,
    /// Which body this policy copies.
    pub direction: Direction,
}

impl CapturePolicy {
    /// The same policy for the exchange's response.
    pub fn for_response(&self) -> Self {
        Self {
            direction: Direction::Response,
            ..self.clone()
        }
    }
}

/// A body's content kept for the log; its memory stays leased until this is dropped.
#[derive(Debug)]
pub struct CapturedBody {
    /// The body.
    pub bytes: Vec<u8>,
    lease: Option<OwnedSemaphorePermit>,
}

/// What became of the copy of one body.
#[derive(Debug)]
pub enum Capture {
    /// None was asked for (a log mode other than `full`).
    Off,
    /// Kept.
    Kept(CapturedBody),
    /// Larger than the per-body limit.
    TooLarge,
    /// The gateway's capture budget was lent out to other exchanges.
    NoMemory,
}

impl Capture {
    /// The capture of a body that is already whole in memory.
    pub fn of_whole(bytes: &[u8], policy: Option<&CapturePolicy>) -> Self {
        let mut c = Capturing::new(policy, Some(bytes.len() as u64));
        c.push(bytes);
        c.finish()
    }
}

enum State {
    Off,
    Growing {
        buf: Vec<u8>,
        lease: Option<OwnedSemaphorePermit>,
        leased_units: u64,
    },
    TooLarge,
    NoMemory,
}

/// A copy being made as a body streams past.
pub struct Capturing {
    state: State,
    up_to: u64,
    budget: Option<CaptureBudget>,
    direction: Direction,
    /// The body's announced length. The copy leases all of it at the first byte: it
    /// gets all it needs or nothing, rather than many partial copies each holding
    /// part of the budget and all failing to grow (under contention, the common
    /// case). A body over the limit takes nothing.
    expected_len: Option<u64>,
}

impl std::fmt::Debug for Capturing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capturing")
            .field("up_to", &self.up_to)
            .finish()
    }
}

impl Capturing {
    /// Starts a copy under `policy` (none: no copy).
    pub fn new(policy: Option<&CapturePolicy>, expected_len: Option<u64>) -> Self {
        match policy {
            Some(p) if p.up_to > 0 => Self {
                state: if expected_len.is_some_and(|n| n > p.up_to) {
                    State::TooLarge
                } else {
                    State::Growing {
                        buf: Vec::new(),
                        lease: None,
                        leased_units: 0,
                    }
                },
                up_to: p.up_to,
                budget: Some(p.budget.clone()),
                direction: p.direction,
                expected_len,
            },
            _ => Self {
                state: State::Off,
                up_to: 0,
                budget: None,
                direction: Direction::Response,
                expected_len,
            },
        }
    }

    /// Records the body's announced length (a signed Content-Length).
    pub fn expect_len(&mut self, len: u64) {
        self.expected_len = Some(len);
        if len > self.up_to && matches!(self.state, State::Growing { .. }) {
            self.state = State::TooLarge;
        }
    }

    /// Adds the next piece of the body.
    pub fn push(&mut self, data: &[u8]) {
        let State::Growing {
            buf,
            lease,
            leased_units,
        } = &mut self.state
        else {
            return;
        };
        let needed = buf.len() as u64 + data.len() as u64;
        if needed > self.up_to {
            self.state = State::TooLarge;
            return;
        }
        if needed > buf.capacity() as u64 {
            let doubled = needed.max((buf.capacity() as u64 * 2).min(self.up_to));
            let target = match self.expected_len {
                Some(n) if n >= needed => n,
                _ => doubled,
            };
            let units = target.div_ceil(UNIT);
            if units > *leased_units {
                let Some(budget) = &self.budget else {
                    self.state = State::NoMemory;
                    return;
                };
                match budget.try_lend(units - *leased_units, self.direction) {
                    Some(more) => {
                        match lease {
                            Some(l) => l.merge(more),
                            None => *lease = Some(more),
                        }
                        *leased_units = units;
                    }
                    None => {
                        self.state = State::NoMemory;
                        return;
                    }
                }
            }
            // Exact growth: the lease covers the capacity, not just the length.
            let target = usize::try_from(target).unwrap_or(usize::MAX);
            buf.reserve_exact(target.saturating_sub(buf.len()));
        }
        buf.extend_from_slice(data);
    }

    /// The outcome once the body has ended.
    pub fn finish(self) -> Capture {
        match self.state {
            State::Off => Capture::Off,
            State::Growing { buf, lease, .. } => Capture::Kept(CapturedBody { bytes: buf, lease }),
            State::TooLarge => Capture::TooLarge,
            State::NoMemory => Capture::NoMemory,
        }
    }
}

/// Why a `full`-mode record holds no bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// A body was larger than `max_logged_body_bytes`.
    TooLarge,
    /// The capture budget was lent out to other exchanges.
    CaptureMemory,
}

impl NotStored {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::CaptureMemory => "capture_memory",
        }
    }
}

/// The bodies a message-log record stores, and why one is missing.
#[derive(Debug, Default)]
pub struct StoredBodies {
    /// The request body, if stored.
    pub request: Option<Vec<u8>>,
    /// The response body, if stored.
    pub response: Option<Vec<u8>>,
    /// Why the bodies are not stored, when they were asked for.
    pub note: Option<String>,
    /// Why, for the metric.
    pub not_stored: Option<NotStored>,
    /// Held for its drop: returns the copies' memory to the budget.
    _leases: Vec<OwnedSemaphorePermit>,
}

impl StoredBodies {
    /// Both bodies or neither: a record with only one of them would read as if the
    /// other had been empty. Keep the value until the record is written, so the
    /// memory stays accounted for while it is in use.
    pub fn of(request: Capture, response: Capture, up_to: u64) -> Self {
        let reason = |c: &Capture| match c {
            Capture::TooLarge => Some(NotStored::TooLarge),
            Capture::NoMemory => Some(NotStored::CaptureMemory),
            Capture::Off | Capture::Kept(_) => None,
        };
        // Off beside Kept cannot happen (one policy per exchange); counted as too large.
        let why = reason(&request)
            .or_else(|| reason(&response))
            .unwrap_or(NotStored::TooLarge);
        match (request, response) {
            (Capture::Kept(q), Capture::Kept(r)) => Self {
                request: Some(q.bytes),
                response: Some(r.bytes),
                _leases: q.lease.into_iter().chain(r.lease).collect(),
                ..Self::default()
            },
            (Capture::Off, Capture::Off) => Self::default(),
            _ => Self {
                note: Some(match why {
                    NotStored::CaptureMemory => "the bodies were not stored: the gateway's \
                         capture memory (capture_memory_bytes) was in use by other exchanges"
                        .to_owned(),
                    NotStored::TooLarge => {
                        format!("a body was larger than {up_to} bytes and was not stored")
                    }
                }),
                not_stored: Some(why),
                ..Self::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(up_to: u64, budget: u64) -> CapturePolicy {
        CapturePolicy {
            up_to,
            budget: CaptureBudget::new(budget),
            direction: Direction::Response,
        }
    }

    #[test]
    fn copies_within_the_limit_and_returns_the_lease_when_dropped() {
        let p = policy(100_000, 64 * UNIT);
        let mut c = Capturing::new(Some(&p), None);
        for _ in 0..10 {
            c.push(&[7u8; 5000]);
        }
        assert!(p.budget.available_bytes() < p.budget.total_bytes());
        let Capture::Kept(body) = c.finish() else {
            panic!("not kept")
        };
        assert_eq!(body.bytes, vec![7u8; 50_000]);
        // The lease covers what was allocated, which doubling keeps under 2× the length.
        let lent = p.budget.total_bytes() - p.budget.available_bytes();
        assert!(
            lent >= body.bytes.capacity() as u64 && lent <= 2 * 50_000 + UNIT,
            "{lent}"
        );
        drop(body);
        assert_eq!(p.budget.available_bytes(), p.budget.total_bytes());
    }

    #[test]
    fn an_announced_length_is_leased_and_allocated_once() {
        let p = policy(100_000, 64 * UNIT);
        let mut c = Capturing::new(Some(&p), None);
        c.expect_len(30_000);
        c.push(&[1u8; 10_000]);
        assert_eq!(
            p.budget.total_bytes() - p.budget.available_bytes(),
            30_000u64.div_ceil(UNIT) * UNIT
        );
        c.push(&[2u8; 15_000]);
        c.push(&[3u8; 5_000]);
        let Capture::Kept(body) = c.finish() else {
            panic!("not kept")
        };
        assert_eq!(body.bytes.capacity(), 30_000);
        assert_eq!(
            p.budget.total_bytes() - p.budget.available_bytes(),
            30_000u64.div_ceil(UNIT) * UNIT
        );
    }

    #[test]
    fn too_large_bodies_are_not_kept_and_free_their_lease() {
        let p = policy(10_000, 64 * UNIT);
        let mut c = Capturing::new(Some(&p), None);
        c.push(&[0u8; 6000]);
        c.push(&[0u8; 6000]);
        assert!(matches!(c.finish(), Capture::TooLarge));
        assert_eq!(p.budget.available_bytes(), p.budget.total_bytes());
        let c = Capturing::new(Some(&p), Some(10_001));
        assert!(matches!(c.finish(), Capture::TooLarge));
    }

    #[test]
    fn a_spent_budget_leaves_later_bodies_unstored_until_it_is_returned() {
        let p = policy(100_000, 10 * UNIT);
        let first = Capture::of_whole(&[1u8; 8 * UNIT as usize], Some(&p));
        assert!(matches!(first, Capture::Kept(_)));
        let second = Capture::of_whole(&[2u8; 4 * UNIT as usize], Some(&p));
        assert!(matches!(second, Capture::NoMemory));
        let stored = StoredBodies::of(first, second, 100_000);
        assert!(stored.request.is_none() && stored.response.is_none());
        assert_eq!(stored.not_stored, Some(NotStored::CaptureMemory));
        assert!(stored.note.unwrap().contains("capture_memory_bytes"));
        // Both dropped: the whole budget is back.
        assert_eq!(p.budget.available_bytes(), p.budget.total_bytes());
        let third = Capture::of_whole(&[3u8; 9 * UNIT as usize], Some(&p));
        assert!(matches!(third, Capture::Kept(_)));
    }

    #[test]
    fn request_copies_leave_a_quarter_of_the_budget_to_responses() {
        let response = policy(100 * UNIT, 16 * UNIT);
        let request = CapturePolicy {
            direction: Direction::Request,
            ..response.clone()
        };
        assert_eq!(request.budget.largest_request_copy(), 12 * UNIT);
        let a = Capture::of_whole(&[1u8; 8 * UNIT as usize], Some(&request));
        assert!(matches!(a, Capture::Kept(_)));
        // 8 of 16 units lent; another 5 would leave 3, under the reserve of 4.
        let b = Capture::of_whole(&[2u8; 5 * UNIT as usize], Some(&request));
        assert!(matches!(b, Capture::NoMemory));
        let c = Capture::of_whole(&[3u8; 4 * UNIT as usize], Some(&request));
        assert!(matches!(c, Capture::Kept(_)));
        // Requests now hold 12 units; responses still get the last 4.
        let d = Capture::of_whole(&[4u8; UNIT as usize], Some(&request));
        assert!(matches!(d, Capture::NoMemory));
        let e = Capture::of_whole(&[5u8; 4 * UNIT as usize], Some(&response));
        assert!(matches!(e, Capture::Kept(_)));
        assert_eq!(response.budget.available_bytes(), 0);
    }

    #[test]
    fn records_keep_both_bodies_or_say_why_not() {
        let p = policy(100, 64 * UNIT);
        let kept = || Capture::of_whole(b"abc", Some(&p));
        let both = StoredBodies::of(kept(), kept(), 100);
        assert_eq!(both.request.as_deref(), Some(&b"abc"[..]));
        assert_eq!(both.response.as_deref(), Some(&b"abc"[..]));
        assert!(both.note.is_none());
        drop(both);
        assert_eq!(p.budget.available_bytes(), p.budget.total_bytes());
        let one = StoredBodies::of(kept(), Capture::of_whole(&[0u8; 101], Some(&p)), 100);
        assert!(one.request.is_none() && one.response.is_none());
        assert_eq!(one.not_stored, Some(NotStored::TooLarge));
        assert!(one.note.unwrap().contains("larger than 100 bytes"));
        let off = StoredBodies::of(Capture::Off, Capture::Off, 100);
        assert!(off.note.is_none() && off.not_stored.is_none());
        assert!(matches!(Capture::of_whole(b"x", None), Capture::Off));
    }
}
