//! Which engine a backend's flows get: the kernel is probed once per process, `auto` follows
//! the measurements written in LIFECYCLE.md, and a forced engine the kernel lacks is an error.

use std::sync::OnceLock;

use crate::config::EngineChoice;

use super::Engine;

/// What this kernel offers, probed once.
#[derive(Debug, Clone)]
pub struct Probed {
    /// `Err(why)` when splice(2) does not work here.
    pub splice: Result<(), String>,
    /// `Err(why)` when the sockmap program cannot be loaded and attached here.
    pub sockmap: Result<(), String>,
}

static PROBED: OnceLock<Probed> = OnceLock::new();

/// The probe results, running the probes on first use.
pub fn probed() -> &'static Probed {
    PROBED.get_or_init(|| Probed {
        splice: super::splice::probe(),
        sockmap: super::sockmap::probe(),
    })
}

/// The engine for `forward-engine <choice>`, or why it cannot serve.
pub fn choose(choice: EngineChoice) -> Result<Engine, String> {
    let p = probed();
    match choice {
        // `auto` follows the hop-cost measurements in LIFECYCLE.md: on this kernel the sockmap
        // hop was not cheaper than copy for paced RTMP-like flows, so copy it is.
        EngineChoice::Auto | EngineChoice::Copy => Ok(Engine::Copy),
        EngineChoice::Splice => {
            p.splice.clone().map(|()| Engine::Splice).map_err(|why| {
                format!("forward-engine splice: not available on this kernel ({why})")
            })
        }
        EngineChoice::Sockmap => p
            .sockmap
            .clone()
            .map(|()| Engine::Sockmap)
            .map_err(|why| format!("forward-engine sockmap: not available here ({why})")),
    }
}

/// For the start-up log: what each engine can do here and what `auto` picks.
pub fn summary() -> String {
    let p = probed();
    let state = |r: &Result<(), String>| match r {
        Ok(()) => "yes".to_string(),
        Err(why) => format!("no ({why})"),
    };
    format!(
        "forward engines: copy yes, splice {}, sockmap {}; auto -> {}",
        state(&p.splice),
        state(&p.sockmap),
        choose(EngineChoice::Auto).map_or("copy", Engine::name)
    )
}
