//! The one writer of the message log, operational monitoring and the replay guard.
//! Concurrent writes are grouped into one transaction (group commit): each exchange
//! still waits for its own record to be committed before its response is released,
//! but many exchanges share one commit, and one fsync when commits wait for the disk.
//!
//! With SQLite the writer is a thread of its own with its own connection and cached
//! prepared statements: a batch costs one hand-off to it and one back, however many
//! statements it runs. (Through the pool's driver every statement was a hand-off to
//! the driver's worker thread and back, several per exchange: a quarter of the
//! gateway's CPU went to waking threads.) With PostgreSQL the statements go over the
//! pool's connection from the async writer task, a batch's rows of each table in one
//! multi-row statement: there every statement is a round trip.

use super::replay::{Claim, ReplayGuard};
use super::{MessageRecord, OpRecord, leaf_record};
use crate::merklelog::{self, HeadCache};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use veksel_merkle::Frontier;
use veksel_store::{Backend, Db, sqlx};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// A request id to keep until its window has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayClaim {
    /// The request id.
    pub request_id: String,
    /// Until when it matters, Unix ms.
    pub expires_at: i64,
}

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The database failed; nothing of the batch is stored.
    #[error("{0}")]
    Database(String),
    /// Another node sharing the database accepted this request id first.
    #[error("request {0} was already received by another node; replays are refused")]
    Replayed(String),
}

enum Op {
    Message {
        record: Box<MessageRecord>,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    Monitor {
        record: Box<OpRecord>,
        replay: Option<ReplayClaim>,
    },
    Claim {
        claim: ReplayClaim,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
    /// Writes monitoring records carried over from earlier batches (see [`Grouping`]).
    Flush,
    /// Ends the writer once what was queued before it is written.
    Stop,
}

/// What one operation of a batch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    Written,
    /// A replay claim another node had made (the operation wrote nothing).
    AlreadyClaimed,
}

/// Handle to the writer.
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Op>,
    /// Request ids seen within their window.
    pub replays: Arc<ReplayGuard>,
}

/// Where the writer writes.
#[derive(Debug, Clone)]
pub enum Target {
    /// An SQLite file, through a connection of the writer's own.
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Wait for the disk at each commit.
        sync_commit: bool,
    },
    /// The pool's database (PostgreSQL).
    Pool(Db),
}

impl Target {
    /// The target for a gateway's database: its own connection for SQLite.
    pub fn for_db(db: &Db, sqlite_path: Option<PathBuf>, sync_commit: bool) -> Self {
        match (db.backend(), sqlite_path) {
            (Backend::Sqlite, Some(path)) => Target::Sqlite { path, sync_commit },
            _ => Target::Pool(db.clone()),
        }
    }
}

impl LogWriter {
    /// Starts the writer. With SQLite it is a thread; its handle is returned so the
    /// gateway can wait for it at shutdown (it ends when every [`LogWriter`] is gone).
    pub fn start(target: Target) -> Result<(Self, Writer), String> {
        let (tx, rx) = mpsc::channel(8192);
        let grouping = Grouping::new(tx.downgrade());
        let writer = match target {
            Target::Sqlite { path, sync_commit } => {
                let conn = sqlite::open(&path, sync_commit)?;
                let thread = std::thread::Builder::new()
                    .name("veksel-log-writer".into())
                    .spawn(move || sqlite::run(conn, sync_commit, rx, grouping))
                    .map_err(|e| format!("message log writer thread: {e}"))?;
                Writer::Thread(thread)
            }
            Target::Pool(db) => Writer::Task(tokio::spawn(pool::run(db, rx, grouping))),
        };
        let log = Self {
            tx,
            replays: Arc::new(ReplayGuard::default()),
        };
        Ok((log, writer))
    }

