//! The one message-log record of an exchange, written the same way by both sides:
//! both signed descriptors, the bodies in full mode, sizes and times.

use crate::Gateway;
use crate::capture::{Capture, StoredBodies};
use crate::msglog::{MessageRecord, Side, WriteError};
use crate::serverconf::LogMode;
use veksel_id::{Fault, FaultCode, Origin};
use veksel_proto::descriptor::{RequestDescriptor, ResponseDescriptor};

/// A descriptor as signed: its canonical bytes and the detached signature over them.
#[derive(Debug, Clone)]
pub(crate) struct Signed<D> {
    /// The descriptor.
    pub descriptor: D,
    /// Its canonical bytes, as signed and logged.
    pub bytes: Vec<u8>,
    /// The signature (detached JWS, or batch form).
    pub signature: String,
    /// The signer's certificate chain, leaf first (the signature names it).
    pub chain: Vec<Vec<u8>>,
}

impl<D> Signed<D> {
    /// The chain by its leaf's `x5t#S256`, as the log keeps it.
    fn kept_chain(&self) -> Option<(String, String)> {
        let leaf = self.chain.first()?;
        Some((
            veksel_proto::jws::thumbprint(leaf),
            veksel_proto::peer::encode_chain(&self.chain),
        ))
    }
}

/// Writes the exchange to the message log (unless the subsystem's mode is `off`) and
/// returns once it is committed: true if a record was written (it makes the
/// provider's replay claim durable). `bodies` are the copies kept in full mode; they are held until
/// the record is written, so their memory stays accounted for.
pub(crate) async fn log_exchange(
    gw: &Gateway,
    side: Side,
    mode: LogMode,
    request: &Signed<RequestDescriptor>,
    response: &Signed<ResponseDescriptor>,
    bodies: (Capture, Capture),
    subject_hash: Option<String>,
) -> Result<bool, Fault> {
    if mode == LogMode::Off {
        return Ok(false);
    }
    let mut stored = StoredBodies::of(bodies.0, bodies.1, gw.config.max_logged_body_bytes);
    gw.metrics.body_not_stored(stored.not_stored);
    let (q, r) = (&request.descriptor, &response.descriptor);
    let record = MessageRecord {
        request_id: r.request_id.clone(),
        side,
        xroad_id: r.xroad_id.clone(),
        client: r.client.to_string(),
        service: r.service.to_string(),
        method: q.method.clone(),
        target: q.target.clone(),
        status: r.status,
        consumer_gateway: q.consumer_gateway.to_string(),
        provider_gateway: r.provider_gateway.to_string(),
        request_descriptor: request.bytes.clone(),
        request_signature: request.signature.clone(),
        response_descriptor: response.bytes.clone(),
        response_signature: response.signature.clone(),
        request_body: stored.request.take(),
        response_body: stored.response.take(),
        body_note: stored.note.take(),
        request_size: q.body.length,
        response_size: r.body.length,
        created_at: q.created_at_ms,
        logged_at: gw.clock.now_ms(),
        person_id: q.person.as_ref().map(|p| p.id.clone()),
        subject_hash,
        signing_chains: [request.kept_chain(), response.kept_chain()]
            .into_iter()
            .flatten()
            .collect(),
    };
    let origin = match side {
        Side::Consumer => Origin::ClientProxy,
        Side::Provider => Origin::ServerProxy,
    };
    match gw.log.log_message(record).await {
        Ok(()) => Ok(true),
        Err(e @ WriteError::Replayed(_)) => Err(Fault {
            origin,
            code: FaultCode::ReplayedMessage,
            message: e.to_string(),
        }),
        Err(WriteError::Database(e)) => Err(Fault {
            origin,
            code: FaultCode::DatabaseError,
            message: format!("the message log could not be written: {e}"),
        }),
    }
}
