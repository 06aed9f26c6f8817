//! Streaming bodies that hash as they pass and finish with an asynchronous step.
//!
//! A [`TapBody`] forwards data frames while feeding them to a SHA-256 hasher, never
//! holding more than one frame. When the source ends it runs a finisher with the
//! digest and the source's trailers: the finisher signs (sender side) or verifies and
//! writes the message log (receiver side), and returns the trailers to emit. In
//! *hold-last* mode the last data frame is kept back until the finisher succeeds, so
//! the receiver of a streamed body never holds the complete body unless the signature
//! verified and the exchange was logged; a failing finisher turns into a body error,
//! which aborts the stream.

use crate::capture::{Capture, CapturePolicy, Capturing};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use veksel_id::Fault;
use veksel_proto::descriptor::{BodyDigest, BodyHasher};

/// Boxed error of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used throughout the gateway.
pub type GwBody = UnsyncBoxBody<Bytes, BoxError>;

/// Turns any body into a [`GwBody`].
pub fn boxed<B>(b: B) -> GwBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// A hyper request or response body as a [`GwBody`].
pub fn incoming(b: hyper::body::Incoming) -> GwBody {
    b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
}

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> GwBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of known bytes followed by trailers.
pub fn with_trailers(bytes: Bytes, trailers: HeaderMap) -> GwBody {
    // No empty DATA frame: HTTP/2 peers count them as a flood (h2 answers a stream of
    // them with GOAWAY "too_many_data_frames"), and every GET would send one.
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::with_capacity(2);
    if !bytes.is_empty() {
        frames.push(Ok(Frame::data(bytes)));
    }
    frames.push(Ok(Frame::trailers(trailers)));
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

/// A body of known bytes held back until `release` resolves, which runs at once on a
/// task of its own (committing a record while the message's head travels). It
/// yields whether the bytes may go and the trailers that end the body: the bytes and
/// then the trailers, or the trailers alone.
pub fn released_by<F>(bytes: Bytes, release: F) -> GwBody
where
    F: Future<Output = (bool, HeaderMap)> + Send + 'static,
{
    let pending = tokio::spawn(release);
    let frames = futures_util::stream::once(async move {
        let (go, trailers) = pending.await.map_err(|e| -> BoxError { Box::new(e) })?;
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = Vec::with_capacity(2);
        if go && !bytes.is_empty() {
            frames.push(Ok(Frame::data(bytes)));
        }
        frames.push(Ok(Frame::trailers(trailers)));
        Ok::<_, BoxError>(futures_util::stream::iter(frames))
    })
    .map(|r| match r {
        Ok(frames) => frames.left_stream(),
        Err(e) => futures_util::stream::iter(vec![Err(e)]).right_stream(),
    })
    .flatten();
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// An empty body.
pub fn empty() -> GwBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

impl TapBody {
    /// Boxes the body as a [`GwBody`].
    pub fn boxed(self) -> GwBody {
        // Deliberately not the generic `boxed`: its `Into<BoxError>` bound trips the
        // compiler's higher-ranked lifetime check when proxies' futures must be Send.
        BodyExt::boxed_unsync(self)
    }
}

/// Why an information system's request body failed, as [`ClientBody`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBodyFailure {
    /// The body was malformed or ended before its announced end (bad chunk, closed
    /// connection).
    Malformed(String),
    /// No data came for the allowed time.
    Stalled(std::time::Duration),
}

/// An information system's request body, watched: a pause longer than `idle` fails
/// it, and how it failed is kept for the exchange to report as the client's fault
/// (otherwise it looks like the peer connection broke).
pub struct ClientBody {
    inner: GwBody,
    idle: std::time::Duration,
    /// Made at the first wait (most bodies arrive whole and never need one).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// True while the last poll found no data: the idle time runs only then, not
    /// while the body sits unread because the peer is slow to take it.
    waiting: bool,
    failure: std::sync::Arc<std::sync::OnceLock<ClientBodyFailure>>,
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("idle", &self.idle)
            .finish()
    }
}

