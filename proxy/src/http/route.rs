//! Routing one request: the frontend's rules in HAProxy's order, `use_backend`, and the
//! answers the proxy gives by itself (stats page, exporter, redirects, denials).

use std::future::Future;

use crate::log::{Cause, Phase, TermState};

use super::answers::{self};
use super::client::Client;
use super::head::{Framing, Request};
use super::rules::Verdict;
use super::serve::Exchange;
use super::session::Next;
use super::stats_hook::{self, StatsAnswer, StatsRequest};
use super::{Backend, Frontend};

impl<'f, 'c, C: Client> Exchange<'f, 'c, C> {
    /// Frontend rules, then `use_backend`/`default_backend`.
    /// A plain function returning an `async move` block, as `Exchange::run` says why.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub(super) fn route(
        mut self,
        mut req: Request,
    ) -> impl Future<Output = Next<'f>> + use<'f, 'c, C> {
        async move {
            let fe: &'f Frontend = self.fe;
            let ssl = self.client.is_tls();
            let verdict = fe.rules.apply(&mut req, self.origin.src.ip(), ssl);
            if verdict != Verdict::Pass {
                return self.verdict(verdict, &req, None).await;
            }
            let has_route = fe.default.is_some() || !fe.routes.is_empty();
            if let Some(spec) = &fe.stats {
                if stats_hook::is_stats_request(spec, &req.target, has_route) {
                    let answer =
                        stats_hook::answer(&*fe.pages, spec, &self.stats_request(&req, &fe.name));
                    return self.local_answer(&req, answer, None).await;
                }
            }
            let ctx = self.ctx(&req);
            let be = fe
                .routes
                .iter()
                .find(|(cond, _)| cond.matches(&ctx))
                .map(|(_, b)| b)
                .or(fe.default.as_ref());
            match be {
                Some(be) => {
                    // From here on the request is the backend's (HAProxy's `SF_BE_ASSIGNED`):
                    // its rules' denials, answers and bytes count there too.
                    self.tally.assign(&be.upstream.set.stats.traffic);
                    self.forward_to(req, be.clone()).await
                }
                None => {
                    self.fail(503, TermState::new(Cause::Server, Phase::Connect), None)
                        .await
                }
            }
        }
    }

    pub(super) fn stats_request<'r>(&self, req: &'r Request, proxy: &'r str) -> StatsRequest<'r> {
        StatsRequest {
            proxy,
            method: &req.method,
            target: &req.target,
            headers: &req.headers,
            src: self.origin.src.ip(),
        }
    }

    pub(super) async fn verdict(
        &mut self,
        v: Verdict,
        req: &Request,
        be: Option<&Backend>,
    ) -> Next<'f> {
        match v {
            Verdict::Pass => Next::Close,
            Verdict::Deny(status) => {
                self.tally.denied();
                self.fail(status, TermState::new(Cause::Proxy, Phase::Request), be)
                    .await
            }
            Verdict::Redirect { code, location } => {
                let close = self.must_close_after_local_answer(req);
                let page = answers::redirect(code, &location, close);
                self.send_local(page, code, close, be).await
            }
            Verdict::Service(name) => {
                let answer = stats_hook::answer_service(&*self.fe.pages, &name);
                self.local_answer(req, answer, be).await
            }
        }
    }

    /// A request whose body was not read leaves the stream mid-message: close after answering.
    pub(super) fn must_close_after_local_answer(&self, req: &Request) -> bool {
        req.close
            || self.fe.httpclose
            || !matches!(req.framing, Framing::Empty | Framing::Length(0))
    }

    pub(super) async fn local_answer(
        &mut self,
        req: &Request,
        a: StatsAnswer,
        be: Option<&Backend>,
    ) -> Next<'f> {
        let close = self.must_close_after_local_answer(req);
        let mut out =
            format!("HTTP/1.1 {} {}\r\n", a.status, answers::reason(a.status)).into_bytes();
        for (name, value) in &a.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", a.body.len()).as_bytes());
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&a.body);
        self.record.server = "<STATS>".into();
        self.send_local(out, a.status, close, be).await
    }

    pub(super) async fn send_local(
        &mut self,
        bytes: Vec<u8>,
        status: u16,
        close: bool,
        be: Option<&Backend>,
    ) -> Next<'f> {
        self.record.status = Some(status);
        self.record.term = TermState::new(Cause::Local, Phase::Request);
        let bytes = self.local_bytes(bytes);
        let sent = self.client.answer(bytes, self.client_idle()).await;
        match sent {
            Ok(n) => self.record.bytes += n,
            Err(_) => self.record.term = TermState::new(Cause::Client, Phase::Data),
        }
        self.finish(be);
        if close || sent.is_err() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}
