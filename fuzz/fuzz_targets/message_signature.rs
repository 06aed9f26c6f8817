//! A message's signature as a peer sends it (single detached JWS or batch form),
//! checked against a descriptor, and the descriptors themselves. Arbitrary input is
//! parsed; a batch made here from the input is verified and must verify only for its
//! own descriptors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::message_signature(data));
