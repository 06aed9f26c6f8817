//! JWT-bearer client assertions from arbitrary bytes, as the assertion and as its
//! signed claims: no panic; nothing verifies that was not signed; the verifier agrees
//! with the claim checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::client_assertion(data));
