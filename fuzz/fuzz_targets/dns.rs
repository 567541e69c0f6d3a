//! A DNS answer as the `resolvers` client receives it from the network: decoded by
//! hickory-proto and turned into the addresses, SRV records and additional records that
//! fill `server-template` slots. Whatever the bytes, an answer or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = proxy::discovery::parse_answer(data) {
        // What was kept came from the bytes: no more records than the message could hold
        // (each record takes at least 11 bytes).
        let records = answer.addrs.len() + answer.srvs.len() + answer.extra.len();
        assert!(records * 11 <= data.len(), "{records} records from {} bytes", data.len());
    }
});
