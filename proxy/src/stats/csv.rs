//! HAProxy's `show stat` table: the CSV behind `;csv` and the field list behind `;json`.
//! Column names and order are HAProxy 2.6's (management guide, section 9.1), so scripts and
//! collectors written for HAProxy read ours unchanged. Extra counters of HAProxy's modules
//! (after its `-` column) do not exist here and are not emitted.

use std::fmt::Write;

use crate::config::{Balance, Mode};

use super::snapshot::{BackendView, ProxyView, ServerView, Snapshot, Traffic};

/// The static fields of HAProxy 2.6's proxy statistics, in order.
pub const COLUMNS: [&str; 103] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
];

/// One cell: HAProxy leaves a field empty where it does not apply to the row's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Empty,
    Num(u64),
    /// Signed, for HAProxy's `-1` ("never").
    Signed(i64),
    Str(String),
}

/// One line of the table.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    Frontend(&'a ProxyView, &'a Traffic),
    Server(&'a ProxyView, &'a ServerView),
    Backend(&'a ProxyView, &'a BackendView),
}

/// What the request asked to see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `stats show-legends`: server addresses are shown.
    pub legends: bool,
    /// `;up`: servers that are not UP are left out.
    pub only_up: bool,
}

/// Every row of a snapshot in HAProxy's order: per proxy, frontend, servers, backend.
pub fn rows<'a>(snap: &'a Snapshot, opts: Options) -> Vec<Row<'a>> {
    let mut out = Vec::new();
    for p in &snap.proxies {
        if let Some(t) = &p.frontend {
            out.push(Row::Frontend(p, t));
        }
        let shown = p
            .servers
            .iter()
            .filter(|s| !opts.only_up || s.status.is_up());
        out.extend(shown.map(|s| Row::Server(p, s)));
        if let Some(b) = &p.backend {
            out.push(Row::Backend(p, b));
        }
    }
    out
}

/// The whole `;csv` document: header line, then one line per row.
pub fn render(snap: &Snapshot, opts: Options) -> String {
    let mut out = String::from("# ");
    for c in COLUMNS {
        out.push_str(c);
        out.push(',');
    }
    out.push('\n');
    for row in rows(snap, opts) {
        for col in COLUMNS {
            write_field(&mut out, &value(col, row, opts));
            out.push(',');
        }
        out.push('\n');
    }
    out
}

fn write_field(out: &mut String, f: &Field) {
    match f {
        Field::Empty => {}
        Field::Num(n) => {
            let _ = write!(out, "{n}");
        }
        Field::Signed(n) => {
            let _ = write!(out, "{n}");
        }
        Field::Str(s) => out.push_str(&escape(s)),
    }
}

/// RFC 4180 quoting, only where needed (as HAProxy's `csv_enc`).
fn escape(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

pub fn algo_name(b: Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::Source => "source",
        Balance::First => "first",
        Balance::Uri => "uri",
        Balance::UrlParam => "url_param",
        Balance::Hdr => "hdr",
        Balance::Random => "random",
    }
}

/// The value of column `col` for `row`.
pub fn value(col: &str, row: Row<'_>, opts: Options) -> Field {
    let (p, kind_fields) = match row {
        Row::Frontend(p, t) => (p, frontend(col, p, t)),
        Row::Server(p, s) => (p, server(col, p, s, opts)),
        Row::Backend(p, b) => (p, backend(col, p, b, opts)),
    };
    if let Some(f) = kind_fields {
        return f;
    }
    let traffic = match row {
        Row::Frontend(_, t) => t,
        Row::Server(_, s) => &s.traffic,
        Row::Backend(_, b) => &b.traffic,
    };
    if let Some(f) = common(col, p, traffic) {
        return f;
    }
    if p.mode == Mode::Http {
        if let Some(f) = http(col, traffic) {
            return f;
        }
    }
    Field::Empty
}

