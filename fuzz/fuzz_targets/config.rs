//! A configuration text through the whole load: lexer, sections and directives, validation
//! across proxies, then the plan's compile pass (no socket is bound and no BPF program is
//! loaded there). Host names do not resolve under fuzzing (config/addr.rs).
#![no_main]

use std::path::Path;
use std::sync::Arc;

use proxy::forward::Probed;
use proxy::plan::{self, Registry};
use proxy::stats::Pages;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = proxy::config::parse_str(text, Path::new("fuzz.cfg")) else {
        return;
    };
    let engines = Probed {
        splice: Ok(()),
        sockmap: Err("not probed while fuzzing".into()),
    };
    let env = plan::Env {
        ktls: false,
        engines: &engines,
        pages: &|registry: Arc<Registry>| Arc::new(Pages::new(registry)),
        previous: None,
    };
    let _ = plan::compile(&cfg, &env);
});