    /// Writes a message-log record and waits until it is committed. The record also
    /// makes a provider's replay claim durable: a record of the same request and side
    /// already logged (by another node sharing the database) is
    /// [`WriteError::Replayed`], and nothing is written.
    pub async fn log_message(&self, record: MessageRecord) -> Result<(), WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Message {
            record: Box::new(record),
            reply,
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Queues an operational-monitoring record (with the replay claim of an exchange
    /// that wrote no message record); does not wait: monitoring must never slow the
    /// exchange down. Dropped with a warning if the queue is full.
    pub fn monitor(&self, record: OpRecord, replay: Option<ReplayClaim>) {
        let op = Op::Monitor {
            record: Box::new(record),
            replay,
        };
        if self.tx.try_send(op).is_err() {
            tracing::warn!("operational monitoring queue full; a record was dropped");
        }
    }

    /// Commits a replay claim on its own; `Ok(false)` when the id was claimed before
    /// (by this node or another sharing the database).
    pub async fn commit_claim(&self, claim: ReplayClaim) -> Result<bool, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Claim { claim, reply }).await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Claims a request id in memory (see [`super::replay`]).
    pub fn claim(&self, claim: &ReplayClaim, now: i64) -> Claim {
        self.replays.claim(&claim.request_id, claim.expires_at, now)
    }

    /// Writes what is queued, then stops the writer and waits for it.
    pub async fn stop(&self, writer: Writer) {
        let _ = self.tx.send(Op::Stop).await;
        match writer {
            Writer::Thread(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Writer::Task(task) => {
                let _ = task.await;
            }
        }
    }

    async fn send(&self, op: Op) -> Result<(), WriteError> {
        self.tx.send(op).await.map_err(|_| stopped())
    }
}

fn stopped() -> WriteError {
    WriteError::Database("the message log writer has stopped".into())
}

/// The running writer.
#[derive(Debug)]
pub enum Writer {
    /// SQLite's writer thread.
    Thread(std::thread::JoinHandle<()>),
    /// The writer task over the pool.
    Task(tokio::task::JoinHandle<()>),
}

/// How long monitoring records wait for a commit that an exchange waits for, to be
/// written with it. At one exchange at a time the next exchange's record comes within
/// a few milliseconds: its commit takes the previous one's monitoring along, instead of
/// a transaction (and a wake-up of the writer) of its own per exchange and side.
const MONITORING_WAIT: Duration = Duration::from_millis(25);

/// What [`fill`] took from the queue.
struct Filled {
    ops: Vec<Op>,
    stop: bool,
    flush: bool,
}

/// Takes the operations waiting after `first`, up to a batch, and notes whether a
/// stop (not part of the batch; nothing after it is taken) or a flush came.
fn fill(first: Op, rx: &mut mpsc::Receiver<Op>) -> Filled {
    let mut filled = Filled {
        ops: Vec::with_capacity(16),
        stop: false,
        flush: false,
    };
    let mut next = Some(first);
    while let Some(op) = next.take() {
        match op {
            Op::Stop => {
                filled.stop = true;
                return filled;
            }
            Op::Flush => filled.flush = true,
            op => filled.ops.push(op),
        }
        if filled.ops.len() < MAX_BATCH {
            next = rx.try_recv().ok();
        }
    }
    filled
}

/// What the writer does next.
enum Next {
    /// Write this batch; then stop if true.
    Write(Vec<Op>, bool),
    /// Wait for more.
    Wait,
    /// Stop: nothing is left to write.
    End,
}

/// Groups operations into the batches the writer commits. Monitoring alone is
/// carried over to the next batch that something waits for, or written when
/// [`MONITORING_WAIT`] has passed (a flush the grouping asks for), whichever is first.
struct Grouping {
    carried: Vec<Op>,
    flush_asked: bool,
    runtime: Option<tokio::runtime::Handle>,
    queue: mpsc::WeakSender<Op>,
}

impl Grouping {
    fn new(queue: mpsc::WeakSender<Op>) -> Self {
        Self {
            carried: Vec::new(),
            flush_asked: false,
            runtime: tokio::runtime::Handle::try_current().ok(),
            queue,
        }
    }

    /// The batch to write now, with whether a stop came; `None` while it is
    /// monitoring alone that can wait.
    fn next(&mut self, first: Op, rx: &mut mpsc::Receiver<Op>) -> Option<(Vec<Op>, bool)> {
        let filled = fill(first, rx);
        self.carried.extend(filled.ops);
        if filled.flush {
            self.flush_asked = false;
        }
        let now = filled.stop
            || filled.flush
            || self.carried.len() >= MAX_BATCH
            || needs_sync(&self.carried)
            || self.runtime.is_none();
        if !now {
            self.ask_for_flush();
            return None;
        }
        if self.carried.is_empty() && !filled.stop {
            return None;
        }
        Some((std::mem::take(&mut self.carried), filled.stop))
    }

    /// What to do after receiving `received` (`None`: the queue has closed).
    fn take(&mut self, received: Option<Op>, rx: &mut mpsc::Receiver<Op>) -> Next {
        let (batch, stop) = match received {
            Some(first) => match self.next(first, rx) {
                Some(next) => next,
                None => return Next::Wait,
            },
            None => (std::mem::take(&mut self.carried), true),
        };
        match batch.is_empty() {
            true => Next::End,
            false => Next::Write(batch, stop),
        }
    }

    fn ask_for_flush(&mut self) {
        let Some(runtime) = self.runtime.as_ref().filter(|_| !self.flush_asked) else {
            return;
        };
        self.flush_asked = true;
        let queue = self.queue.clone();
        // A runtime shutting down drops the task; what is carried is then written at
        // the stop, or when the queue closes.
        runtime.spawn(async move {
            tokio::time::sleep(MONITORING_WAIT).await;
            if let Some(tx) = queue.upgrade() {
                let _ = tx.send(Op::Flush).await;
            }
        });
    }
}

/// Answers each operation of a batch: its own outcome, or the batch's failure.
fn reply(batch: Vec<Op>, outcome: Result<Vec<Done>, String>) {
    let results: Vec<Result<Done, WriteError>> = match outcome {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(e) => {
            let e = WriteError::Database(format!("message log database: {e}"));
            vec![Err(e); batch.len()]
        }
    };
    for (op, result) in batch.into_iter().zip(results) {
        match op {
            Op::Message { reply, record, .. } => {
                let _ = reply.send(result.and_then(|d| match d {
                    Done::Written => Ok(()),
                    Done::AlreadyClaimed => Err(WriteError::Replayed(record.request_id)),
                }));
            }
            Op::Claim { reply, .. } => {
                let _ = reply.send(result.map(|d| d == Done::Written));
            }
            Op::Monitor { .. } => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "operational monitoring record lost");
                }
            }
            Op::Flush | Op::Stop => {}
        }
    }
}

