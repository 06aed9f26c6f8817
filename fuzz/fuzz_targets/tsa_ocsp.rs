//! DER from outside: RFC 3161 requests as the authority's TSA receives them, tokens
//! and OCSP responses as gateways receive them, OCSP requests as the responder reads
//! them. No panic; the TSA always answers with a TimeStampResp.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::tsa_ocsp(data));
