//! A global configuration as a gateway receives it: the compact JWS is parsed and
//! verified, then its JSON is read and indexed. Arbitrary bytes go in both as the
//! JWS itself and, signed with a fixed test key, as its payload, so the JSON reader
//! and the index see arbitrary documents too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::global_conf(data));
