//! Access tokens from arbitrary bytes, as the token and as its signed claims, and
//! the gateway's rules over what verifies: no panic; nothing verifies that was not
//! signed; the verifier agrees with the claim checks; nothing is admitted without its
//! scope or for another consumer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::access_token(data));
