//! Prometheus exposition text, rendered by `metrics-exporter-prometheus` into a `String` for our
//! own HTTP service (no listener, no runtime of its own). Names and labels follow HAProxy's
//! built-in exporter (`haproxy_frontend_*{proxy}`, `haproxy_backend_*{proxy}`,
//! `haproxy_server_*{proxy,server}`, state labels on `*_status`) so existing dashboards and
//! alerts work; figures HAProxy has no name for live under `proxy_*`.
//!
//! The data path never calls into the recorder: it bumps its atomics, and a scrape copies a
//! [`Snapshot`] of them into the recorder (gauges set, counters set to their absolute value)
//! and renders. A scrape therefore costs the scraper, never a session.
//!
//! The figures are tables of [`Def`]s (name, type, help, how to read the value) per scope, so
//! adding one is one line.

use metrics::{Key, KeyName, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::Mode;

use super::snapshot::{
    BackendView, EngineView, ProcessView, ProxyView, ServerView, Snapshot, Traffic,
};
use crate::counters::{self, Process, HTTP_CLASSES};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// HAProxy's check states exported as `state` labels of `haproxy_server_check_status`.
const CHECK_STATES: [&str; 16] = [
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
    "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
];
const SERVER_STATES: [&str; 5] = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];
const PROXY_STATES: [&str; 2] = ["DOWN", "UP"];

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// One figure of a scope: the name after the scope's prefix, and how to read it from `T`
/// (`None` leaves the series out, as HAProxy does for a limit that is not set).
struct Def<T> {
    suffix: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
}

