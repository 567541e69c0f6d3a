//! The kernel side is written by the `nft` program (nftables, installed with the package and
//! by `cargo xtask setup`): a script piped to `nft -f -` is one atomic transaction, and nft
//! owns the translation of rules into netlink batches, which a hand-written encoder would
//! have to track across nftables versions.

use std::io::Write;
use std::process::{Command, Stdio};

use super::family::Family;
use super::ruleset::TABLE;
use super::NatError;

/// Applies `script` in one transaction.
pub fn apply(script: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NatError::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NatError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NatError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(NatError::Nft(err.trim().chars().take(2000).collect()))
}

/// The pid recorded in the `owner` set of our IPv4 table (always there while we run), if the
/// table exists.
pub fn owner() -> Option<u32> {
    let out = Command::new("nft")
        .args(["list", "set", "ip", TABLE, "owner"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_owner(&String::from_utf8_lossy(&out.stdout))
}

/// Whether our table of `family` exists (the IPv6 one only while IPv6 frontends do).
pub fn has_table(family: Family) -> bool {
    Command::new("nft")
        .args(["list", "table", family.table(), TABLE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `elements = { 0x0000002a }` in `nft list set` output.
fn parse_owner(listing: &str) -> Option<u32> {
    let after = listing.split("elements = {").nth(1)?;
    let word = after.split_whitespace().next()?.trim_end_matches(',');
    u32::from_str_radix(word.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_read_from_the_listing() {
        let listing = "table ip amsproxy_nat {\n\tset owner {\n\t\ttype mark\n\t\t\
                       elements = { 0x0000002a }\n\t}\n}\n";
        assert_eq!(parse_owner(listing), Some(42));
        assert_eq!(parse_owner("set owner { type mark }"), None);
    }
}
