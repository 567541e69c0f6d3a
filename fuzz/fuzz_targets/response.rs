//! See proxy/src/http/fuzzing (the entry and the properties it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::http::fuzzing::response(data));
