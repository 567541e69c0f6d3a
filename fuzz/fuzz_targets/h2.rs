//! See proxy/src/http/h2/fuzzing.rs (the entry and the property it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::http::fuzzing::h2_frames(data));
