//! The client side's view of a request: the r1 path and query, and the X-Road
//! headers, from arbitrary bytes. No panic; a parsed target names a service.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::r1_request(data));
