//! `show info`, `show stat`, `show servers state`, `show ssl cert`: HAProxy's layouts, filled
//! from the registry.

use std::fmt::Write;
use std::path::PathBuf;

use super::command::StatFilter;
use crate::counters::{CheckStatus, Process, PROCESS};
use crate::plan::Registry;
use crate::stats::Snapshot;
use crate::upstream::{Admin, ServerState};

/// `show info`: HAProxy's `Field: value` lines for what this proxy has (memory pools,
/// SSL rates and compression, which it does not keep, are left out rather than shown as 0).
pub fn info(reg: &Registry) -> String {
    let snap = Snapshot::take(reg);
    let p = &snap.process;
    let up = p.uptime_secs;
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k}: {v}");
    };
    line("Name", env!("CARGO_PKG_NAME").to_string());
    line("Version", p.version.to_string());
    line("Nbthread", p.threads.to_string());
    line("Nbproc", "1".into());
    line("Process_num", "1".into());
    line("Pid", p.pid.to_string());
    line(
        "Uptime",
        format!(
            "{}d {}h{:02}m{:02}s",
            up / 86400,
            up / 3600 % 24,
            up / 60 % 60,
            up % 60
        ),
    );
    line("Uptime_sec", up.to_string());
    line("Start_time_sec", p.start_secs.to_string());
    line("Ulimit-n", limit.to_string());
    line("Maxconn", p.maxconn.to_string());
    line("Hard_maxconn", p.maxconn.to_string());
    line("CurrConns", p.current_connections.to_string());
    line("CumConns", p.total_connections.to_string());
    line("CurrSslConns", {
        let user = Process::read(&PROCESS.tls_user_sessions);
        let kernel = Process::read(&PROCESS.ktls_sessions);
        (user + kernel).to_string()
    });
    line("Stopping", "0".into());
    line("DroppedLogs", p.dropped_logs.to_string());
    if let Some(node) = &p.node {
        line("node", node.clone());
    }
    if let Some(d) = &p.description {
        line("description", d.clone());
    }
    line("Event_driver", p.driver.unwrap_or("unknown").to_string());
    out
}

/// `show stat`: the `;csv` document, rows filtered as HAProxy's arguments ask.
pub fn stat(reg: &Registry, f: &StatFilter) -> String {
    let csv = crate::stats::csv_table(reg, f.only_up);
    let id_of = |name: &str| reg.proxy(name).map(|p| p.id.to_string());
    let mut out = String::new();
    for (i, row) in csv.lines().enumerate() {
        let mut fields = row.split(',');
        let (px, sv) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let status = row.split(',').nth(17).unwrap_or("");
        let kind = match sv {
            "FRONTEND" => 1,
            "BACKEND" => 2,
            _ => 4,
        };
        let keep = i == 0
            || (f
                .proxy
                .as_deref()
                .is_none_or(|want| want == px || id_of(px).as_deref() == Some(want))
                && f.types.is_none_or(|mask| mask & kind != 0)
                && !(f.no_maint && kind == 4 && status == "MAINT"));
        if keep {
            out.push_str(row);
            out.push('\n');
        }
    }
    out
}

/// HAProxy's `show servers state` columns (format version 1).
pub const SERVERS_STATE_COLUMNS: &str = "# be_id be_name srv_id srv_name srv_addr srv_op_state \
     srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
     srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
     srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
     srv_agent_addr srv_agent_port";

/// `show servers state [backend]`: one line per server in HAProxy's numeric codes, so a
/// state file written from it reads as HAProxy's.
pub fn servers_state(reg: &Registry, backend: Option<&str>) -> Result<String, String> {
    if let Some(b) = backend {
        if reg.backend(b).is_none() {
            return Err("Can't find backend.".into());
        }
    }
    let snap = Snapshot::take(reg);
    let mut out = format!("1\n{SERVERS_STATE_COLUMNS}\n");
    for p in reg.proxies() {
        let Some(set) = &p.backend else { continue };
        if backend.is_some_and(|b| b != p.name) {
            continue;
        }
        let view = snap.proxies.iter().find(|v| v.name == p.name);
        for s in set.servers().iter() {
            let check = view
                .and_then(|v| v.servers.iter().find(|x| x.name == s.name))
                .and_then(|x| x.check.as_ref());
            let op_state = match s.state() {
                ServerState::Up => 2,
                // HAProxy keeps the checks' verdict under maintenance: so does this line.
                ServerState::Maint if s.stats.check.streak() == 0 => 2,
                _ => 0,
            };
            let admin = match s.admin() {
                Admin::Ready => 0,
                Admin::Maint if s.params.disabled => 0x04,
                Admin::Maint => 0x01,
                Admin::Drain => 0x08,
            };
            let (status, result, health, check_state) = match check {
                Some(c) => (
                    hchk_status(c.status),
                    check_result(c.status),
                    c.health,
                    // CHK_ST_CONFIGURED | CHK_ST_ENABLED, and PAUSED in maintenance.
                    if s.admin() == Admin::Maint {
                        0x0e
                    } else {
                        0x06
                    },
                ),
                None => (0, 0, 0, 0),
            };
            let addr = s.addr();
            let check_addr = s
                .params
                .check_addr
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            let _ = writeln!(
                out,
                "{} {} {} {} {} {op_state} {admin} {} {} {} {status} {result} {health} \
                 {check_state} 0 0 0 - {} - {} {} {check_addr} - 0",
                p.id,
                p.name,
                s.index + 1,
                s.name,
                addr.ip(),
                s.weight(),
                s.params.weight,
                s.since_change().as_secs(),
                addr.port(),
                u8::from(s.params.check_ssl),
                s.params.check_port.unwrap_or(0),
            );
        }
    }
    Ok(out)
}

