//! `set maxconn frontend F N`: the frontend's connection gate (the runtime's) and the limit
//! the stats show (the registry's).

use super::Control;
use crate::plan::Registry;

pub fn set_maxconn(
    control: &dyn Control,
    reg: &Registry,
    name: &str,
    n: u32,
) -> Result<String, String> {
    let entry = reg
        .proxy(name)
        .filter(|p| p.frontend.is_some())
        .ok_or_else(|| "No such frontend.".to_string())?;
    if n == 0 {
        return Err("Value out of range.".into());
    }
    control.set_frontend_maxconn(name, n)?;
    entry.set_frontend_limit(n);
    log::info!("frontend {name}: maxconn set to {n} by the runtime API");
    Ok(String::new())
}
