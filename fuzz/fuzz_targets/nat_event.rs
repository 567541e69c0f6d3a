//! The conntrack event reader of `forward-engine nat` (`proxy::nat::event`): kernel
//! messages, but bytes nonetheless. Properties: no panic on any input, and every event it
//! reads, encoded again as the kernel would send it, reads back the same.
#![no_main]

use proxy::nat::event::{build, parse_datagram, Message};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for m in parse_datagram(data) {
        if let Message::Event(ev) = m {
            let again = parse_datagram(&build::message(&ev));
            assert_eq!(again, vec![Message::Event(ev)], "re-encoded event");
        }
    }
});
