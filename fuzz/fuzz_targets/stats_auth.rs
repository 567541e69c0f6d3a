//! The `Authorization` header of a stats page request against `stats auth` users: Basic
//! credentials decoded (base64, `user:password`) and compared in constant time.
#![no_main]

use std::sync::OnceLock;

fn users() -> &'static [(String, String)] {
    static USERS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    USERS.get_or_init(|| {
        vec![
            ("admin".into(), "s3cret".into()),
            ("ops".into(), "p:a:ss".into()),
            ("".into(), "".into()),
        ]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ok = proxy::stats::authorized(users(), Some(data));
    // Only the exact credentials of a user pass.
    if ok {
        let header = std::str::from_utf8(data).expect("an accepted header is text");
        assert!(header.len() > 6, "accepted {header:?}");
    }
});