/// True when a batch holds something an exchange waits for (a record, a claim):
/// monitoring alone need not wait for the disk, it becomes durable with the next
/// commit that does (or the next checkpoint). At one exchange at a time this takes an
/// fsync per exchange and side off the path of the next one.
fn needs_sync(batch: &[Op]) -> bool {
    batch
        .iter()
        .any(|op| matches!(op, Op::Message { .. } | Op::Claim { .. }))
}

/// The leaf and position of the next message, on a frontier.
fn next_leaf(
    frontier: &Frontier,
    m: &MessageRecord,
) -> (veksel_verify::log::LeafRecord, veksel_merkle::Hash) {
    let leaf = leaf_record(i64::try_from(frontier.size()).unwrap_or(i64::MAX), m);
    let hash = leaf.hash();
    (leaf, hash)
}

/// A record whose request another node logged first is not inserted (its unique
/// request id and side): the record itself makes a provider's replay claim durable,
/// so a successful exchange costs no replay-guard row.
/// The descriptors are stored packed (merklelog::pack_descriptors); their text
/// columns stay empty.
static INSERT_MESSAGE: LazyLock<Vec<String>> = LazyLock::new(|| MESSAGES.statements());

/// A message's record, not inserted if its request and side are logged already.
const MESSAGES: MultiRow = MultiRow {
    into: "INSERT INTO message_log (request_id, side, xroad_id, client, service, method, target, status,
    consumer_gateway, provider_gateway, request_descriptor, request_signature,
    response_descriptor, response_signature, request_body, response_body, body_note,
    request_size, response_size, created_at, logged_at, seq, leaf_hash, descriptors_z, person_id, subject_hash)
 VALUES ",
    row: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    tail: " ON CONFLICT (request_id, side) DO NOTHING",
};

static INSERT_OP: LazyLock<Vec<String>> = LazyLock::new(|| OPS.statements());

/// A monitoring record.
const OPS: MultiRow = MultiRow {
    into: "INSERT INTO op_monitoring (request_id, side, xroad_id, client, service, method, consumer_gateway,
    provider_gateway, request_in_ts, request_out_ts, response_in_ts, response_out_ts,
    request_size, response_size, status_code, succeeded, fault_code, fault_message)
 VALUES ",
    row: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    tail: "",
};

static INSERT_CLAIM: LazyLock<Vec<String>> = LazyLock::new(|| CLAIMS.statements());

/// A replay claim.
const CLAIMS: MultiRow = MultiRow {
    into: "INSERT INTO replay_guard (request_id, expires_at) VALUES ",
    row: "(?, ?)",
    tail: " ON CONFLICT (request_id) DO NOTHING",
};

/// An `INSERT` of one or more rows: `row` is one row's tuple, with `?` for each
/// parameter; they are numbered `$1, $2, …` over all rows.
struct MultiRow {
    into: &'static str,
    row: &'static str,
    tail: &'static str,
}

/// Most rows of one multi-row statement.
const MAX_ROWS: usize = 256;

