//! The message between gateways as a provider's gateway reads it: request heads and
//! signed trailers from arbitrary bytes (see `veksel_fuzz::peer_message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::peer_message(data));
