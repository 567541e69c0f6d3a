//! The HTML stats page, laid out like HAProxy's so an operator used to it reads ours at a
//! glance: one table per proxy, FRONTEND row, one row per server, BACKEND row, row colours by
//! state. Plain HTML and inline CSS, no scripts and no external assets (the page must work
//! on a host with no Internet access).

use std::fmt::Write;

use crate::config::Mode;

use super::csv::{algo_name, mode_name};
use super::snapshot::{BackendView, ProcessView, ProxyView, ServerView, Snapshot, Status, Traffic};

/// What the configuration and the request ask the page to show.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageOptions<'a> {
    pub hide_version: bool,
    /// Seconds between automatic reloads (`stats refresh`), unless `;norefresh`.
    pub refresh_secs: Option<u64>,
    pub show_legends: bool,
    pub only_up: bool,
    /// The `stats uri`, for the links to `;csv`, `;json` and the refresh toggle.
    pub uri: &'a str,
}

const STYLE: &str = "
body { font-family: arial, helvetica, sans-serif; font-size: 12px; color: black; background: white; }
h1 { font-size: x-large; margin-bottom: 0.5em; }
h2 { font-size: large; color: #6020a0; margin: 1em 0 0.2em 0; }
table.tbl { border-collapse: collapse; border: 1px solid #808080; margin-bottom: 0.5em; }
table.tbl th, table.tbl td { border: 1px solid #808080; padding: 1px 4px; text-align: right; white-space: nowrap; }
table.tbl td.name, table.tbl th.name { text-align: left; font-weight: bold; }
table.info td { vertical-align: top; padding-right: 2em; }
table.tbl th.pxname { background: #b00040; color: #ffff40; font-weight: bold; text-align: left; }
.titre { background: #20d0d0; color: #000000; font-weight: bold; text-align: center; }
.frontend, .backend { background: #e8e8d0; }
.active_up { background: #c0ffc0; }
.active_down { background: #ff9090; }
.active_going_down { background: #ffffa0; }
.active_going_up { background: #ffd020; }
.active_draining { background: #20a0ff; }
.active_no_check { background: #e0e0e0; }
.backup_up { background: #b0d0ff; }
.backup_down { background: #ff9090; }
.backup_going_down { background: #c060ff; }
.backup_going_up { background: #ff80ff; }
.backup_draining { background: #cc9900; }
.backup_no_check { background: #e0e0e0; }
.maintain { background: #c07820; }
.legend td { padding: 1px 6px; }
a { color: #3030a0; }
";

/// The whole page.
pub fn render(snap: &Snapshot, opts: &PageOptions<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, opts);
    out.push_str("<body>\n<h1>Statistics Report</h1>\n");
    process(&mut out, &snap.process, opts);
    for p in &snap.proxies {
        proxy(&mut out, p, opts);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn head(out: &mut String, opts: &PageOptions<'_>) {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<title>Statistics Report</title>\n");
    if let Some(secs) = opts.refresh_secs {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
    }
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>");
}

fn process(out: &mut String, p: &ProcessView, opts: &PageOptions<'_>) {
    out.push_str("<h2>General process information</h2>\n<table class=\"info\"><tr><td>\n");
    if let Some(node) = &p.node {
        let _ = writeln!(out, "node = {}<br>", esc(node));
    }
    if let Some(d) = &p.description {
        let _ = writeln!(out, "description = {}<br>", esc(d));
    }
    if !opts.hide_version {
        let _ = writeln!(out, "version = {}<br>", esc(p.version));
    }
    let _ = writeln!(
        out,
        "pid = {} (process #1, nbproc = 1, nbthread = {})<br>\nuptime = {}<br>\n\
         system limits: maxconn = {}<br>\ncurrent conns = {}; total conns = {}<br>\n\
         event driver = {}; kernel features: {}<br>\ndropped logs = {}",
        p.pid,
        p.threads,
        human_secs(p.uptime_secs),
        p.maxconn,
        p.current_connections,
        p.total_connections,
        esc(p.driver.unwrap_or("unknown")),
        features(&p.features),
        p.dropped_logs,
    );
    out.push_str("</td><td>\n");
    links(out, opts);
    out.push_str("</td>");
    if opts.show_legends {
        out.push_str("<td>\n");
        legend(out);
        out.push_str("</td>");
    }
    out.push_str("</tr></table>\n");
}

fn features(list: &[(&str, bool)]) -> String {
    if list.is_empty() {
        return "none probed".into();
    }
    let words: Vec<String> = list
        .iter()
        .map(|(name, on)| format!("{} {}", esc(name), if *on { "yes" } else { "no" }))
        .collect();
    words.join(", ")
}

fn links(out: &mut String, opts: &PageOptions<'_>) {
    let uri = esc(opts.uri);
    let _ = writeln!(
        out,
        "<b>Display option:</b><br>\n<a href=\"{uri}\">Show all servers</a><br>\n\
         <a href=\"{uri};up\">Hide 'DOWN' servers</a><br>"
    );
    if opts.refresh_secs.is_some() {
        let _ = writeln!(out, "<a href=\"{uri};norefresh\">Disable refresh</a><br>");
    }
    let _ = writeln!(
        out,
        "<b>External resources:</b><br>\n<a href=\"{uri};csv\">CSV export</a><br>\n\
         <a href=\"{uri};json\">JSON export</a><br>"
    );
}

fn legend(out: &mut String) {
    out.push_str("<table class=\"legend\">\n");
    let rows = [
        ("active_up", "active UP"),
        ("backup_up", "backup UP"),
        ("active_going_down", "active UP, going down"),
        ("backup_going_down", "backup UP, going down"),
        ("active_going_up", "active DOWN, going up"),
        ("backup_going_up", "backup DOWN, going up"),
        ("active_down", "active or backup DOWN"),
        ("active_no_check", "not checked"),
        ("maintain", "active or backup DOWN for maintenance (MAINT)"),
        (
            "active_draining",
            "active or backup SOFT STOPPED for maintenance (DRAIN)",
        ),
    ];
    for (class, text) in rows {
        let _ = writeln!(
            out,
            "<tr><td class=\"{class}\">&nbsp;</td><td>{text}</td></tr>"
        );
    }
    out.push_str("</table>\n");
}

const HEADER_GROUPS: &[(&str, usize)] = &[
    ("Queue", 3),
    ("Session rate", 3),
    ("Sessions", 6),
    ("Bytes", 2),
    ("Denied", 2),
    ("Errors", 3),
    ("Warnings", 2),
    ("HTTP responses", 6),
    ("Server", 9),
    ("Forwarding", 1),
];

const HEADER_CELLS: &[&str] = &[
    "Cur", "Max", "Limit", "Cur", "Max", "Limit", "Cur", "Max", "Limit", "Total", "LbTot", "Last",
    "In", "Out", "Req", "Resp", "Req", "Conn", "Resp", "Retr", "Redis", "1xx", "2xx", "3xx", "4xx",
    "5xx", "other", "Status", "LastChk", "Wght", "Act", "Bck", "Chk", "Dwn", "Dwntme", "Thrtle",
    "Engine",
];

fn proxy(out: &mut String, p: &ProxyView, opts: &PageOptions<'_>) {
    let name = esc(&p.name);
    let _ = writeln!(
        out,
        "<table class=\"tbl\" id=\"{name}\">\n<tr><th class=\"pxname\" colspan=\"{}\">\
         <a name=\"{name}\"></a>{name} <small>({} mode {}{})</small>{}</th></tr>",
        HEADER_CELLS.len() + 1,
        p.kind.keyword(),
        mode_name(p.mode),
        if p.backend.is_some() {
            format!(", balance {}", algo_name(p.balance))
        } else {
            String::new()
        },
        p.description
            .as_deref()
            .map(|d| format!(": {}", esc(d)))
            .unwrap_or_default(),
    );
    out.push_str("<tr class=\"titre\"><th rowspan=\"2\" class=\"name\"></th>");
    for (group, span) in HEADER_GROUPS {
        let _ = write!(out, "<th colspan=\"{span}\">{group}</th>");
    }
    out.push_str("</tr>\n<tr class=\"titre\">");
    for cell in HEADER_CELLS {
        let _ = write!(out, "<th>{cell}</th>");
    }
    out.push_str("</tr>\n");
    if let Some(t) = &p.frontend {
        frontend_row(out, p, t);
    }
    for s in p
        .servers
        .iter()
        .filter(|s| !opts.only_up || s.status.is_up())
    {
        server_row(out, p, s, opts);
    }
    if let Some(b) = &p.backend {
        backend_row(out, p, b);
    }
    out.push_str("</table>\n");
}

/// Cells shared by every row kind, from Queue to Errors/Req.
struct Cells {
    html: String,
}

impl Cells {
    fn new(class: &str, name: &str, title: Option<&str>) -> Cells {
        let title = title.map_or(String::new(), |t| format!(" title=\"{}\"", esc(t)));
        Cells {
            html: format!(
                "<tr class=\"{class}\"><td class=\"name\"{title}>{}</td>",
                esc(name)
            ),
        }
    }

    fn num(&mut self, n: u64) -> &mut Self {
        let _ = write!(self.html, "<td>{n}</td>");
        self
    }

    fn opt(&mut self, n: Option<u64>) -> &mut Self {
        match n {
            Some(n) => self.num(n),
            None => self.text(""),
        }
    }

    fn text(&mut self, s: &str) -> &mut Self {
        let _ = write!(self.html, "<td>{}</td>", esc(s));
        self
    }

    fn blank(&mut self, n: usize) -> &mut Self {
        for _ in 0..n {
            self.html.push_str("<td></td>");
        }
        self
    }

    fn sessions(&mut self, t: &Traffic, lbtot: Option<u64>) -> &mut Self {
        self.num(t.session_rate)
            .num(t.session_rate_max)
            .text("")
            .num(t.current)
            .num(t.max)
            .opt(t.limit)
            .num(t.total)
            .opt(lbtot)
            .text(&t.last_session_secs.map_or("never".into(), human_secs))
            .num(t.bytes_in)
            .num(t.bytes_out)
    }

    fn http(&mut self, mode: Mode, t: &Traffic) -> &mut Self {
        if mode != Mode::Http {
            return self.blank(6);
        }
        for n in t.http_responses {
            self.num(n);
        }
        self
    }

    fn finish(&mut self, out: &mut String) {
        self.html.push_str("</tr>\n");
        out.push_str(&self.html);
    }
}

fn frontend_row(out: &mut String, p: &ProxyView, t: &Traffic) {
    Cells::new("frontend", "Frontend", None)
        .blank(3)
        .sessions(t, None)
        .num(t.denied_req)
        .num(t.denied_resp)
        .num(t.failed_req)
        .blank(4)
        .http(p.mode, t)
        .text("OPEN")
        .blank(9)
        .finish(out);
}

fn server_row(out: &mut String, p: &ProxyView, s: &ServerView, opts: &PageOptions<'_>) {
    let title = opts.show_legends.then(|| server_title(s));
    let t = &s.traffic;
    let mut row = Cells::new(server_class(s), &s.name, title.as_deref());
    row.num(t.queue_current)
        .num(t.queue_max)
        .text("")
        .sessions(t, Some(t.total))
        .text("")
        .num(t.denied_resp)
        .text("")
        .num(t.failed_conn)
        .num(t.failed_resp)
        .num(t.retries)
        .num(t.redispatches)
        .http(p.mode, t)
        .text(&format!(
            "{} {}",
            human_secs(s.last_change_secs),
            s.status.text()
        ))
        .text(&last_check(s))
        .num(u64::from(s.weight))
        .text(if s.backup { "-" } else { "Y" })
        .text(if s.backup { "Y" } else { "-" });
    match &s.check {
        Some(c) => row
            .num(c.failures)
            .num(s.downs)
            .text(&human_secs(s.downtime_secs)),
        None => row.blank(3),
    };
    row.text("-")
        .text(p.backend.as_ref().and_then(|b| b.engine).unwrap_or("-"))
        .finish(out);
}

fn backend_row(out: &mut String, p: &ProxyView, b: &BackendView) {
    let t = &b.traffic;
    Cells::new("backend", "Backend", None)
        .num(t.queue_current)
        .num(t.queue_max)
        .text("")
        .sessions(t, Some(t.total))
        .num(t.denied_req)
        .num(t.denied_resp)
        .text("")
        .num(t.failed_conn)
        .num(t.failed_resp)
        .num(t.retries)
        .num(t.redispatches)
        .http(p.mode, t)
        .text(&format!(
            "{} {}",
            human_secs(b.last_change_secs),
            if b.up { "UP" } else { "DOWN" }
        ))
        .text("")
        .num(u64::from(b.weight))
        .num(u64::from(b.active))
        .num(u64::from(b.backup))
        .text("")
        .num(b.downs)
        .text(&human_secs(b.downtime_secs))
        .text("")
        .text(b.engine.unwrap_or("-"))
        .finish(out);
}

/// HAProxy's row class names, which its colours (and operators' eyes) key on.
fn server_class(s: &ServerView) -> &'static str {
    let tier = |active: &'static str, backup: &'static str| if s.backup { backup } else { active };
    match s.status {
        Status::Up => tier("active_up", "backup_up"),
        Status::Down => tier("active_down", "backup_down"),
        Status::GoingDown { .. } => tier("active_going_down", "backup_going_down"),
        Status::GoingUp { .. } => tier("active_going_up", "backup_going_up"),
        Status::Drain => tier("active_draining", "backup_draining"),
        Status::NoCheck => tier("active_no_check", "backup_no_check"),
        Status::Maint => "maintain",
    }
}

/// `L4OK in 0ms`, `L7STS/503 in 1ms`, as HAProxy's LastChk column.
fn last_check(s: &ServerView) -> String {
    match &s.check {
        None => String::new(),
        Some(c) if c.status.code() == "INI" => "INI".into(),
        Some(c) => {
            let code = c.code.map(|code| format!("/{code}")).unwrap_or_default();
            format!("{}{code} in {}ms", c.status.code(), c.duration_ms)
        }
    }
}

/// The tooltip `stats show-legends` adds: address and check settings.
fn server_title(s: &ServerView) -> String {
    let mut t = format!("address: {}", s.addr);
    if let Some(c) = &s.check {
        let _ = write!(
            t,
            ", check: {} ({}), rise {} fall {} health {}/{}",
            c.status.code(),
            c.status.description(),
            c.rise,
            c.fall,
            c.health,
            c.rise.saturating_add(c.fall) - 1
        );
    }
    t
}

/// HAProxy's compact durations: `12s`, `5m3s`, `2h7m`, `3d4h`.
pub fn human_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::snapshot;

    fn page(opts: PageOptions<'_>) -> String {
        render(&snapshot(), &opts)
    }

    #[test]
    fn lists_every_proxy_and_server_with_state() {
        let html = page(PageOptions::default());
        for name in ["stats", "rtmp_lb", "backend_rtmp", "ams1", "ams2"] {
            assert!(html.contains(&format!(">{name}")), "{name} missing");
        }
        assert!(html.contains("class=\"active_up\""));
        assert!(html.contains("class=\"active_down\""));
        assert!(html.contains(" UP</td>"));
        assert!(html.contains(" DOWN</td>"));
        assert!(html.contains("L4OK in 1ms"));
        assert!(html.contains("L4CON in 2ms"));
        assert!(html.contains("<td>copy</td>"), "forwarding engine shown");
        assert!(
            html.contains("<td>1000</td><td>2000</td>"),
            "bytes in and out"
        );
    }

    #[test]
    fn http_check_results_show_their_code() {
        let html = render(
            &crate::stats::tests::http_checked_snapshot(),
            &PageOptions::default(),
        );
        assert!(html.contains("L7OK/200 in 3ms"), "as HAProxy's LastChk");
        assert!(html.contains("L7STS/503 in 4ms"));
    }

    #[test]
    fn is_self_contained() {
        let html = page(PageOptions::default());
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<link"));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn version_refresh_and_legends_follow_options() {
        let shown = page(PageOptions::default());
        assert!(shown.contains(&format!("version = {}", env!("CARGO_PKG_VERSION"))));
        assert!(!shown.contains("http-equiv=\"refresh\""));
        assert!(!shown.contains("address: "));
        let opts = PageOptions {
            hide_version: true,
            refresh_secs: Some(10),
            show_legends: true,
            only_up: true,
            uri: "/haproxy_stats",
        };
        let hidden = page(opts);
        assert!(!hidden.contains("version ="));
        assert!(hidden.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(hidden.contains("title=\"address: 172.30.0.42:1935"));
        assert!(hidden.contains("href=\"/haproxy_stats;csv\""));
        assert!(!hidden.contains(">ams2<"), ";up hides DOWN servers");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(303), "5m3s");
        assert_eq!(human_secs(7620), "2h7m");
        assert_eq!(human_secs(3 * 86_400 + 4 * 3600 + 5), "3d4h");
    }

    #[test]
    fn rows_have_one_cell_per_header() {
        let html = page(PageOptions::default());
        for row in html.split("<tr class=\"").skip(1) {
            let class = row.split('"').next().unwrap_or("");
            if class == "titre" {
                continue;
            }
            let cells = row
                .split("</tr>")
                .next()
                .unwrap_or("")
                .matches("<td")
                .count();
            assert_eq!(cells, HEADER_CELLS.len() + 1, "row {class}: {row}");
        }
    }
}
