//! What a third party runs to check veksel's evidence, with nothing of a gateway: a
//! gateway's message log (its records, kept roots and time stamps, [`log`]) and its
//! archive files ([`archive`]), evidence bundles of single exchanges ([`evidence`]),
//! and the network ledger ([`ledger_client`]). Each check needs only the network's
//! anchor and the files or URLs it reads; the gateway uses the same code to check
//! itself.

#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
pub mod evidence;
pub mod ledger_client;
pub mod log;