/// Fields every row kind fills the same way.
fn common(col: &str, p: &ProxyView, t: &Traffic) -> Option<Field> {
    let n = Field::Num;
    Some(match col {
        "pxname" => Field::Str(p.name.clone()),
        "scur" => n(t.current),
        "smax" => n(t.max),
        "stot" => n(t.total),
        "bin" => n(t.bytes_in),
        "bout" => n(t.bytes_out),
        "dresp" => n(t.denied_resp),
        "pid" => n(1),
        "iid" => n(u64::from(p.id)),
        "rate" => n(t.session_rate),
        "rate_max" => n(t.session_rate_max),
        "mode" => Field::Str(mode_name(p.mode).into()),
        "wrew" => n(0),
        "eint" => n(t.internal_errors),
        _ => return None,
    })
}

/// HTTP-only fields, filled for `mode http` proxies only (HAProxy leaves them empty in tcp).
fn http(col: &str, t: &Traffic) -> Option<Field> {
    let i = match col {
        "hrsp_1xx" => 0,
        "hrsp_2xx" => 1,
        "hrsp_3xx" => 2,
        "hrsp_4xx" => 3,
        "hrsp_5xx" => 4,
        "hrsp_other" => 5,
        _ => return None,
    };
    Some(Field::Num(t.http_responses[i]))
}

fn frontend(col: &str, p: &ProxyView, t: &Traffic) -> Option<Field> {
    let n = Field::Num;
    let http = p.mode == Mode::Http;
    Some(match col {
        "svname" => Field::Str("FRONTEND".into()),
        "slim" => t.limit.map_or(Field::Empty, n),
        "dreq" => n(t.denied_req),
        "ereq" => n(t.failed_req),
        "status" => Field::Str("OPEN".into()),
        "sid" => n(0),
        "type" => n(0),
        "rate_lim" => n(0),
        "req_rate" => n(t.request_rate),
        "req_rate_max" => n(t.request_rate_max),
        "req_tot" => n(t.http_requests),
        "comp_in" | "comp_out" | "comp_byp" | "comp_rsp" => n(0),
        "intercepted" | "cache_lookups" | "cache_hits" if http => n(0),
        "conn_rate" => n(t.connection_rate),
        "conn_rate_max" => n(t.connection_rate_max),
        "conn_tot" => n(t.connections),
        "dcon" | "dses" => n(0),
        _ => return None,
    })
}

/// Fields backends and servers share.
fn backend_side(col: &str, p: &ProxyView, t: &Traffic) -> Option<Field> {
    let n = Field::Num;
    Some(match col {
        "qcur" => n(t.queue_current),
        "qmax" => n(t.queue_max),
        "econ" => n(t.failed_conn),
        "eresp" => n(t.failed_resp),
        "wretr" => n(t.retries),
        "wredis" => n(t.redispatches),
        "lbtot" => n(t.total),
        "cli_abrt" => n(t.client_aborts),
        "srv_abrt" => n(t.server_aborts),
        "lastsess" => Field::Signed(t.last_session_secs.map_or(-1, |s| s as i64)),
        "connect" => n(t.connect_attempts),
        "reuse" => n(0),
        "req_tot" if p.mode == Mode::Http => n(t.http_requests),
        "qtime" => n(t.times_avg[0]),
        "ctime" => n(t.times_avg[1]),
        "rtime" => n(t.times_avg[2]),
        "ttime" => n(t.times_avg[3]),
        "qtime_max" => n(t.times_max[0]),
        "ctime_max" => n(t.times_max[1]),
        "rtime_max" => n(t.times_max[2]),
        "ttime_max" => n(t.times_max[3]),
        _ => return None,
    })
}

fn server(col: &str, p: &ProxyView, s: &ServerView, opts: Options) -> Option<Field> {
    if let Some(f) = backend_side(col, p, &s.traffic) {
        return Some(f);
    }
    if let Some(f) = server_check(col, s) {
        return Some(f);
    }
    let n = Field::Num;
    Some(match col {
        "svname" => Field::Str(s.name.clone()),
        "slim" => s.traffic.limit.map_or(Field::Empty, n),
        "qlimit" => s.queue_limit.map_or(Field::Empty, |q| n(u64::from(q))),
        "status" => Field::Str(s.status.text()),
        "weight" | "uweight" => n(u64::from(s.weight)),
        "act" => n(u64::from(!s.backup)),
        "bck" => n(u64::from(s.backup)),
        "lastchg" => n(s.last_change_secs),
        "sid" => n(u64::from(s.id)),
        "type" => n(2),
        "addr" if opts.legends => Field::Str(s.addr.clone()),
        "srv_icur" | "idle_conn_cur" | "safe_conn_cur" | "need_conn_est" => n(0),
        "used_conn_cur" => n(s.traffic.current),
        _ => return None,
    })
}

