//! The rise/fall state machine of one checked server, free of I/O so it can be tested alone.

use std::time::Duration;

use crate::config::ServerParams;

/// What a finished check changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentUp,
    WentDown,
}

/// Counts consecutive results against `rise`/`fall`, as HAProxy documents them: a server is
/// declared DOWN after `fall` consecutive failures and UP again after `rise` consecutive
/// successes. Servers start UP, as in HAProxy, so traffic flows before the first check.
#[derive(Debug, Clone)]
pub struct CheckState {
    up: bool,
    /// Consecutive results pointing away from the current state.
    streak: u32,
    rise: u32,
    fall: u32,
    inter: Duration,
    fastinter: Duration,
    downinter: Duration,
}

impl CheckState {
    pub fn new(params: &ServerParams) -> CheckState {
        CheckState {
            up: true,
            streak: 0,
            rise: params.rise.max(1),
            fall: params.fall.max(1),
            inter: params.inter,
            fastinter: params.fastinter.unwrap_or(params.inter),
            downinter: params.downinter.unwrap_or(params.inter),
        }
    }

    /// Starting DOWN: a server added at run time takes no traffic before `rise` passes.
    pub fn starting_down(mut self) -> CheckState {
        self.up = false;
        self
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Consecutive results against the current state so far (the stats page's `UP 1/3`).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn record(&mut self, success: bool) -> Transition {
        if success == self.up {
            self.streak = 0;
            return Transition::None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return Transition::None;
        }
        self.up = success;
        self.streak = 0;
        if success {
            Transition::WentUp
        } else {
            Transition::WentDown
        }
    }

    /// `fastinter` while a transition is under way, `downinter` while stably down.
    pub fn next_interval(&self) -> Duration {
        match (self.up, self.streak) {
            (_, s) if s > 0 => self.fastinter,
            (true, _) => self.inter,
            (false, _) => self.downinter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rise: u32, fall: u32) -> ServerParams {
        ServerParams {
            rise,
            fall,
            inter: Duration::from_secs(2),
            fastinter: Some(Duration::from_millis(100)),
            downinter: Some(Duration::from_secs(5)),
            ..ServerParams::default()
        }
    }

    #[test]
    fn goes_down_after_fall_consecutive_failures() {
        let mut s = CheckState::new(&params(2, 3));
        assert_eq!(s.record(false), Transition::None);
        assert_eq!(s.record(false), Transition::None);
        assert_eq!(s.record(false), Transition::WentDown);
        assert!(!s.is_up());
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut s = CheckState::new(&params(2, 2));
        s.record(false);
        s.record(true);
        assert_eq!(s.record(false), Transition::None);
        assert!(s.is_up());
    }

    #[test]
    fn comes_back_after_rise_successes() {
        let mut s = CheckState::new(&params(2, 1));
        assert_eq!(s.record(false), Transition::WentDown);
        assert_eq!(s.record(true), Transition::None);
        assert_eq!(s.record(true), Transition::WentUp);
    }

    #[test]
    fn intervals_follow_the_state() {
        let mut s = CheckState::new(&params(2, 2));
        assert_eq!(s.next_interval(), Duration::from_secs(2));
        s.record(false);
        assert_eq!(s.next_interval(), Duration::from_millis(100));
        s.record(false);
        assert_eq!(s.next_interval(), Duration::from_secs(5));
    }
}
