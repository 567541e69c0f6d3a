//! Idle limits of a flow, as HAProxy applies them in TCP mode.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// HAProxy refreshes a side's timeout whenever bytes move through it, so in a proxied pair any
/// byte keeps both sides alive; the flow dies when nothing moved for the limit. `timeout
/// tunnel`, when set, replaces client/server once the pair is established. After one
/// direction has finished, `client-fin`/`server-fin` bound the wait for the other.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IdleLimits {
    pub idle: Option<Duration>,
    /// Applies once the server has finished sending and only the client may still talk.
    pub client_fin: Option<Duration>,
    /// Applies once the client has finished sending and only the server may still talk.
    pub server_fin: Option<Duration>,
}

impl IdleLimits {
    pub fn from_timeouts(t: &crate::config::Timeouts) -> IdleLimits {
        let both = match (t.client, t.server) {
            (Some(c), Some(s)) => Some(c.min(s)),
            (c, s) => c.or(s),
        };
        IdleLimits {
            idle: t.tunnel.or(both),
            client_fin: t.client_fin,
            server_fin: t.server_fin,
        }
    }

    /// The limit once one direction is finished; `client_done` says which one.
    pub fn after_half_close(&self, client_done: bool) -> Option<Duration> {
        let fin = if client_done {
            self.server_fin
        } else {
            self.client_fin
        };
        match (self.idle, fin) {
            (Some(i), Some(f)) => Some(i.min(f)),
            (i, f) => i.or(f),
        }
    }
}

/// The time of the last byte moved in either direction, shared by a flow's two pumps.
#[derive(Debug)]
pub struct Activity(Cell<Instant>);

impl Activity {
    pub fn new() -> Activity {
        Activity(Cell::new(Instant::now()))
    }
    /// A flow resumed from another process, whose last byte moved `idle_for` ago there.
    pub fn resumed(idle_for: Duration) -> Activity {
        let now = Instant::now();
        Activity(Cell::new(now.checked_sub(idle_for).unwrap_or(now)))
    }

    pub fn touch(&self) {
        self.0.set(Instant::now());
    }

    /// How long nothing has moved: what a hand-over carries as the idle timer.
    pub fn idle_for(&self) -> Duration {
        self.0.get().elapsed()
    }

    /// Resolves once nothing has moved for `limit`; never resolves without a limit.
    pub async fn expired(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = self.0.get() + limit;
            if Instant::now() >= deadline {
                return;
            }
            compio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

    #[test]
    fn tunnel_replaces_client_and_server() {
        let t = Timeouts {
            client: Some(Duration::from_secs(5)),
            server: Some(Duration::from_secs(3)),
            tunnel: Some(Duration::from_secs(7200)),
            ..Timeouts::default()
        };
        assert_eq!(
            IdleLimits::from_timeouts(&t).idle,
            Some(Duration::from_secs(7200))
        );
    }

    #[test]
    fn without_tunnel_the_shorter_side_wins() {
        let t = Timeouts {
            client: Some(Duration::from_secs(5)),
            server: Some(Duration::from_secs(3)),
            ..Timeouts::default()
        };
        assert_eq!(
            IdleLimits::from_timeouts(&t).idle,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn fin_timeouts_shorten_the_half_closed_wait() {
        let t = Timeouts {
            client: Some(Duration::from_secs(5)),
            server: Some(Duration::from_secs(5)),
            client_fin: Some(Duration::from_secs(1)),
            ..Timeouts::default()
        };
        let l = IdleLimits::from_timeouts(&t);
        assert_eq!(l.after_half_close(false), Some(Duration::from_secs(1)));
        assert_eq!(l.after_half_close(true), Some(Duration::from_secs(5)));
    }
}