/// The statement of `statements` (made by [`MultiRow::statements`]) for `rows` rows,
/// a power of two.
fn for_rows(statements: &'static LazyLock<Vec<String>>, rows: usize) -> &'static str {
    statements
        .get(rows.max(1).ilog2() as usize)
        .map_or("", String::as_str)
}

/// The statement of `statements` for one row.
fn one_row(statements: &'static LazyLock<Vec<String>>) -> &'static str {
    for_rows(statements, 1)
}

impl MultiRow {
    fn sql(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(self.into.len() + rows * (self.row.len() + 64));
        sql.push_str(self.into);
        let mut n = 0;
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            for c in self.row.chars() {
                if c == '?' {
                    n += 1;
                    sql.push('$');
                    sql.push_str(&n.to_string());
                } else {
                    sql.push(c);
                }
            }
        }
        sql.push_str(self.tail);
        sql
    }

    /// The statements for 1, 2, 4, … [`MAX_ROWS`] rows.
    fn statements(&self) -> Vec<String> {
        (0..=MAX_ROWS.ilog2()).map(|k| self.sql(1 << k)).collect()
    }

    /// Row counts to write `rows` rows in: powers of two, largest first, at most
    /// [`MAX_ROWS`]; so a database caches a few statements per table, not one for
    /// every batch size.
    fn chunks(rows: usize) -> impl Iterator<Item = usize> {
        let mut left = rows;
        std::iter::from_fn(move || {
            (left > 0).then(|| {
                let size = 1 << left.min(MAX_ROWS).ilog2();
                left -= size;
                size
            })
        })
    }
}

/// A signing chain, kept once.
const INSERT_CHAIN: &str = "INSERT INTO signing_chains (x5t, chain, first_seen) VALUES ($1, $2, $3)
 ON CONFLICT (x5t) DO NOTHING";

/// The chains this writer has committed: a record whose signers are among them costs
/// no statement for its chains.
#[derive(Debug, Default)]
struct KnownChains(std::collections::HashSet<String>);

impl KnownChains {
    /// The chains of `m` not yet known.
    fn new_ones<'a>(&self, m: &'a MessageRecord) -> impl Iterator<Item = &'a (String, String)> {
        m.signing_chains
            .iter()
            .filter(|(x5t, _)| !self.0.contains(x5t))
    }
}

/// A provider's record is its request's claim too (see `INSERT_MESSAGE`).
const LOGGED_AS_PROVIDER: &str =
    "SELECT COUNT(*) FROM message_log WHERE request_id = $1 AND side = 'provider'";

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The writer over the pool (PostgreSQL): several nodes may share the database, so
/// the head is read under a row lock in every batch.
mod pool {
    use super::*;

    pub(super) async fn run(db: Db, mut rx: mpsc::Receiver<Op>, mut grouping: Grouping) {
        let mut head = HeadCache::default();
        let mut known = KnownChains::default();
        loop {
            let (batch, stop) = match grouping.take(rx.recv().await, &mut rx) {
                Next::Write(batch, stop) => (batch, stop),
                Next::Wait => continue,
                Next::End => return,
            };
            let outcome = match write(&db, &batch, &head, &known).await {
                Ok((done, new_head, new_chains)) => {
                    if let Some((frontier, root_at)) = new_head {
                        head.committed(frontier, root_at);
                    }
                    known.0.extend(new_chains);
                    Ok(done)
                }
                Err(e) => {
                    // Rolled back: the frontier it advanced is not the head.
                    head.reset();
                    Err(e)
                }
            };
            reply(batch, outcome);
            if stop {
                return;
            }
        }
    }

    type Outcome = (Vec<Done>, Option<(Frontier, Option<i64>)>, Vec<String>);

    /// Writes a batch with a few multi-row statements: over a network every
    /// statement is a round trip, and a batch of messages and their monitoring took
    /// two per exchange. When a record is refused as already logged (by another node
    /// sharing the database), the batch is written again row by row, which tells
    /// exactly which one.
    async fn write(
        db: &Db,
        batch: &[Op],
        head: &HeadCache,
        known: &KnownChains,
    ) -> Result<Outcome, String> {
        match write_batch(db, batch, head, known, true).await? {
            Some(outcome) => Ok(outcome),
            None => write_batch(db, batch, head, known, false)
                .await?
                .ok_or_else(|| "the batch could not be written row by row".into()),
        }
    }