/// Check-related server fields: filled only for servers with `check`.
fn server_check(col: &str, s: &ServerView) -> Option<Field> {
    let c = s.check.as_ref()?;
    let n = Field::Num;
    Some(match col {
        "chkfail" => n(c.failures),
        "chkdown" => n(s.downs),
        "downtime" => n(s.downtime_secs),
        "check_status" => Field::Str(c.status.code().into()),
        "check_code" => c.code.map_or(Field::Empty, |code| n(u64::from(code))),
        "check_duration" if c.status.code() != "INI" => n(c.duration_ms),
        "check_desc" => Field::Str(c.status.description().into()),
        "last_chk" => Field::Str(c.info.clone()),
        "check_rise" => n(u64::from(c.rise)),
        "check_fall" => n(u64::from(c.fall)),
        "check_health" => n(u64::from(c.health)),
        _ => return None,
    })
}

fn backend(col: &str, p: &ProxyView, b: &BackendView, opts: Options) -> Option<Field> {
    if let Some(f) = backend_side(col, p, &b.traffic) {
        return Some(f);
    }
    let n = Field::Num;
    let http = p.mode == Mode::Http;
    Some(match col {
        "svname" => Field::Str("BACKEND".into()),
        "slim" => b.traffic.limit.map_or(Field::Empty, n),
        "dreq" => n(b.traffic.denied_req),
        "status" => Field::Str(if b.up { "UP" } else { "DOWN" }.into()),
        "weight" | "uweight" => n(u64::from(b.weight)),
        "act" => n(u64::from(b.active)),
        "bck" => n(u64::from(b.backup)),
        "chkdown" => n(b.downs),
        "lastchg" => n(b.last_change_secs),
        "downtime" if !p.servers.is_empty() => n(b.downtime_secs),
        "sid" => n(0),
        "type" => n(1),
        "algo" if opts.legends => Field::Str(algo_name(p.balance).into()),
        "comp_in" | "comp_out" | "comp_byp" | "comp_rsp" => n(0),
        "cache_lookups" | "cache_hits" if http => n(0),
        "agg_server_status" | "agg_server_check_status" | "agg_check_status" => n(0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::snapshot;

    /// HAProxy 2.6's header, written out in full so a change to `COLUMNS` cannot go unseen.
    const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,\
econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,\
sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,\
hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,\
cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,\
rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,\
check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,\
conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,\
qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,\
need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,";

    fn cells(line: &str) -> Vec<&str> {
        let mut v: Vec<&str> = line.split(',').collect();
        assert_eq!(v.pop(), Some(""), "every line ends with a comma");
        v
    }

    fn column(name: &str) -> usize {
        COLUMNS.iter().position(|c| *c == name).expect("column")
    }

    #[test]
    fn header_is_haproxy_26_exactly() {
        let out = render(&snapshot(), Options::default());
        assert_eq!(out.lines().next(), Some(HEADER));
        assert_eq!(COLUMNS.len(), 103);
        assert_eq!(column("uweight"), 99);
    }

    #[test]
    fn rows_come_per_proxy_in_haproxy_order() {
        let out = render(&snapshot(), Options::default());
        let names: Vec<(&str, &str)> = out
            .lines()
            .skip(1)
            .map(|l| {
                let c = cells(l);
                assert_eq!(c.len(), COLUMNS.len(), "{l}");
                (c[0], c[1])
            })
            .collect();
        assert_eq!(
            names,
            [
                ("stats", "FRONTEND"),
                ("stats", "BACKEND"),
                ("rtmp_lb", "FRONTEND"),
                ("backend_rtmp", "ams1"),
                ("backend_rtmp", "ams2"),
                ("backend_rtmp", "BACKEND"),
            ]
        );
    }

    #[test]
    fn server_and_backend_values() {
        let out = render(&snapshot(), Options::default());
        let lines: Vec<&str> = out.lines().collect();
        let ams1 = cells(lines[4]);
        let ams2 = cells(lines[5]);
        let be = cells(lines[6]);
        let at = |row: &[&str], name: &str| row[column(name)].to_string();
        assert_eq!(at(&ams1, "status"), "UP");
        assert_eq!(at(&ams1, "check_status"), "L4OK");
        assert_eq!(at(&ams1, "check_desc"), "Layer4 check passed");
        assert_eq!(at(&ams1, "bin"), "1000");
        assert_eq!(at(&ams1, "bout"), "2000");
        assert_eq!(at(&ams1, "type"), "2");
        assert_eq!(at(&ams1, "sid"), "1");
        assert_eq!(at(&ams1, "addr"), "", "addresses need show-legends");
        assert_eq!(at(&ams1, "hrsp_2xx"), "", "no HTTP figures in mode tcp");
        assert_eq!(at(&ams2, "status"), "DOWN");
        assert_eq!(at(&ams2, "check_status"), "L4CON");
        assert_eq!(at(&ams2, "chkdown"), "1");
        assert_eq!(at(&be, "status"), "UP");
        assert_eq!(at(&be, "act"), "1");
        assert_eq!(at(&be, "algo"), "", "the algorithm needs show-legends");
        assert_eq!(at(&be, "slim"), "200", "HAProxy's default fullconn");
        assert_eq!(at(&be, "ctime"), "0");
        assert_eq!(at(&be, "type"), "1");
        assert_eq!(at(&be, "lastsess"), "-1");
    }

    #[test]
    fn http_check_results_fill_check_code_and_last_chk() {
        let out = render(
            &crate::stats::tests::http_checked_snapshot(),
            Options::default(),
        );
        let lines: Vec<&str> = out.lines().collect();
        let (ams1, ams2) = (cells(lines[4]), cells(lines[5]));
        let at = |row: &[&str], name: &str| row[column(name)].to_string();
        assert_eq!(at(&ams1, "check_status"), "L7OK");
        assert_eq!(at(&ams1, "check_code"), "200");
        assert_eq!(at(&ams1, "check_desc"), "Layer7 check passed");
        assert_eq!(at(&ams1, "last_chk"), "");
        assert_eq!(at(&ams2, "check_status"), "L7STS");
        assert_eq!(at(&ams2, "check_code"), "503");
        assert_eq!(at(&ams2, "check_desc"), "Layer7 wrong status");
        assert_eq!(at(&ams2, "last_chk"), "Service Unavailable");
        // A layer-4 result has no code (the plain snapshot: L4OK and L4CON).
        let out = render(&snapshot(), Options::default());
        assert_eq!(
            cells(out.lines().nth(4).unwrap_or_default())[column("check_code")],
            ""
        );
    }

    #[test]
    fn legends_and_only_up() {
        let snap = snapshot();
        let opts = Options {
            legends: true,
            only_up: true,
        };
        let out = render(&snap, opts);
        assert!(out.contains("172.30.0.42:1935"));
        assert!(!out.contains(",ams2,"), "DOWN servers are hidden by ;up");
    }

    #[test]
    fn http_proxies_fill_response_classes() {
        let snap = snapshot();
        let out = render(&snap, Options::default());
        let stats_fe = cells(out.lines().nth(1).expect("line"));
        assert_eq!(stats_fe[column("hrsp_2xx")], "3");
        assert_eq!(stats_fe[column("hrsp_4xx")], "1");
        assert_eq!(stats_fe[column("req_tot")], "4");
        assert_eq!(stats_fe[column("status")], "OPEN");
        assert_eq!(stats_fe[column("slim")], "2000");
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a,b"), "\"a,b\"");
        assert_eq!(escape("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