impl ClientBody {
    /// Watches `inner`; the returned cell holds the failure once there is one.
    pub fn new(
        inner: GwBody,
        idle: std::time::Duration,
    ) -> (Self, std::sync::Arc<std::sync::OnceLock<ClientBodyFailure>>) {
        let failure = std::sync::Arc::new(std::sync::OnceLock::new());
        let body = Self {
            inner,
            idle,
            timer: None,
            waiting: false,
            failure: failure.clone(),
        };
        (body, failure)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let why = crate::error_chain(e.as_ref());
                let _ = this.failure.set(ClientBodyFailure::Malformed(why));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        let _ = this.failure.set(ClientBodyFailure::Stalled(this.idle));
                        Poll::Ready(Some(Err(Box::new(StreamError(format!(
                            "no request body data for {} s",
                            this.idle.as_secs()
                        ))))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An error raised inside a body stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// What the finisher learns when the source body ends.
#[derive(Debug)]
pub struct BodyEnd {
    /// Digest and length of everything that passed.
    pub digest: BodyDigest,
    /// Trailers the source sent, if any.
    pub trailers: Option<HeaderMap>,
    /// The copy of the body kept for the message log, or why there is none.
    pub capture: Capture,
}

/// The asynchronous end step: returns trailers to emit, or an error that aborts the stream.
pub type Finisher = Box<dyn FnOnce(BodyEnd) -> FinisherFuture + Send>;

/// What a finisher eventually yields: trailers to emit, or the fault that aborts the
/// stream (the body's error is the fault itself, so whoever reads the body learns why).
pub type FinisherFuture = Pin<Box<dyn Future<Output = Result<Option<HeaderMap>, Fault>> + Send>>;

/// Options of a [`TapBody`].
#[derive(Debug, Clone)]
pub struct TapOptions {
    /// Keep the last data frame until the finisher succeeds.
    pub hold_last: bool,
    /// Refuse bodies longer than this.
    pub max_len: u64,
    /// Keep a copy of the body for the message log (none: no copy).
    pub capture: Option<CapturePolicy>,
}

/// See the module documentation.
pub struct TapBody {
    inner: GwBody,
    prefix: VecDeque<Bytes>,
    hasher: Option<BodyHasher>,
    trailers: Option<HeaderMap>,
    held: Option<Bytes>,
    out: VecDeque<Frame<Bytes>>,
    finisher: Option<Finisher>,
    pending: Option<FinisherFuture>,
    capture: Capturing,
    options: TapOptions,
    size_hint: SizeHint,
    done: bool,
}

impl std::fmt::Debug for TapBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBody").field("done", &self.done).finish()
    }
}

impl TapBody {
    /// Wraps `inner`, first replaying `prefix` (frames already read from it).
    pub fn new(inner: GwBody, prefix: Vec<Bytes>, options: TapOptions, finisher: Finisher) -> Self {
        let prefix_len: u64 = prefix.iter().map(|b| b.len() as u64).sum();
        let inner_hint = inner.size_hint();
        let mut size_hint = SizeHint::new();
        size_hint.set_lower(inner_hint.lower() + prefix_len);
        if let Some(u) = inner_hint.upper() {
            size_hint.set_upper(u + prefix_len);
        }
        Self {
            inner,
            prefix: prefix.into(),
            hasher: Some(BodyHasher::default()),
            trailers: None,
            held: None,
            out: VecDeque::new(),
            finisher: Some(finisher),
            pending: None,
            capture: Capturing::new(options.capture.as_ref(), size_hint.exact()),
            options,
            size_hint,
            done: false,
        }
    }

    /// Sets an exact length (from a Content-Length the sender signed).
    pub fn with_exact_len(mut self, len: u64) -> Self {
        self.size_hint = SizeHint::with_exact(len);
        self.capture.expect_len(len);
        self
    }

    fn take_data(&mut self, data: Bytes) -> Result<Option<Bytes>, StreamError> {
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data);
            if h.length() > self.options.max_len {
                return Err(StreamError(format!(
                    "body is larger than the limit of {} bytes",
                    self.options.max_len
                )));
            }
        }
        self.capture.push(&data);
        if self.options.hold_last {
            Ok(self.held.replace(data))
        } else {
            Ok(Some(data))
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(fut) = this.pending.as_mut() {
                return match fut.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Ok(trailers)) => {
                        this.pending = None;
                        this.done = true;
                        if let Some(last) = this.held.take() {
                            this.out.push_back(Frame::data(last));
                        }
                        if let Some(t) = trailers {
                            this.out.push_back(Frame::trailers(t));
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => {
                        this.pending = None;
                        this.done = true;
                        this.held = None;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                };
            }
            let next = match this.prefix.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Pin::new(&mut this.inner).poll_frame(cx),
            };
            match next {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.take_data(data) {
                        Ok(Some(out)) if !out.is_empty() => {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            this.done = true;
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                    },
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            match this.trailers.as_mut() {
                                Some(existing) => existing.extend(t),
                                None => this.trailers = Some(t),
                            }
                        }
                        continue;
                    }
                },
                Poll::Ready(None) => {
                    let digest = this
                        .hasher
                        .take()
                        .map(BodyHasher::finish)
                        .unwrap_or_else(|| BodyDigest::of(b""));
                    let end = BodyEnd {
                        digest,
                        trailers: this.trailers.take(),
                        capture: std::mem::replace(&mut this.capture, Capturing::new(None, None))
                            .finish(),
                    };
                    match this.finisher.take() {
                        Some(f) => this.pending = Some(f(end)),
                        None => this.done = true,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

/// Reads a body until it ends or `limit` bytes have arrived.
pub enum Prefetched {
    /// The whole body arrived.
    Complete {
        /// The body.
        body: Bytes,
        /// Its trailers.
        trailers: Option<HeaderMap>,
    },
    /// The body is larger than the limit; the frames read so far and the rest.
    Partial {
        /// Frames read so far.
        prefix: Vec<Bytes>,
        /// The unread remainder.
        rest: GwBody,
    },
}

impl std::fmt::Debug for Prefetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefetched::Complete { body, .. } => write!(f, "Complete({} bytes)", body.len()),
            Prefetched::Partial { prefix, .. } => write!(f, "Partial({} frames)", prefix.len()),
        }
    }
}

/// Reads up to `limit` bytes of a body, so small messages can be verified whole
/// before anything is forwarded (and refused with a precise error).
pub async fn prefetch(mut body: GwBody, limit: usize) -> Result<Prefetched, BoxError> {
    let mut prefix = Vec::new();
    let mut total = 0usize;
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                total += data.len();
                prefix.push(data);
                if total > limit {
                    return Ok(Prefetched::Partial { prefix, rest: body });
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match trailers.as_mut() {
                        Some(existing) => existing.extend(t),
                        None => trailers = Some(t),
                    }
                }
            }
        }
    }
    let body = if prefix.len() == 1 {
        prefix.pop().unwrap_or_default()
    } else {
        let mut all = BytesMut::with_capacity(total);
        for p in prefix {
            all.extend_from_slice(&p);
        }
        all.freeze()
    };
    Ok(Prefetched::Complete { body, trailers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn source(chunks: &[&'static [u8]], trailers: Option<HeaderMap>) -> GwBody {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        boxed(StreamBody::new(stream::iter(frames)))
    }

    fn finisher(ok: bool, seen: std::sync::Arc<std::sync::Mutex<Option<BodyEnd>>>) -> Finisher {
        Box::new(move |end| {
            Box::pin(async move {
                *seen.lock().unwrap() = Some(end);
                if ok {
                    let mut t = HeaderMap::new();
                    t.insert("x-sig", "s".parse().unwrap());
                    Ok(Some(t))
                } else {
                    Err(Fault::client_proxy(
                        veksel_id::FaultCode::InvalidSignatureValue,
                        "bad signature",
                    ))
                }
            })
        })
    }

    #[tokio::test]
    async fn passes_data_hashes_and_emits_trailers() {
        let seen = Default::default();
        let mut t = HeaderMap::new();
        t.insert("x-in", "1".parse().unwrap());
        let body = TapBody::new(
            source(&[b"he", b"llo"], Some(t)),
            vec![Bytes::from_static(b">")],
            TapOptions {
                hold_last: true,
                max_len: 100,
                capture: Some(CapturePolicy {
                    up_to: 100,
                    budget: crate::capture::CaptureBudget::new(1 << 20),
                    direction: crate::capture::Direction::Response,
                }),
            },
            finisher(true, std::sync::Arc::clone(&seen)),
        );
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers.get("x-sig").unwrap(), "s");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b">hello"));
        let end = seen.lock().unwrap().take().unwrap();
        assert_eq!(end.digest, BodyDigest::of(b">hello"));
        assert_eq!(end.trailers.unwrap().get("x-in").unwrap(), "1");
        let Capture::Kept(copy) = end.capture else {
            panic!("no copy")
        };
        assert_eq!(copy.bytes, b">hello");
    }

    #[tokio::test]
    async fn failing_finisher_withholds_the_last_frame() {
        let seen = Default::default();
        let mut body = TapBody::new(
            source(&[b"part1", b"part2"], None),
            vec![],
            TapOptions {
                hold_last: true,
                max_len: 100,
                capture: None,
            },
            finisher(false, seen),
        );
        let mut got = Vec::new();
        let mut error = None;
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => got.push(f.into_data().unwrap()),
                Err(e) => {
                    error = e.downcast::<Fault>().ok();
                    break;
                }
            }
        }
        assert_eq!(got, vec![Bytes::from_static(b"part1")]);
        // The stream's error is the finisher's fault, code and all.
        let fault = error.expect("the stream ends in the finisher's fault");
        assert_eq!(fault.code, veksel_id::FaultCode::InvalidSignatureValue);
        assert_eq!(fault.message, "bad signature");
    }

    #[tokio::test]
    async fn an_empty_body_with_trailers_sends_no_empty_data_frame() {
        let mut t = HeaderMap::new();
        t.insert("x-sig", "s".parse().unwrap());
        let mut body = with_trailers(Bytes::new(), t);
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_trailers(), "{first:?}");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn enforces_the_size_limit() {
        let body = TapBody::new(
            source(&[b"12345", b"67890"], None),
            vec![],
            TapOptions {
                hold_last: false,
                max_len: 7,
                capture: None,
            },
            finisher(true, Default::default()),
        );
        let err = body.collect().await.unwrap_err().to_string();
        assert!(err.contains("larger than the limit of 7"), "{err}");
    }

    #[tokio::test]
    async fn prefetch_small_and_large() {
        match prefetch(source(&[b"ab", b"c"], None), 10).await.unwrap() {
            Prefetched::Complete { body, trailers } => {
                assert_eq!(body, Bytes::from_static(b"abc"));
                assert!(trailers.is_none());
            }
            other => panic!("{other:?}"),
        }
        match prefetch(source(&[b"abcdef", b"ghijkl", b"mn"], None), 8)
            .await
            .unwrap()
        {
            Prefetched::Partial { prefix, rest } => {
                assert_eq!(prefix.len(), 2);
                assert_eq!(
                    rest.collect().await.unwrap().to_bytes(),
                    Bytes::from_static(b"mn")
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