    async fn begin<'a>(db: &'a Db, batch: &[Op]) -> Result<Tx<'a>, String> {
        let mut tx = db.pool().begin().await.map_err(|e| e.to_string())?;
        if !needs_sync(batch) {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(tx)
    }

    /// Rows waiting for their multi-row statements.
    #[derive(Default)]
    struct Pending<'a> {
        messages: Vec<(
            veksel_verify::log::LeafRecord,
            &'a MessageRecord,
            veksel_merkle::Hash,
        )>,
        ops: Vec<&'a OpRecord>,
        claims: Vec<&'a ReplayClaim>,
    }

    impl Pending<'_> {
        /// Writes what waits; false if a message was refused as already logged.
        async fn flush(&mut self, tx: &mut Tx<'_>) -> Result<bool, String> {
            let mut rest = &self.claims[..];
            for size in MultiRow::chunks(rest.len()) {
                let (chunk, more) = rest.split_at(size);
                rest = more;
                let mut q = sqlx::query(for_rows(&INSERT_CLAIM, size));
                for c in chunk {
                    q = q.bind(&c.request_id).bind(c.expires_at);
                }
                q.execute(&mut **tx).await.map_err(|e| e.to_string())?;
            }
            let mut rest = &self.ops[..];
            for size in MultiRow::chunks(rest.len()) {
                let (chunk, more) = rest.split_at(size);
                rest = more;
                let mut q = sqlx::query(for_rows(&INSERT_OP, size));
                for r in chunk {
                    q = bind_op(q, r);
                }
                q.execute(&mut **tx).await.map_err(|e| e.to_string())?;
            }
            let mut all_in = true;
            let mut rest = &self.messages[..];
            for size in MultiRow::chunks(rest.len()) {
                let (chunk, more) = rest.split_at(size);
                rest = more;
                let mut q = sqlx::query(for_rows(&INSERT_MESSAGE, size));
                for (leaf, m, hash) in chunk {
                    q = bind_message(q, leaf, m, hash);
                }
                let done = q.execute(&mut **tx).await.map_err(|e| e.to_string())?;
                all_in &= done.rows_affected() == size as u64;
            }
            *self = Pending::default();
            Ok(all_in)
        }
    }

    /// Writes a batch in one transaction: `grouped`, with multi-row statements
    /// (`None`, and nothing written, if a message was already logged); otherwise
    /// one statement a row, a message already logged answered as such.
    async fn write_batch(
        db: &Db,
        batch: &[Op],
        head: &HeadCache,
        known: &KnownChains,
        grouped: bool,
    ) -> Result<Option<Outcome>, String> {
        let mut new_chains = Vec::new();
        let mut tx = begin(db, batch).await?;
        let mut done = Vec::with_capacity(batch.len());
        // Loaded at the first message of the batch: each message becomes the next leaf.
        let mut frontier: Option<Frontier> = None;
        let mut last_logged = 0;
        let mut pending = Pending::default();
        for op in batch {
            let d = match op {
                Op::Message { record, .. } => {
                    if frontier.is_none() {
                        let f = merklelog::load_frontier(&mut tx, db.backend(), head)
                            .await
                            .map_err(|e| e.to_string())?;
                        frontier = Some(f);
                    }
                    let Some(f) = frontier.as_mut() else {
                        return Err("no log frontier".into());
                    };
                    let (leaf, hash) = next_leaf(f, record);
                    if grouped {
                        pending.messages.push((leaf, record, hash));
                    } else {
                        let inserted = bind_message(
                            sqlx::query(one_row(&INSERT_MESSAGE)),
                            &leaf,
                            record,
                            &hash,
                        )
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| e.to_string())?
                        .rows_affected()
                            == 1;
                        if !inserted {
                            done.push(Done::AlreadyClaimed);
                            continue;
                        }
                    }
                    for (x5t, chain) in known.new_ones(record) {
                        if !new_chains.contains(x5t) {
                            sqlx::query(INSERT_CHAIN)
                                .bind(x5t)
                                .bind(chain)
                                .bind(record.logged_at)
                                .execute(&mut *tx)
                                .await
                                .map_err(|e| e.to_string())?;
                            new_chains.push(x5t.clone());
                        }
                    }
                    last_logged = last_logged.max(record.logged_at);
                    f.push(hash);
                    Done::Written
                }
                Op::Monitor { record, replay } => {
                    pending.claims.extend(replay.iter());
                    pending.ops.push(record);
                    if !grouped {
                        pending.flush(&mut tx).await?;
                    }
                    Done::Written
                }
                Op::Claim { claim: c, .. } => {
                    // A claim must see the records before it in the batch.
                    if !pending.flush(&mut tx).await? {
                        return rolled_back(tx).await;
                    }
                    match logged_as_provider(&mut tx, c).await? == 0 && claim(&mut tx, c).await? {
                        true => Done::Written,
                        false => Done::AlreadyClaimed,
                    }
                }
                Op::Flush | Op::Stop => Done::Written,
            };
            done.push(d);
        }
        if !pending.flush(&mut tx).await? {
            return rolled_back(tx).await;
        }
        let new_head = match frontier {
            Some(f) => {
                let root_at = merklelog::store_head(&mut tx, &f, last_logged, head)
                    .await
                    .map_err(|e| e.to_string())?;
                Some((f, root_at))
            }
            None => None,
        };
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(Some((done, new_head, new_chains)))
    }

    async fn rolled_back(tx: Tx<'_>) -> Result<Option<Outcome>, String> {
        tx.rollback().await.map_err(|e| e.to_string())?;
        Ok(None)
    }

    type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;
    type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

    async fn logged_as_provider(tx: &mut Tx<'_>, c: &ReplayClaim) -> Result<i64, String> {
        let (logged,): (i64,) = sqlx::query_as(LOGGED_AS_PROVIDER)
            .bind(&c.request_id)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| e.to_string())?;
        Ok(logged)
    }

    async fn claim(tx: &mut Tx<'_>, c: &ReplayClaim) -> Result<bool, String> {
        sqlx::query(one_row(&INSERT_CLAIM))
            .bind(&c.request_id)
            .bind(c.expires_at)
            .execute(&mut **tx)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(|e| e.to_string())
    }

    /// Binds a message's row to the next parameters of `q`.
    fn bind_message<'q>(
        q: Query<'q>,
        leaf: &'q veksel_verify::log::LeafRecord,
        m: &'q MessageRecord,
        hash: &veksel_merkle::Hash,
    ) -> Query<'q> {
        q.bind(&leaf.request_id)
            .bind(&leaf.side)
            .bind(&leaf.xroad_id)
            .bind(&leaf.client)
            .bind(&leaf.service)
            .bind(&leaf.method)
            .bind(&leaf.target)
            .bind(leaf.status)
            .bind(&leaf.consumer_gateway)
            .bind(&leaf.provider_gateway)
            .bind(&leaf.request_signature)
            .bind(&leaf.response_signature)
            // Borrowed, not cloned: full-mode bodies are up to max_logged_body_bytes.
            .bind(m.request_body.as_deref())
            .bind(m.response_body.as_deref())
            .bind(leaf.body_note.clone())
            .bind(leaf.request_size)
            .bind(leaf.response_size)
            .bind(leaf.created_at)
            .bind(leaf.logged_at)
            .bind(leaf.seq)
            .bind(hash.to_vec())
            .bind(merklelog::pack_descriptors(
                &m.request_descriptor,
                &m.response_descriptor,
            ))
            .bind(m.person_id.as_deref())
            .bind(m.subject_hash.as_deref())
    }

    /// Binds a monitoring row to the next parameters of `q`.
    fn bind_op<'q>(q: Query<'q>, r: &'q OpRecord) -> Query<'q> {
        q.bind(&r.request_id)
            .bind(&r.side)
            .bind(&r.xroad_id)
            .bind(&r.client)
            .bind(&r.service)
            .bind(&r.method)
            .bind(&r.consumer_gateway)
            .bind(&r.provider_gateway)
            .bind(r.request_in_ts)
            .bind(r.request_out_ts)
            .bind(r.response_in_ts)
            .bind(r.response_out_ts)
            .bind(size_i64(r.request_size))
            .bind(size_i64(r.response_size))
            .bind(r.status_code.map(i64::from))
            .bind(i64::from(r.succeeded))
            .bind(r.fault_code.clone())
            .bind(r.fault_message.clone())
    }
}