/// HAProxy's `HCHK_STATUS_*` number of a check status.
fn hchk_status(s: CheckStatus) -> u8 {
    match s {
        CheckStatus::Init => 1,
        CheckStatus::SocketError => 5,
        CheckStatus::Ok => 6,
        CheckStatus::Timeout => 7,
        CheckStatus::ConnRefused => 8,
        CheckStatus::L6Ok => 9,
        CheckStatus::L6Timeout => 10,
        CheckStatus::L6Response => 11,
        CheckStatus::L7Timeout => 12,
        CheckStatus::L7Response => 13,
        CheckStatus::L7Ok => 15,
        CheckStatus::L7Status => 17,
    }
}

/// HAProxy's `CHK_RES_*`: unknown, failed or passed.
fn check_result(s: CheckStatus) -> u8 {
    match s {
        CheckStatus::Init => 0,
        s if s.passed() => 3,
        _ => 2,
    }
}

/// `show ssl cert [file]`: the loaded certificate files.
pub fn ssl_certs(files: &[PathBuf], which: Option<&str>) -> Result<String, String> {
    match which {
        None => {
            let mut out = String::from("# filename\n");
            for f in files {
                let _ = writeln!(out, "{}", f.display());
            }
            Ok(out)
        }
        Some(name) if files.iter().any(|f| f.as_os_str() == name) => {
            Ok(format!("Filename: {name}\nStatus: Used\n"))
        }
        Some(_) => {
            Err("Can't display the certificate: Not found or the certificate is a bundle!".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TEST_CONFIG;

    fn registry() -> Registry {
        let cfg = crate::config::parse_str(TEST_CONFIG, std::path::Path::new("test.cfg"))
            .expect("config");
        Registry::from_config(&cfg)
    }

    #[test]
    fn servers_state_has_haproxys_columns_and_codes() {
        let reg = registry();
        let set = reg.backend("backend_rtmp").expect("backend");
        if let Some(s) = set.server("ams2") {
            s.set_admin(Admin::Drain);
        }
        let text = servers_state(&reg, Some("backend_rtmp")).expect("state");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "1");
        assert_eq!(lines[1].split(' ').count(), 26, "# and 25 columns");
        assert_eq!(lines.len(), 4);
        let ams1: Vec<&str> = lines[2].split(' ').collect();
        assert_eq!(ams1.len(), 25);
        assert_eq!(
            &ams1[..9],
            [
                "3",
                "backend_rtmp",
                "1",
                "ams1",
                "172.30.0.42",
                "2",
                "0",
                "1",
                "1"
            ]
        );
        assert_eq!(ams1[13], "6", "a check is configured and enabled");
        assert_eq!(ams1[18], "1935");
        let ams2: Vec<&str> = lines[3].split(' ').collect();
        assert_eq!(ams2[6], "8", "drain is HAProxy's FDRAIN");
        assert_eq!(
            servers_state(&reg, Some("nope")),
            Err("Can't find backend.".into())
        );
    }

    #[test]
    fn stat_keeps_the_header_and_filters_rows() {
        let reg = registry();
        let all = stat(&reg, &StatFilter::default());
        assert!(all.starts_with("# pxname,svname,qcur,"));
        assert_eq!(all.lines().count(), 1 + 2 + 1 + 2 + 1);
        let servers = stat(
            &reg,
            &StatFilter {
                proxy: Some("backend_rtmp".into()),
                types: Some(4),
                ..StatFilter::default()
            },
        );
        let rows: Vec<&str> = servers.lines().skip(1).collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].starts_with("backend_rtmp,ams1,"));
        assert!(
            rows[0].contains(",172.30.0.42:1935,"),
            "addresses shown: {}",
            rows[0]
        );
        let by_id = stat(
            &reg,
            &StatFilter {
                proxy: Some("3".into()),
                ..StatFilter::default()
            },
        );
        assert_eq!(by_id.lines().count(), 1 + 3);
    }

    #[test]
    fn info_has_haproxys_fields() {
        let text = info(&registry());
        for field in [
            "Name: ",
            "Version: ",
            "Pid: ",
            "Uptime_sec: ",
            "Maxconn: 2000",
            "CurrConns: 0",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        assert!(text.lines().all(|l| l.contains(": ")));
    }

    #[test]
    fn ssl_cert_lists_files() {
        let files = [PathBuf::from("/etc/ssl/a.pem")];
        assert_eq!(
            ssl_certs(&files, None),
            Ok("# filename\n/etc/ssl/a.pem\n".into())
        );
        assert!(ssl_certs(&files, Some("/etc/ssl/a.pem")).is_ok());
        assert!(ssl_certs(&files, Some("/x")).is_err());
    }
}