const fn gauge<T>(
    suffix: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Def<T> {
    Def {
        suffix,
        kind: Kind::Gauge,
        help,
        value,
    }
}

const fn counter<T>(
    suffix: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Def<T> {
    Def {
        suffix,
        kind: Kind::Counter,
        help,
        value,
    }
}

fn secs(ms: u64) -> Option<f64> {
    Some(ms as f64 / 1000.0)
}

/// Sessions and bytes: every scope.
#[rustfmt::skip]
const TRAFFIC: &[Def<Traffic>] = &[
    gauge("current_sessions", "Number of current sessions", |t| Some(t.current as f64)),
    gauge("max_sessions", "Maximum observed number of sessions", |t| Some(t.max as f64)),
    gauge("limit_sessions", "Frontend/server's maxconn, backend's fullconn", |t| t.limit.map(|l| l as f64)),
    counter("sessions_total", "Total number of sessions", |t| Some(t.total as f64)),
    counter("bytes_in_total", "Total number of request bytes", |t| Some(t.bytes_in as f64)),
    counter("bytes_out_total", "Total number of response bytes", |t| Some(t.bytes_out as f64)),
    counter("responses_denied_total", "Total number of denied responses", |t| Some(t.denied_resp as f64)),
    gauge("max_session_rate", "Maximum observed number of sessions per second", |t| Some(t.session_rate_max as f64)),
    counter("internal_errors_total", "Total number of internal errors", |t| Some(t.internal_errors as f64)),
];

#[rustfmt::skip]
const FRONTEND: &[Def<Traffic>] = &[
    counter("requests_denied_total", "Total number of denied requests", |t| Some(t.denied_req as f64)),
    counter("request_errors_total", "Total number of request errors", |t| Some(t.failed_req as f64)),
    gauge("limit_session_rate", "Configured limit on new sessions per second", |_| Some(0.0)),
    gauge("connections_rate_max", "Maximum observed number of connections per second", |t| Some(t.connection_rate_max as f64)),
    counter("connections_total", "Total number of connections", |t| Some(t.connections as f64)),
    counter("denied_connections_total", "Total number of requests denied by \"tcp-request connection\" rules", |_| Some(0.0)),
    counter("denied_sessions_total", "Total number of requests denied by \"tcp-request session\" rules", |_| Some(0.0)),
];

#[rustfmt::skip]
const FRONTEND_HTTP: &[Def<Traffic>] = &[
    gauge("http_requests_rate_max", "Maximum observed number of HTTP requests per second", |t| Some(t.request_rate_max as f64)),
    counter("http_requests_total", "Total number of HTTP requests received", |t| Some(t.http_requests as f64)),
];

/// What backends and servers share.
#[rustfmt::skip]
const BACKEND_SIDE: &[Def<Traffic>] = &[
    gauge("current_queue", "Current number of queued requests", |t| Some(t.queue_current as f64)),
    gauge("max_queue", "Maximum observed number of queued requests", |t| Some(t.queue_max as f64)),
    counter("connection_errors_total", "Total number of connection errors", |t| Some(t.failed_conn as f64)),
    counter("response_errors_total", "Total number of response errors", |t| Some(t.failed_resp as f64)),
    counter("retry_warnings_total", "Total number of retry warnings", |t| Some(t.retries as f64)),
    counter("redispatch_warnings_total", "Total number of redispatch warnings", |t| Some(t.redispatches as f64)),
    counter("loadbalanced_total", "Total number of times a service was selected", |t| Some(t.total as f64)),
    counter("client_aborts_total", "Total number of data transfers aborted by the client", |t| Some(t.client_aborts as f64)),
    counter("server_aborts_total", "Total number of data transfers aborted by the server", |t| Some(t.server_aborts as f64)),
    counter("connection_attempts_total", "Total number of connection establishment attempts", |t| Some(t.connect_attempts as f64)),
    gauge("last_session_seconds", "How long ago some traffic was seen on this object, in seconds (-1: never)", |t| Some(t.last_session_secs.map_or(-1.0, |s| s as f64))),
    gauge("queue_time_average_seconds", "Avg. queue time for last 1024 successful connections.", |t| secs(t.times_avg[0])),
    gauge("connect_time_average_seconds", "Avg. connect time for last 1024 successful connections.", |t| secs(t.times_avg[1])),
    gauge("response_time_average_seconds", "Avg. response time for last 1024 successful connections.", |t| secs(t.times_avg[2])),
    gauge("total_time_average_seconds", "Avg. total time for last 1024 successful connections.", |t| secs(t.times_avg[3])),
    gauge("max_queue_time_seconds", "Maximum observed time spent in the queue", |t| secs(t.times_max[0])),
    gauge("max_connect_time_seconds", "Maximum observed time spent waiting for a connection to complete", |t| secs(t.times_max[1])),
    gauge("max_response_time_seconds", "Maximum observed time spent waiting for a server response", |t| secs(t.times_max[2])),
    gauge("max_total_time_seconds", "Maximum observed total request+response time", |t| secs(t.times_max[3])),
];

#[rustfmt::skip]
const BACKEND: &[Def<BackendView>] = &[
    counter("requests_denied_total", "Total number of denied requests", |b| Some(b.traffic.denied_req as f64)),
    gauge("weight", "Service weight", |b| Some(f64::from(b.weight))),
    gauge("uweight", "Sum of the user weights of the usable servers", |b| Some(f64::from(b.weight))),
    gauge("active_servers", "Current number of active servers", |b| Some(f64::from(b.active))),
    gauge("backup_servers", "Current number of backup servers", |b| Some(f64::from(b.backup))),
    counter("check_up_down_total", "Total number of UP->DOWN transitions", |b| Some(b.downs as f64)),
    gauge("check_last_change_seconds", "How long ago the last state change happened, in seconds", |b| Some(b.last_change_secs as f64)),
    counter("downtime_seconds_total", "Total downtime (in seconds) for the service", |b| Some(b.downtime_secs as f64)),
];

#[rustfmt::skip]
const BACKEND_HTTP: &[Def<Traffic>] = &[
    counter("http_requests_total", "Total number of HTTP requests sent", |t| Some(t.http_requests as f64)),
];

#[rustfmt::skip]
const SERVER: &[Def<ServerView>] = &[
    gauge("weight", "Service weight", |s| Some(f64::from(s.weight))),
    gauge("uweight", "Server's user weight", |s| Some(f64::from(s.weight))),
    gauge("active", "Is the server active", |s| Some(f64::from(u8::from(!s.backup)))),
    gauge("backup", "Is the server backup", |s| Some(f64::from(u8::from(s.backup)))),
    gauge("check_last_change_seconds", "How long ago the last state change happened, in seconds", |s| Some(s.last_change_secs as f64)),
    gauge("used_connections_current", "Current number of connections in use", |s| Some(s.traffic.current as f64)),
    gauge("queue_limit", "Configured maxqueue for the server (0 meaning no limit)", |s| s.queue_limit.map(f64::from)),
];

/// `udp-lb` rows (frontend, backend and servers): HAProxy's exporter has no datagram
/// figures, so they live under `proxy_udp_*`; sessions and bytes are the `haproxy_*` ones.
#[rustfmt::skip]
const UDP: &[Def<Traffic>] = &[
    counter("datagrams_in_total", "Datagrams forwarded client -> server", |t| Some(t.datagrams_in as f64)),
    counter("datagrams_out_total", "Datagrams forwarded server -> client", |t| Some(t.datagrams_out as f64)),
    counter("datagrams_dropped_total", "Datagrams dropped: from a stranger on a flow's server socket, no server up, flow limit with every flow active, truncated, or refused by the kernel", |t| Some(t.datagrams_dropped as f64)),
];

/// Servers with `check` only.
#[rustfmt::skip]
const SERVER_CHECK: &[Def<ServerView>] = &[
    counter("check_failures_total", "Total number of failed individual health checks", |s| s.check.as_ref().map(|c| c.failures as f64)),
    counter("check_up_down_total", "Total number of UP->DOWN transitions", |s| Some(s.downs as f64)),
    counter("downtime_seconds_total", "Total downtime (in seconds) for the service", |s| Some(s.downtime_secs as f64)),
    gauge("check_code", "layer5-7 code, if available of the last health check", |s| {
        Some(f64::from(s.check.as_ref().and_then(|c| c.code).unwrap_or(0)))
    }),
    gauge("check_duration_seconds", "Total duration of the latest server health check, in seconds", |s| {
        s.check.as_ref().filter(|c| c.status.code() != "INI").and_then(|c| secs(c.duration_ms))
    }),
];

#[rustfmt::skip]
const PROCESS: &[Def<ProcessView>] = &[
    gauge("nbthread", "Number of started threads (global.nbthread)", |p| Some(f64::from(p.threads))),
    gauge("nbproc", "Number of started worker processes", |_| Some(1.0)),
    gauge("relative_process_id", "Relative worker process number (1..nbproc)", |_| Some(1.0)),
    gauge("uptime_seconds", "How long ago this worker process was started (seconds)", |p| Some(p.uptime_secs as f64)),
    gauge("start_time_seconds", "Start time in seconds", |p| Some(p.start_secs as f64)),
    gauge("max_connections", "Maximum number of concurrent connections (global.maxconn)", |p| Some(f64::from(p.maxconn))),
    gauge("current_connections", "Number of active sessions", |p| Some(p.current_connections as f64)),
    counter("connections_total", "Total number of connections accepted", |p| Some(p.total_connections as f64)),
    counter("dropped_logs_total", "Total number of dropped logs (full log queue or failed send)", |p| Some(p.dropped_logs as f64)),
];

/// The recorder and the handle that renders it; one per registry.
pub struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Exporter {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Exporter { recorder, handle }
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

type Labels<'a> = &'a [(&'static str, &'a str)];

impl Exporter {
    /// Copies `snap` into the recorder and renders the exposition text. `hide_version`
    /// (`stats hide-version`) leaves the version out of `haproxy_process_build_info`; an
    /// exporter is used with one setting only, since the recorder keeps every label set.
    pub fn render(&self, snap: &Snapshot, hide_version: bool) -> String {
        process(self, &snap.process, hide_version);
        for p in &snap.proxies {
            proxy(self, p);
        }
        engines(self, snap);
        self.handle.render()
    }

    fn set(&self, kind: Kind, name: String, help: &'static str, labels: Labels<'_>, v: f64) {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        let key = Key::from_parts(name.clone(), labels);
        match kind {
            Kind::Gauge => {
                self.recorder
                    .describe_gauge(KeyName::from(name), None, help.into());
                self.recorder.register_gauge(&key, &METADATA).set(v);
            }
            Kind::Counter => {
                self.recorder
                    .describe_counter(KeyName::from(name), None, help.into());
                // Counters are whole numbers below 2^53: the round trip through f64 is exact.
                self.recorder
                    .register_counter(&key, &METADATA)
                    .absolute(v as u64);
            }
        }
    }

    fn table<T>(&self, prefix: &str, defs: &[Def<T>], labels: Labels<'_>, x: &T) {
        for d in defs {
            if let Some(v) = (d.value)(x) {
                self.set(d.kind, format!("{prefix}{}", d.suffix), d.help, labels, v);
            }
        }
    }

    /// One series per `states` value, 1 for `current` and 0 for the others, as HAProxy does.
    fn states(
        &self,
        name: &str,
        help: &'static str,
        labels: Labels<'_>,
        states: &[&'static str],
        current: &str,
    ) {
        self.counts(name, help, labels, states, |s| u64::from(s == current));
    }

    /// One series per `states` value with the count `of` gives it.
    fn counts(
        &self,
        name: &str,
        help: &'static str,
        labels: Labels<'_>,
        states: &[&'static str],
        of: impl Fn(&str) -> u64,
    ) {
        for s in states {
            let mut l = labels.to_vec();
            l.push(("state", s));
            self.set(Kind::Gauge, name.to_string(), help, &l, of(s) as f64);
        }
    }

    fn http_responses(&self, prefix: &str, labels: Labels<'_>, t: &Traffic) {
        for (class, n) in HTTP_CLASSES.iter().zip(t.http_responses) {
            let mut l = labels.to_vec();
            l.push(("code", class));
            let name = format!("{prefix}http_responses_total");
            self.set(
                Kind::Counter,
                name,
                "Total number of HTTP responses.",
                &l,
                n as f64,
            );
        }
    }
}

fn process(e: &Exporter, p: &ProcessView, hide_version: bool) {
    e.table("haproxy_process_", PROCESS, &[], p);
    let version: Labels<'_> = if hide_version {
        &[]
    } else {
        &[("version", p.version)]
    };
    e.set(
        Kind::Gauge,
        "haproxy_process_build_info".into(),
        "Build info",
        version,
        1.0,
    );
    for driver in ["io_uring", "epoll"] {
        let on = f64::from(u8::from(p.driver == Some(driver)));
        let help = "Event driver of the worker threads (1 = in use)";
        e.set(
            Kind::Gauge,
            "proxy_event_driver".into(),
            help,
            &[("driver", driver)],
            on,
        );
    }
    tls(e);
    e.set(
        Kind::Counter,
        "proxy_http_spliced_bytes_total".into(),
        "HTTP body bytes (Content-Length >= 64 KiB) moved by splice(2) instead of a copy",
        &[],
        Process::read(&counters::PROCESS.http_spliced_bytes) as f64,
    );
    for (feature, on) in &p.features {
        let help = "Kernel fast paths probed at start (1 = available and used)";
        e.set(
            Kind::Gauge,
            "proxy_kernel_feature".into(),
            help,
            &[("feature", feature)],
            f64::from(u8::from(*on)),
        );
    }
}

/// TLS sessions by who encrypts their records (the kernel with kTLS, or rustls in
/// userspace), failed handshakes, and sessions the client truncated.
fn tls(e: &Exporter) {
    let carriers = [
        ("kernel", &counters::PROCESS.ktls_sessions),
        ("userspace", &counters::PROCESS.tls_user_sessions),
    ];
    for (carrier, n) in carriers {
        e.set(
            Kind::Counter,
            "proxy_tls_handshakes_total".into(),
            "TLS handshakes completed, by where records are encrypted (kernel = kTLS engaged)",
            &[("carrier", carrier)],
            Process::read(n) as f64,
        );
    }
    e.set(
        Kind::Counter,
        "proxy_tls_handshake_failures_total".into(),
        "TLS handshakes that failed",
        &[],
        Process::read(&counters::PROCESS.tls_handshake_failures) as f64,
    );
    e.set(
        Kind::Counter,
        "proxy_tls_truncated_total".into(),
        "TLS sessions the client ended with a FIN and no close_notify (logged CD: possibly truncated)",
        &[],
        Process::read(&counters::PROCESS.tls_truncated) as f64,
    );
}

/// Our own figures per forwarding engine (`proxy_forward_*{engine}`).
#[rustfmt::skip]
const ENGINE: &[Def<EngineView>] = &[
    counter("flows_total", "Flows whose bytes this forwarding engine moved", |e| Some(e.flows as f64)),
    counter("bytes_in_total", "Client-to-server bytes moved by this forwarding engine", |e| Some(e.bytes_in as f64)),
    counter("bytes_out_total", "Server-to-client bytes moved by this forwarding engine", |e| Some(e.bytes_out as f64)),
];

fn engines(e: &Exporter, snap: &Snapshot) {
    for en in snap.engines() {
        e.table("proxy_forward_", ENGINE, &[("engine", en.name)], &en);
    }
    // Entries the kernel engine holds now: 0 once every sockmap flow ended, or something
    // leaked (the soak checks it).
    if let Some(s) = crate::forward::sockmap_status() {
        e.set(
            Kind::Gauge,
            "proxy_sockmap_flows".into(),
            "Flows registered in the sockmap engine's maps now",
            &[],
            f64::from(s.flows),
        );
        e.set(
            Kind::Counter,
            "proxy_sockmap_fallbacks_total".into(),
            "Flows the sockmap engine could not take (table full, socket closing), moved by copy",
            &[],
            s.fallbacks as f64,
        );
        e.set(
            Kind::Gauge,
            "proxy_sockmap_queued_bytes".into(),
            "Bytes the sockmap engine redirected that wait between two sockets (psock backlogs), charged to no socket's memory",
            &[],
            s.queued_bytes as f64,
        );
    }
}

/// The datagram figures of a `udp-lb` section: `proxy_udp_frontend_*{proxy}`,
/// `proxy_udp_backend_*{proxy}`, `proxy_udp_server_*{proxy,server}`.
fn udp(e: &Exporter, p: &ProxyView) {
    let l: Labels<'_> = &[("proxy", &p.name)];
    if let Some(t) = &p.frontend {
        e.table("proxy_udp_frontend_", UDP, l, t);
    }
    if let Some(b) = &p.backend {
        e.table("proxy_udp_backend_", UDP, l, &b.traffic);
    }
    for s in &p.servers {
        let l: Labels<'_> = &[("proxy", &p.name), ("server", &s.name)];
        e.table("proxy_udp_server_", UDP, l, &s.traffic);
    }
}

fn proxy(e: &Exporter, p: &ProxyView) {
    let http = p.mode == Mode::Http;
    let l: Labels<'_> = &[("proxy", &p.name)];
    if let Some(t) = &p.frontend {
        let prefix = "haproxy_frontend_";
        e.table(prefix, TRAFFIC, l, t);
        e.table(prefix, FRONTEND, l, t);
        e.states(
            "haproxy_frontend_status",
            "Current status of the service",
            l,
            &PROXY_STATES,
            "UP",
        );
        if http {
            e.table(prefix, FRONTEND_HTTP, l, t);
            e.http_responses(prefix, l, t);
        }
    }
    for s in &p.servers {
        server(e, p, s);
    }
    if p.kind == crate::config::ProxyKind::UdpLb {
        udp(e, p);
    }
    if let Some(b) = &p.backend {
        let prefix = "haproxy_backend_";
        e.table(prefix, TRAFFIC, l, &b.traffic);
        e.table(prefix, BACKEND_SIDE, l, &b.traffic);
        e.table(prefix, BACKEND, l, b);
        let state = if b.up { "UP" } else { "DOWN" };
        e.states(
            "haproxy_backend_status",
            "Current status of the service",
            l,
            &PROXY_STATES,
            state,
        );
        let help = "Backend's aggregated gauge of servers' status";
        e.counts(
            "haproxy_backend_agg_server_status",
            help,
            l,
            &SERVER_STATES,
            |state| {
                p.servers
                    .iter()
                    .filter(|s| s.status.prometheus_state() == state)
                    .count() as u64
            },
        );
        if http {
            e.table(prefix, BACKEND_HTTP, l, &b.traffic);
            e.http_responses(prefix, l, &b.traffic);
        }
    }
}

fn server(e: &Exporter, p: &ProxyView, s: &ServerView) {
    let prefix = "haproxy_server_";
    let l: Labels<'_> = &[("proxy", &p.name), ("server", &s.name)];
    e.table(prefix, TRAFFIC, l, &s.traffic);
    e.table(prefix, BACKEND_SIDE, l, &s.traffic);
    e.table(prefix, SERVER, l, s);
    e.states(
        "haproxy_server_status",
        "Current status of the service",
        l,
        &SERVER_STATES,
        s.status.prometheus_state(),
    );
    if let Some(c) = &s.check {
        e.table(prefix, SERVER_CHECK, l, s);
        e.states(
            "haproxy_server_check_status",
            "Status of last health check",
            l,
            &CHECK_STATES,
            c.status.code(),
        );
    }
    if p.mode == Mode::Http {
        e.http_responses(prefix, l, &s.traffic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::snapshot;

    fn render() -> String {
        Exporter::default().render(&snapshot(), false)
    }

    fn parse(text: &str) -> prometheus_parse::Scrape {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("the exposition text parses")
    }

    fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        s.samples
            .iter()
            .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn text_parses_with_haproxy_names_and_labels() {
        let text = render();
        let s = parse(&text);
        let be = [("proxy", "backend_rtmp")];
        let ams1 = [("proxy", "backend_rtmp"), ("server", "ams1")];
        let ams2 = [("proxy", "backend_rtmp"), ("server", "ams2")];
        assert_eq!(
            value(
                &s,
                "haproxy_frontend_current_sessions",
                &[("proxy", "rtmp_lb")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_backend_status",
                &[("proxy", "backend_rtmp"), ("state", "UP")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_server_status",
                &[ams2[0], ams2[1], ("state", "DOWN")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_server_status",
                &[ams2[0], ams2[1], ("state", "UP")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_server_check_status",
                &[ams1[0], ams1[1], ("state", "L4OK")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "haproxy_server_bytes_in_total", &ams1),
            Some(1000.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_backend_agg_server_status",
                &[be[0], ("state", "DOWN")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "haproxy_frontend_http_responses_total",
                &[("proxy", "stats"), ("code", "2xx")]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&s, "haproxy_server_http_responses_total", &ams1),
            None,
            "tcp mode has no HTTP figures"
        );
        assert_eq!(
            value(&s, "proxy_event_driver", &[("driver", "io_uring")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "proxy_kernel_feature", &[("feature", "io_uring")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "proxy_forward_bytes_out_total", &[("engine", "copy")]),
            Some(2000.0)
        );
        // Global TLS counters: other tests may move them, so only their presence is checked.
        for carrier in ["kernel", "userspace"] {
            assert!(
                value(&s, "proxy_tls_handshakes_total", &[("carrier", carrier)]).is_some(),
                "{carrier} handshakes in:\n{s:?}"
            );
        }
        assert!(value(&s, "proxy_tls_handshake_failures_total", &[]).is_some());
        assert!(value(&s, "proxy_tls_truncated_total", &[]).is_some());
        // Other tests in this process drop lines on purpose: only the series is checked.
        assert!(value(&s, "haproxy_process_dropped_logs_total", &[]).is_some());
    }

    #[test]
    fn http_checks_set_the_state_label_and_check_code() {
        let text = Exporter::default().render(&crate::stats::tests::http_checked_snapshot(), false);
        let s = parse(&text);
        let ams1 = [("proxy", "backend_rtmp"), ("server", "ams1")];
        let ams2 = [("proxy", "backend_rtmp"), ("server", "ams2")];
        let state = |who: &[(&str, &str); 2], st| {
            value(
                &s,
                "haproxy_server_check_status",
                &[who[0], who[1], ("state", st)],
            )
        };
        assert_eq!(state(&ams2, "L7STS"), Some(1.0));
        assert_eq!(state(&ams2, "L4CON"), Some(0.0));
        assert_eq!(state(&ams1, "L7OK"), Some(1.0));
        assert_eq!(value(&s, "haproxy_server_check_code", &ams2), Some(503.0));
        assert_eq!(value(&s, "haproxy_server_check_code", &ams1), Some(200.0));
        // Layer-4 results have no code: HAProxy exports 0.
        let s = parse(&render());
        assert_eq!(value(&s, "haproxy_server_check_code", &ams1), Some(0.0));
    }

    #[test]
    fn types_and_help_lines_are_present() {
        let text = render();
        assert!(text.contains("# TYPE haproxy_server_bytes_in_total counter"));
        assert!(text.contains("# TYPE haproxy_server_current_sessions gauge"));
        assert!(text.contains("# HELP haproxy_backend_status Current status of the service"));
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                series.starts_with("haproxy_") || series.starts_with("proxy_"),
                "{line}"
            );
        }
    }

    #[test]
    fn rendering_twice_gives_current_values() {
        let e = Exporter::default();
        let mut snap = snapshot();
        e.render(&snap, false);
        snap.proxies[2].servers[0].traffic.bytes_in = 5000;
        let s = parse(&e.render(&snap, false));
        let ams1 = [("proxy", "backend_rtmp"), ("server", "ams1")];
        assert_eq!(
            value(&s, "haproxy_server_bytes_in_total", &ams1),
            Some(5000.0)
        );
    }

    /// `promtool check metrics`, where the Debian `prometheus` package is installed.
    #[test]
    fn promtool_accepts_the_text() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let Ok(mut child) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: promtool not found (apt-get install prometheus); the parser test above still checks the format");
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(render().as_bytes())
                .expect("writing to promtool");
        }
        let out = child.wait_with_output().expect("promtool runs");
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool: {report}");
    }
}
