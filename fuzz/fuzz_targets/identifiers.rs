//! X-Road identifiers from arbitrary text: no panic, and what parses prints back to
//! the same identifier.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::identifiers(data));