/// The writer over SQLite: a thread with its own connection, the only one that
/// appends to the log, so it keeps the head in memory between batches.
mod sqlite {
    use super::*;
    use rusqlite::{Connection, TransactionBehavior, params};

    pub(super) fn open(path: &std::path::Path, sync_commit: bool) -> Result<Connection, String> {
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let synchronous = if sync_commit { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;
             PRAGMA synchronous={synchronous};"
        ))
        .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(conn)
    }

    pub(super) fn run(
        mut conn: Connection,
        sync_commit: bool,
        mut rx: mpsc::Receiver<Op>,
        mut grouping: Grouping,
    ) {
        let mut head = HeadCache::default();
        let mut known = KnownChains::default();
        loop {
            let (batch, stop) = match grouping.take(rx.blocking_recv(), &mut rx) {
                Next::Write(batch, stop) => (batch, stop),
                Next::Wait => continue,
                Next::End => return,
            };
            // Monitoring alone commits without waiting for the disk (see needs_sync).
            let relax = sync_commit && !needs_sync(&batch);
            if relax {
                let _ = conn.execute_batch("PRAGMA synchronous=NORMAL");
            }
            let result = write(&mut conn, &batch, &head, &known);
            if relax {
                let _ = conn.execute_batch("PRAGMA synchronous=FULL");
            }
            let outcome = match result {
                Ok((done, new_head, new_chains)) => {
                    if let Some((frontier, root_at)) = new_head {
                        head.committed(frontier, root_at);
                    }
                    known.0.extend(new_chains);
                    Ok(done)
                }
                Err(e) => {
                    head.reset();
                    Err(e.to_string())
                }
            };
            reply(batch, outcome);
            if stop {
                return;
            }
        }
    }

    type Outcome = (Vec<Done>, Option<(Frontier, Option<i64>)>, Vec<String>);

    fn write(
        conn: &mut Connection,
        batch: &[Op],
        head: &HeadCache,
        known: &KnownChains,
    ) -> Result<Outcome, rusqlite::Error> {
        let mut new_chains = Vec::new();
        // Immediate: the write lock at the start, so the commit cannot be refused for
        // a lock another connection took in between.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut done = Vec::with_capacity(batch.len());
        let mut frontier: Option<Frontier> = None;
        let mut last_logged = 0;
        for op in batch {
            let d = match op {
                Op::Message { record, .. } => {
                    let f = match frontier.as_mut() {
                        Some(f) => f,
                        None => frontier.insert(load_frontier(&tx, head)?),
                    };
                    let (leaf, hash) = next_leaf(f, record);
                    if !insert_message(&tx, &leaf, record, &hash)? {
                        done.push(Done::AlreadyClaimed);
                        continue;
                    }
                    for (x5t, chain) in known.new_ones(record) {
                        if !new_chains.contains(x5t) {
                            tx.prepare_cached(INSERT_CHAIN)?.execute(params![
                                x5t,
                                chain,
                                record.logged_at
                            ])?;
                            new_chains.push(x5t.clone());
                        }
                    }
                    last_logged = last_logged.max(record.logged_at);
                    f.push(hash);
                    Done::Written
                }
                Op::Monitor { record, replay } => {
                    if let Some(c) = replay {
                        claim(&tx, c)?;
                    }
                    insert_op(&tx, record)?;
                    Done::Written
                }
                Op::Claim { claim: c, .. } => {
                    let logged: i64 = tx
                        .prepare_cached(LOGGED_AS_PROVIDER)?
                        .query_row(params![c.request_id], |r| r.get(0))?;
                    match logged == 0 && claim(&tx, c)? {
                        true => Done::Written,
                        false => Done::AlreadyClaimed,
                    }
                }
                Op::Flush | Op::Stop => Done::Written,
            };
            done.push(d);
        }
        let new_head = match frontier {
            Some(f) => {
                let root_at = store_head(&tx, &f, last_logged, head)?;
                Some((f, root_at))
            }
            None => None,
        };
        tx.commit()?;
        Ok((done, new_head, new_chains))
    }

    fn claim(tx: &rusqlite::Transaction<'_>, c: &ReplayClaim) -> rusqlite::Result<bool> {
        let mut stmt = tx.prepare_cached(one_row(&INSERT_CLAIM))?;
        Ok(stmt.execute(params![c.request_id, c.expires_at])? == 1)
    }

    fn load_frontier(
        tx: &rusqlite::Transaction<'_>,
        head: &HeadCache,
    ) -> rusqlite::Result<Frontier> {
        if let Some(f) = head.frontier() {
            return Ok(f.clone());
        }
        tx.prepare_cached(merklelog::CREATE_HEAD)?.execute(params![
            veksel_merkle::empty_root().to_vec(),
            Vec::<u8>::new()
        ])?;
        let (size, peaks): (i64, Vec<u8>) = tx
            .prepare_cached(merklelog::SELECT_HEAD)?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        merklelog::frontier_from_row(size, &peaks)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    }

    fn store_head(
        tx: &rusqlite::Transaction<'_>,
        f: &Frontier,
        now_ms: i64,
        head: &HeadCache,
    ) -> rusqlite::Result<Option<i64>> {
        let size = size_i64(f.size());
        let root = f.root().to_vec();
        tx.prepare_cached(merklelog::STORE_HEAD)?.execute(params![
            size,
            root,
            merklelog::encode_peaks(f),
            now_ms
        ])?;
        let last = match head.last_root_at() {
            Some(at) => Some(at),
            None => tx
                .prepare_cached(merklelog::LAST_ROOT_AT)?
                .query_row([], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?,
        };
        if merklelog::root_due(last, now_ms) {
            tx.prepare_cached(merklelog::KEEP_ROOT)?
                .execute(params![size, root, now_ms])?;
            return Ok(Some(now_ms));
        }
        Ok(last)
    }

    fn insert_message(
        tx: &rusqlite::Transaction<'_>,
        leaf: &veksel_verify::log::LeafRecord,
        m: &MessageRecord,
        hash: &veksel_merkle::Hash,
    ) -> rusqlite::Result<bool> {
        let inserted = tx
            .prepare_cached(one_row(&INSERT_MESSAGE))?
            .execute(params![
                leaf.request_id,
                leaf.side,
                leaf.xroad_id,
                leaf.client,
                leaf.service,
                leaf.method,
                leaf.target,
                leaf.status,
                leaf.consumer_gateway,
                leaf.provider_gateway,
                leaf.request_signature,
                leaf.response_signature,
                m.request_body.as_deref(),
                m.response_body.as_deref(),
                leaf.body_note,
                leaf.request_size,
                leaf.response_size,
                leaf.created_at,
                leaf.logged_at,
                leaf.seq,
                &hash[..],
                merklelog::pack_descriptors(&m.request_descriptor, &m.response_descriptor),
                m.person_id.as_deref(),
                m.subject_hash.as_deref(),
            ])?;
        Ok(inserted == 1)
    }

    fn insert_op(tx: &rusqlite::Transaction<'_>, r: &OpRecord) -> rusqlite::Result<()> {
        tx.prepare_cached(one_row(&INSERT_OP))?.execute(params![
            r.request_id,
            r.side,
            r.xroad_id,
            r.client,
            r.service,
            r.method,
            r.consumer_gateway,
            r.provider_gateway,
            r.request_in_ts,
            r.request_out_ts,
            r.response_in_ts,
            r.response_out_ts,
            size_i64(r.request_size),
            size_i64(r.response_size),
            r.status_code.map(i64::from),
            i64::from(r.succeeded),
            r.fault_code,
            r.fault_message,
        ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitoring(request_id: &str) -> Op {
        Op::Monitor {
            record: Box::new(OpRecord {
                request_id: request_id.into(),
                side: "provider".into(),
                xroad_id: String::new(),
                client: String::new(),
                service: String::new(),
                method: "GET".into(),
                consumer_gateway: String::new(),
                provider_gateway: String::new(),
                request_in_ts: 0,
                request_out_ts: None,
                response_in_ts: None,
                response_out_ts: 0,
                request_size: 0,
                response_size: 0,
                status_code: None,
                succeeded: true,
                fault_code: None,
                fault_message: None,
            }),
            replay: None,
        }
    }

    fn claim(request_id: &str) -> Op {
        let (reply, _) = oneshot::channel();
        Op::Claim {
            claim: ReplayClaim {
                request_id: request_id.into(),
                expires_at: 0,
            },
            reply,
        }
    }

    fn ids(batch: &[Op]) -> Vec<&str> {
        batch
            .iter()
            .map(|op| match op {
                Op::Monitor { record, .. } => record.request_id.as_str(),
                Op::Claim { claim, .. } => claim.request_id.as_str(),
                _ => "other",
            })
            .collect()
    }

    #[tokio::test]
    async fn monitoring_rides_with_the_next_commit_or_is_flushed() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut grouping = Grouping::new(tx.downgrade());

        // Monitoring alone waits; the next operation that needs a commit takes it along,
        // in the order they came.
        assert!(grouping.next(monitoring("a"), &mut rx).is_none());
        let (batch, stop) = grouping.next(claim("b"), &mut rx).unwrap();
        assert_eq!((ids(&batch), stop), (vec!["a", "b"], false));

        // With nothing after it, the flush the grouping asked for writes it.
        assert!(grouping.next(monitoring("c"), &mut rx).is_none());
        let flush = rx.recv().await.unwrap();
        assert!(matches!(flush, Op::Flush));
        let (batch, _) = grouping.next(flush, &mut rx).unwrap();
        assert_eq!(ids(&batch), vec!["c"]);

        // A stop writes what is carried; so does the queue closing.
        assert!(grouping.next(monitoring("d"), &mut rx).is_none());
        let (batch, stop) = grouping.next(Op::Stop, &mut rx).unwrap();
        assert_eq!((ids(&batch), stop), (vec!["d"], true));
        assert!(grouping.next(monitoring("e"), &mut rx).is_none());
        assert!(matches!(
            grouping.take(None, &mut rx),
            Next::Write(batch, true) if ids(&batch) == vec!["e"]
        ));
        assert!(matches!(grouping.take(None, &mut rx), Next::End));
    }

    #[test]
    fn multi_row_statements_number_their_parameters_and_come_in_few_sizes() {
        assert_eq!(
            CLAIMS.sql(3),
            "INSERT INTO replay_guard (request_id, expires_at) VALUES ($1, $2), ($3, $4), ($5, $6) ON CONFLICT (request_id) DO NOTHING"
        );
        // The literal columns of a message row stay literal; the numbering runs on.
        let two = MESSAGES.sql(2);
        assert!(two.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '', $11, '', $12,"));
        assert!(
            two.contains("$24), ($25, $26,")
                && two.ends_with("$48) ON CONFLICT (request_id, side) DO NOTHING")
        );
        assert_eq!(one_row(&INSERT_OP).matches('$').count(), 18);
        for (rows, chunks) in [
            (0, vec![]),
            (1, vec![1]),
            (30, vec![16, 8, 4, 2]),
            (256, vec![256]),
            (600, vec![256, 256, 64, 16, 8]),
        ] {
            assert_eq!(MultiRow::chunks(rows).collect::<Vec<_>>(), chunks, "{rows}");
        }
        // Every size a batch is cut into has its statement.
        for size in MultiRow::chunks(MAX_BATCH * 2) {
            assert_eq!(
                for_rows(&INSERT_CLAIM, size).matches("), (").count() + 1,
                size,
                "{size}"
            );
        }
    }

    #[test]
    fn without_a_runtime_monitoring_is_written_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut grouping = Grouping::new(tx.downgrade());
        let (batch, stop) = grouping.next(monitoring("a"), &mut rx).unwrap();
        assert_eq!((ids(&batch), stop), (vec!["a"], false));
    }
}
