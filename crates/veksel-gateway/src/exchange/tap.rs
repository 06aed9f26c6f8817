//! The one body step of the exchange path, used for every body in both directions:
//! the request leaving the consumer (signed at its end), the request arriving at the
//! provider (verified at its end), the response leaving the provider (signed and
//! logged at its end) and the response arriving at the consumer (verified and logged
//! at its end).
//!
//! Small bodies are read whole and finished before anything is passed on, so a
//! failure becomes a proper fault response. Larger ones stream through a [`TapBody`]
//! that hashes as it goes and finishes at the end; where the receiver must not get
//! a complete body unless the finish succeeds, the last frame waits for it.

use crate::body::{self, BodyEnd, BoxError, Finisher, GwBody, Prefetched, TapBody, TapOptions};
use crate::capture::{Capture, CapturePolicy};
use http::HeaderMap;
use std::future::Future;
use veksel_id::Fault;
use veksel_proto::descriptor::BodyDigest;

/// Bodies up to this size are read whole and finished before anything is passed on;
/// larger bodies stream, finished at their end.
pub const PREFETCH_LIMIT: usize = 256 * 1024;

/// How one body is tapped.
#[derive(Debug, Clone)]
pub(crate) struct Tap {
    /// Keep a streamed body's last frame until the finish succeeds.
    pub hold_last: bool,
    /// Largest body accepted.
    pub max_len: u64,
    /// Keep a copy for the message log.
    pub capture: Option<CapturePolicy>,
    /// The length the sender announced (Content-Length), when it did.
    pub announced_len: Option<u64>,
}

/// A body read as far as the prefetch limit.
pub(crate) enum Read<S> {
    /// It ended within the limit: its bytes, its end, and the finish's state, the
    /// finish not yet run (the caller decides when and how).
    Whole {
        /// The body.
        bytes: bytes::Bytes,
        /// Its digest, trailers and copy.
        end: BodyEnd,
        /// What the finish would have run with.
        state: S,
    },
    /// It goes on: a streaming body that runs the finish at its end.
    Streaming(GwBody),
}

/// Reads `source` up to the prefetch limit: a small body comes back whole with the
/// finish's `state` (nothing run yet); a larger one streams through a [`TapBody`]
/// that runs `finish(state, end)` at its end.
pub(crate) async fn read<S, Fut>(
    source: GwBody,
    tap: Tap,
    read_fault: impl FnOnce(BoxError) -> Fault,
    state: S,
    finish: fn(S, BodyEnd) -> Fut,
) -> Result<Read<S>, Fault>
where
    S: Send + 'static,
    Fut: Future<Output = Result<Option<HeaderMap>, Fault>> + Send + 'static,
{
    let prefetched = body::prefetch(source, PREFETCH_LIMIT)
        .await
        .map_err(read_fault)?;
    match prefetched {
        Prefetched::Complete {
            body: bytes,
            trailers,
        } => {
            let end = BodyEnd {
                digest: BodyDigest::of(&bytes),
                trailers,
                capture: Capture::of_whole(&bytes, tap.capture.as_ref()),
            };
            Ok(Read::Whole { bytes, end, state })
        }
        Prefetched::Partial { prefix, rest } => {
            let finisher: Finisher = Box::new(move |end| Box::pin(finish(state, end)));
            let streamed = TapBody::new(
                rest,
                prefix,
                TapOptions {
                    hold_last: tap.hold_last,
                    max_len: tap.max_len,
                    capture: tap.capture,
                },
                finisher,
            );
            Ok(Read::Streaming(
                match tap.announced_len {
                    Some(n) => streamed.with_exact_len(n),
                    None => streamed,
                }
                .boxed(),
            ))
        }
    }
}

/// Passes `source` on through `finish`: returns the body to forward, or the fault of
/// reading it (`read_fault`) or of finishing a small body. A streamed body's finish
/// runs at its end; its fault then aborts the stream.
pub(crate) async fn tap<F, Fut>(
    source: GwBody,
    tap: Tap,
    read_fault: impl FnOnce(BoxError) -> Fault,
    finish: F,
) -> Result<GwBody, Fault>
where
    F: FnOnce(BodyEnd) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Option<HeaderMap>, Fault>> + Send + 'static,
{
    match read(source, tap, read_fault, finish, |f, end| f(end)).await? {
        Read::Whole { bytes, end, state } => Ok(match state(end).await? {
            Some(trailers) => body::with_trailers(bytes, trailers),
            None => body::full(bytes),
        }),
        Read::Streaming(body) => Ok(body),
    }
}

/// The Content-Length a message announced.
pub(crate) fn announced_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
