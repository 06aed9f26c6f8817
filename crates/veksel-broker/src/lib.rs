//! The data broker's rules, without I/O: what a dataset is, who may have it, which
//! of its fields leave the broker for which purpose, the answer's shape and its
//! signature. The broker node (`veksel broker serve`) calls the sources through its
//! gateway and stores process state; everything it decides is decided here, so it
//! can be tested and fuzzed without sockets.
//!
//! The wire shapes are data.altinn.no's v1 (datasets are its "evidence codes", an
//! answer its `Evidence` envelope, refusals its error codes 1000–1029 and 3001–3003),
//! so its integrators feel at home. Where data.altinn.no falls short, this does
//! better:
//!
//! - datasets and their requirements are declarative files a data owner writes, not
//!   code compiled into plugins ([`dataset`], [`requirement`]);
//! - each purpose names the fields it may receive, and a field outside the purpose is
//!   neither fetched nor answered ([`harvest`]);
//! - an answer's signature binds the body's digest, the dataset, the requestor, the
//!   subject (hashed), the request and the time, under a key id of a published key
//!   set ([`answer`]), where data.altinn.no signs a bare digest.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod accreditation;
pub mod answer;
pub mod consent;
pub mod dataset;
pub mod error;
pub mod harvest;
pub mod query;
pub mod requirement;
pub mod usage;

pub use dataset::{Catalogue, Dataset};
pub use error::{BrokerError, ErrorCode};
