//! HAProxy's termination state (`%ts` of tcplog, the first two letters of httplog's `%tsc`):
//! who or what ended a session, and in which phase it was. Typed, so a session can only say
//! what HAProxy's log format can, and renders as HAProxy's two letters.

use std::fmt;

/// Who or what ended the session (the first letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `-`: the session ended normally.
    Normal,
    /// `C`: the client aborted or sent something invalid.
    Client,
    /// `S`: the server aborted, refused, or sent something invalid.
    Server,
    /// `P`: the proxy refused or ended it (a rule, a failed check of the traffic).
    Proxy,
    /// `L`: the proxy answered it locally (redirect, stats page).
    Local,
    /// `c`: the client-side timeout expired.
    ClientTimeout,
    /// `s`: the server-side timeout expired (or `timeout queue`, `timeout connect`).
    ServerTimeout,
}

/// The session's phase when it ended (the second letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `-`: it ended normally, past every phase.
    Normal,
    /// `R`: waiting for the client's complete request.
    Request,
    /// `Q`: waiting in a queue for a server slot.
    Queue,
    /// `C`: connecting to the server.
    Connect,
    /// `H`: waiting for the server's complete response head.
    Headers,
    /// `D`: moving data.
    Data,
}

/// A termination state: cause and phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermState {
    pub cause: Cause,
    pub phase: Phase,
}

impl TermState {
    pub const fn new(cause: Cause, phase: Phase) -> TermState {
        TermState { cause, phase }
    }

    /// `--`: a session that ended normally.
    pub const NORMAL: TermState = TermState::new(Cause::Normal, Phase::Normal);

    fn cause_letter(self) -> char {
        match self.cause {
            Cause::Normal => '-',
            Cause::Client => 'C',
            Cause::Server => 'S',
            Cause::Proxy => 'P',
            Cause::Local => 'L',
            Cause::ClientTimeout => 'c',
            Cause::ServerTimeout => 's',
        }
    }

    fn phase_letter(self) -> char {
        match self.phase {
            Phase::Normal => '-',
            Phase::Request => 'R',
            Phase::Queue => 'Q',
            Phase::Connect => 'C',
            Phase::Headers => 'H',
            Phase::Data => 'D',
        }
    }
}

impl Default for TermState {
    fn default() -> Self {
        TermState::NORMAL
    }
}

impl fmt::Display for TermState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.cause_letter(), self.phase_letter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_haproxy_letters() {
        let cases = [
            (TermState::NORMAL, "--"),
            (TermState::new(Cause::Server, Phase::Connect), "SC"),
            (TermState::new(Cause::ServerTimeout, Phase::Queue), "sQ"),
            (TermState::new(Cause::ClientTimeout, Phase::Request), "cR"),
            (TermState::new(Cause::Proxy, Phase::Headers), "PH"),
            (TermState::new(Cause::Local, Phase::Request), "LR"),
            (TermState::new(Cause::Client, Phase::Data), "CD"),
        ];
        for (t, text) in cases {
            assert_eq!(t.to_string(), text);
        }
    }
}
