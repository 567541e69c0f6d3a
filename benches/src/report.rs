//! From runs to figures: per-variant medians, hop cost against the direct run of the same
//! repetition, ratios to the reference peer (HAProxy; nginx `stream` over UDP, see
//! `Kind::reference`) and to direct; then the Markdown table and the SVG chart.

use crate::hop::Variant;
use crate::record::{DnsFigures, IdleMemory, ReloadFigures, RunRecord, SrtFigures, Unit};
use crate::scenario::{Kind, Outcome};
use crate::stats::{median, median_of, paired_diffs, ratio};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub variant: String,
    pub unit: Unit,
    pub runs_ok: usize,
    pub runs: usize,
    /// The variant the `*_vs_reference` figures compare with: HAProxy, or nginx stream in
    /// the UDP scenario.
    pub reference: String,
    pub rate: Option<f64>,
    pub rate_vs_direct: Option<f64>,
    pub rate_vs_reference: Option<f64>,
    /// Whole-machine CPU-seconds per unit.
    pub machine_per_unit: Option<f64>,
    /// Machine CPU per unit minus the direct run's (paired by repetition, then median).
    pub hop_cost: Option<f64>,
    pub hop_cost_vs_reference: Option<f64>,
    /// Load + hop + kernel threads, CPU-seconds per unit, and the hop's share of it.
    pub attributed_per_unit: Option<f64>,
    pub hop_cost_attributed: Option<f64>,
    pub hop_cost_attributed_vs_reference: Option<f64>,
    /// The hop process alone, CPU-seconds per unit.
    pub hop_process: Option<f64>,
    pub hop_process_vs_reference: Option<f64>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub hop_rss_kib: Option<f64>,
    pub tcp_mem_kib: Option<f64>,
    pub kthreads_softirq_s: Option<f64>,
    /// Median busy share of the machine just before the runs (other users of the machine).
    pub background_busy_pct: Option<f64>,
    pub errors: u64,
    pub lost_bytes: i64,
    /// The idle scenario: memory per held flow instead of cost per unit.
    pub idle: Option<IdleSummary>,
    /// p50 and p99 latency minus the baseline's (routing's, in the namespace scenarios).
    pub p50_vs_baseline_us: Option<f64>,
    pub p99_vs_baseline_us: Option<f64>,
    /// The reload scenario's figures.
    pub reload: Option<ReloadSummary>,
    /// p99 latency minus the reference peer's in the same run.
    pub p99_vs_reference_us: Option<f64>,
    /// The dns-change scenario's figures.
    pub dns: Option<DnsSummary>,
    /// The srt-ingest scenario's datagram figures.
    pub srt: Option<SrtSummary>,
}

/// The srt-ingest scenario's datagram figures of one variant, summed over its repetitions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SrtSummary {
    pub sent: u64,
    pub received: u64,
    pub lost: i64,
    pub reordered: u64,
    pub send_blocked: u64,
    pub replies_sent: u64,
    pub replies_received: u64,
}

impl SrtSummary {
    fn of(rs: &[&RunRecord]) -> Option<SrtSummary> {
        let figs: Vec<&SrtFigures> = rs.iter().filter_map(|r| r.srt.as_ref()).collect();
        (!figs.is_empty()).then(|| SrtSummary {
            sent: figs.iter().map(|f| f.sent).sum(),
            received: figs.iter().map(|f| f.received).sum(),
            lost: figs.iter().map(|f| f.lost).sum(),
            reordered: figs.iter().map(|f| f.reordered).sum(),
            send_blocked: figs.iter().map(|f| f.send_blocked).sum(),
            replies_sent: figs.iter().map(|f| f.replies_sent).sum(),
            replies_received: figs.iter().map(|f| f.replies_received).sum(),
        })
    }
}

/// The dns-change scenario's figures of one variant, summed over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct DnsSummary {
    pub changes: usize,
    pub adds: usize,
    pub adds_with_flows: usize,
    pub flows_to_removed: u64,
    pub held_across_removal: u64,
    pub flows_cut: u64,
    /// Flows per backend address, summed over the runs.
    pub per_address: Vec<u64>,
    /// Maintenance lines in the hop's logs, summed over the runs (None for direct).
    pub hop_maintenance_lines: Option<usize>,
}

impl DnsSummary {
    fn of(rs: &[&RunRecord]) -> Option<DnsSummary> {
        let figs: Vec<&DnsFigures> = rs.iter().filter_map(|r| r.dns.as_ref()).collect();
        let width = figs.iter().map(|f| f.per_address.len()).max().unwrap_or(0);
        (!figs.is_empty()).then(|| DnsSummary {
            changes: figs.iter().map(|f| f.changes).sum(),
            adds: figs.iter().map(|f| f.adds).sum(),
            adds_with_flows: figs.iter().map(|f| f.adds_with_flows).sum(),
            flows_to_removed: figs.iter().map(|f| f.flows_to_removed).sum(),
            held_across_removal: figs.iter().map(|f| f.held_across_removal).sum(),
            flows_cut: figs.iter().map(|f| f.flows_cut).sum(),
            per_address: (0..width)
                .map(|i| figs.iter().filter_map(|f| f.per_address.get(i)).sum())
                .collect(),
            hop_maintenance_lines: figs
                .iter()
                .map(|f| f.hop_maintenance_lines)
                .sum::<Option<usize>>(),
        })
    }
}

/// The reload scenario's figures of one variant, over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    /// Reloads asked and shown done, summed over the runs.
    pub asked: usize,
    pub done: usize,
    pub flows_cut: u64,
    /// The most hop processes alive after the last reload in any run.
    pub processes_after_max: Option<usize>,
}

impl ReloadSummary {
    fn of(rs: &[&RunRecord]) -> Option<ReloadSummary> {
        let figs: Vec<&ReloadFigures> = rs.iter().filter_map(|r| r.reload.as_ref()).collect();
        (!figs.is_empty()).then(|| ReloadSummary {
            asked: figs.iter().map(|f| f.asked).sum(),
            done: figs.iter().map(|f| f.done).sum(),
            flows_cut: figs.iter().map(|f| f.flows_cut).sum(),
            processes_after_max: figs.iter().filter_map(|f| f.processes_after).max(),
        })
    }
}

/// The idle scenario's figures of one variant (medians over repetitions).
#[derive(Debug, Clone, Serialize)]
pub struct IdleSummary {
    pub flows: Option<f64>,
    pub rss_base_kib: Option<f64>,
    pub rss_held_kib: Option<f64>,
    /// Hop RSS growth per 1000 held flows; 0 for direct (no hop).
    pub growth_per_1000_kib: Option<f64>,
    pub growth_vs_haproxy: Option<f64>,
    /// The hop's CPU while the flows idle, ms per second.
    pub hop_cpu_ms_per_s: Option<f64>,
}

impl IdleSummary {
    fn of(v: Variant, rs: &[&RunRecord]) -> IdleSummary {
        let idle = || rs.iter().filter_map(|r| r.idle.as_ref());
        let kib =
            |f: fn(&IdleMemory) -> Option<u64>| median_of(idle().map(|m| f(m).map(|k| k as f64)));
        let growth = if v == Variant::Direct {
            Some(0.0)
        } else {
            median_of(idle().map(IdleMemory::growth_per_1000_kib))
        };
        IdleSummary {
            flows: median_of(idle().map(|m| Some(m.flows as f64))),
            rss_base_kib: kib(|m| m.rss_base_kib),
            rss_held_kib: kib(|m| m.rss_held_kib),
            growth_per_1000_kib: growth,
            growth_vs_haproxy: None,
            hop_cpu_ms_per_s: median_of(
                rs.iter()
                    .map(|r| win(r, |w| Some(w.hop_cpu_s? * 1e3 / w.secs.max(1e-9)))),
            ),
        }
    }
}

/// Summaries of one scenario, in the order its variants were listed.
pub fn summarize(o: &Outcome) -> Vec<Summary> {
    let unit = o.scenario.kind.unit();
    let runs = |v: Variant| -> Vec<&RunRecord> {
        let label = v.label();
        let mut r: Vec<&RunRecord> = o.records.iter().filter(|r| r.variant == label).collect();
        r.sort_by_key(|r| r.rep);
        r
    };
    let reps = o.records.iter().map(|r| r.rep + 1).max().unwrap_or(0);
    // Per-repetition cost, indexed by repetition (None where the run failed).
    let by_rep = |v: Variant, get: fn(&RunRecord) -> Option<f64>| -> Vec<Option<f64>> {
        let rs = runs(v);
        (0..reps)
            .map(|i| rs.iter().find(|r| r.rep == i).and_then(|r| get(r)))
            .collect()
    };
    // Direct, or routing in the namespace scenarios.
    let base = o.scenario.kind.baseline();
    let hop_cost = |v: Variant, get: fn(&RunRecord) -> Option<f64>| -> Option<f64> {
        if v == base {
            return None;
        }
        median(&paired_diffs(&by_rep(v, get), &by_rep(base, get)))
    };
    let is_idle = matches!(o.scenario.kind, Kind::Idle { .. });
    let mut out: Vec<Summary> = o
        .variants
        .iter()
        .map(|&v| {
            let rs = runs(v);
            Summary {
                scenario: o.scenario.name.to_string(),
                variant: v.label(),
                unit,
                runs_ok: rs.iter().filter(|r| r.rate().is_some()).count(),
                runs: rs.len(),
                reference: o.scenario.kind.reference().label(),
                rate: median_of(rs.iter().map(|r| r.rate())),
                rate_vs_direct: None,
                rate_vs_reference: None,
                machine_per_unit: median_of(rs.iter().map(|r| r.machine_per_unit())),
                hop_cost: hop_cost(v, RunRecord::machine_per_unit),
                hop_cost_vs_reference: None,
                attributed_per_unit: median_of(rs.iter().map(|r| r.attributed_per_unit())),
                hop_cost_attributed: hop_cost(v, RunRecord::attributed_per_unit),
                hop_cost_attributed_vs_reference: None,
                hop_process: median_of(rs.iter().map(|r| r.hop_per_unit())),
                hop_process_vs_reference: None,
                p50_us: median_of(rs.iter().map(|r| r.p50_us.map(|x| x as f64))),
                p99_us: median_of(rs.iter().map(|r| r.p99_us.map(|x| x as f64))),
                hop_rss_kib: median_of(
                    rs.iter()
                        .map(|r| win(r, |w| w.hop_rss_kib.map(|x| x as f64))),
                ),
                tcp_mem_kib: median_of(
                    rs.iter()
                        .map(|r| win(r, |w| w.tcp_mem_kib.map(|x| x as f64))),
                ),
                kthreads_softirq_s: median_of(rs.iter().map(|r| {
                    win(r, |w| {
                        Some((w.kthreads_s + w.softirq_s) / r.units.max(1e-12))
                    })
                })),
                background_busy_pct: median_of(rs.iter().map(|r| Some(r.background.busy_pct))),
                errors: rs.iter().map(|r| r.errors).sum(),
                lost_bytes: rs.iter().filter_map(|r| r.lost_bytes).sum(),
                idle: is_idle.then(|| IdleSummary::of(v, &rs)),
                p50_vs_baseline_us: None,
                p99_vs_baseline_us: None,
                reload: ReloadSummary::of(&rs),
                p99_vs_reference_us: None,
                dns: DnsSummary::of(&rs),
                srt: SrtSummary::of(&rs),
            }
        })
        .collect();
    if is_idle {
        idle_only(&mut out);
        return out;
    }
    add_ratios(&mut out, base, o.scenario.kind.reference());
    out
}

/// The idle scenario keeps only memory figures (and the hop's idle CPU): a rate of held
/// flows, or CPU per flow, would be noise presented as a result.
fn idle_only(out: &mut [Summary]) {
    for s in out.iter_mut() {
        s.rate = None;
        s.machine_per_unit = None;
        s.hop_cost = None;
        s.attributed_per_unit = None;
        s.hop_cost_attributed = None;
        s.hop_process = None;
        s.kthreads_softirq_s = None;
    }
    let haproxy = out
        .iter()
        .find(|s| s.variant == Variant::Haproxy.label())
        .and_then(|s| s.idle.as_ref()?.growth_per_1000_kib);
    for i in out.iter_mut().filter_map(|s| s.idle.as_mut()) {
        i.growth_vs_haproxy = ratio(i.growth_per_1000_kib, haproxy);
    }
}

fn win<T>(r: &RunRecord, f: impl Fn(&crate::measure::Window) -> Option<T>) -> Option<T> {
    if r.failure.is_some() {
        return None;
    }
    r.window.as_ref().and_then(f)
}

/// Ratios to the baseline (`rate_vs_direct` holds the ratio to routing in the namespace
/// scenarios) and to the reference peer (HAProxy, or nginx stream over UDP).
fn add_ratios(out: &mut [Summary], base: Variant, reference: Variant) {
    let find = |label: &str| out.iter().find(|s| s.variant == label).cloned();
    let direct = find(&base.label());
    let haproxy = find(&reference.label());
    let base_p50 = direct.as_ref().and_then(|d| d.p50_us);
    let base_p99 = direct.as_ref().and_then(|d| d.p99_us);
    for s in out.iter_mut() {
        s.rate_vs_direct = ratio(s.rate, direct.as_ref().and_then(|d| d.rate));
        if s.variant != base.label() {
            s.p50_vs_baseline_us = s.p50_us.zip(base_p50).map(|(a, b)| a - b);
            s.p99_vs_baseline_us = s.p99_us.zip(base_p99).map(|(a, b)| a - b);
        }
        if let Some(h) = &haproxy {
            s.p99_vs_reference_us = s.p99_us.zip(h.p99_us).map(|(a, b)| a - b);
            s.rate_vs_reference = ratio(s.rate, h.rate);
            s.hop_cost_vs_reference = ratio(s.hop_cost, h.hop_cost);
            s.hop_cost_attributed_vs_reference =
                ratio(s.hop_cost_attributed, h.hop_cost_attributed);
            s.hop_process_vs_reference = ratio(s.hop_process, h.hop_process);
        }
    }
}

/// Background busy share above which whole-machine figures are flagged as unreliable.
const BUSY_PCT: f64 = 20.0;

/// A reason fit for one table cell: no pipes, at most ~200 characters (the JSON keeps it all).
fn cell(s: &str) -> String {
    let s = s.replace('|', "/").replace('\n', " ");
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn f(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn x(r: Option<f64>) -> String {
    r.map_or("–".into(), |v| format!("{v:.2}×"))
}

/// The Markdown section of one scenario: a title line, the table, and what did not run.
pub fn markdown(o: &Outcome, sums: &[Summary]) -> String {
    if matches!(o.scenario.kind, Kind::Idle { .. }) {
        return idle_markdown(o, sums);
    }
    let kind = o.scenario.kind;
    let unit = kind.unit();
    let (scale, cost) = unit.cost_scale();
    let sc = |v: Option<f64>| v.map(|v| v * scale);
    let base = kind.baseline().label();
    let r = kind.reference_name();
    let extra = extra_heads(kind);
    let mut m = String::new();
    let _ = writeln!(m, "### {}: {}\n", o.scenario.name, o.scenario.title);
    let _ = writeln!(
        m,
        "| variant | {rate} | ×{base} | ×{r} | hop cost, machine {cost} | ×{r} | hop cost, attributed {cost} | ×{r} | hop process {cost} | ×{r} | p50 ms | p99 ms | hop RSS MiB | TCP mem MiB | bg busy % | runs ok | errors / lost B |{}",
        extra.iter().map(|h| format!(" {h} |")).collect::<String>(),
        rate = unit.rate_label()
    );
    m.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    m.push_str(&"---:|".repeat(extra.len()));
    m.push('\n');
    let digits = if unit == Unit::Gbit { 3 } else { 1 };
    let rate_digits = if unit == Unit::Gbit { 3 } else { 0 };
    for s in sums {
        // The baseline row shows its absolute cost in parentheses: what is subtracted.
        let (machine, attributed) = if s.variant == base {
            let p = |v: Option<f64>| format!("({})", f(sc(v), digits));
            (p(s.machine_per_unit), p(s.attributed_per_unit))
        } else {
            (
                f(sc(s.hop_cost), digits),
                f(sc(s.hop_cost_attributed), digits),
            )
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} / {} |{}",
            s.variant,
            f(s.rate, rate_digits),
            x(s.rate_vs_direct),
            x(s.rate_vs_reference),
            machine,
            x(s.hop_cost_vs_reference),
            attributed,
            x(s.hop_cost_attributed_vs_reference),
            f(sc(s.hop_process), digits),
            x(s.hop_process_vs_reference),
            f(s.p50_us.map(|u| u / 1e3), 2),
            f(s.p99_us.map(|u| u / 1e3), 2),
            f(s.hop_rss_kib.map(|k| k / 1024.0), 1),
            f(s.tcp_mem_kib.map(|k| k / 1024.0), 1),
            f(s.background_busy_pct, 0),
            s.runs_ok,
            s.runs,
            s.errors,
            s.lost_bytes,
            extra_cells(kind, s)
                .iter()
                .map(|c| format!(" {c} |"))
                .collect::<String>(),
        );
    }
    for (v, why) in &o.unavailable {
        let empty = "|".repeat(16 + extra.len());
        let _ = writeln!(m, "| {v} | {} {empty}", cell(why));
    }
    notes_below(o, sums, &mut m);
    m
}

/// Columns some scenarios add to the table: what a reload did; latency against routing.
fn extra_heads(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Reload { .. } => vec![
            "reloads done",
            "flows cut",
            "lost B",
            "hop processes after last reload (max)",
        ],
        Kind::DnsChange { .. } => vec![
            "record edits",
            "added address got flows",
            "new flows to a removed address",
            "flows held across removal",
            "removals the hop logged",
            "flows cut",
            "lost B",
            "flows per address",
            "p99 − HAProxy's ms",
        ],
        k if k.namespaced() => vec!["p99 − routing's ms"],
        Kind::SrtIngest { .. } => vec![
            "p50 − direct's µs",
            "p99 − direct's µs",
            "p99 − nginx's µs",
            "datagrams sent",
            "lost",
            "reordered",
            "send refused (EAGAIN)",
            "replies received / sent",
        ],
        _ => vec![],
    }
}

fn extra_cells(kind: Kind, s: &Summary) -> Vec<String> {
    match kind {
        Kind::Reload { .. } => match &s.reload {
            Some(r) => vec![
                format!("{}/{}", r.done, r.asked),
                r.flows_cut.to_string(),
                s.lost_bytes.to_string(),
                r.processes_after_max.map_or("–".into(), |n| n.to_string()),
            ],
            None => vec!["–".into(); 4],
        },
        Kind::DnsChange { .. } => match &s.dns {
            Some(d) => vec![
                d.changes.to_string(),
                format!("{}/{}", d.adds_with_flows, d.adds),
                d.flows_to_removed.to_string(),
                d.held_across_removal.to_string(),
                d.hop_maintenance_lines
                    .map_or("–".into(), |n| n.to_string()),
                d.flows_cut.to_string(),
                s.lost_bytes.to_string(),
                d.per_address
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                f(s.p99_vs_reference_us.map(|u| u / 1e3), 2),
            ],
            None => vec!["–".into(); 9],
        },
        k if k.namespaced() => vec![f(s.p99_vs_baseline_us.map(|u| u / 1e3), 2)],
        Kind::SrtIngest { .. } => {
            let mut cells = vec![
                f(s.p50_vs_baseline_us, 0),
                f(s.p99_vs_baseline_us, 0),
                f(s.p99_vs_reference_us, 0),
            ];
            cells.extend(match &s.srt {
                Some(d) => vec![
                    d.sent.to_string(),
                    d.lost.to_string(),
                    d.reordered.to_string(),
                    d.send_blocked.to_string(),
                    format!("{} / {}", d.replies_received, d.replies_sent),
                ],
                None => vec!["–".into(); 5],
            });
            cells
        }
        _ => vec![],
    }
}

/// The idle scenario's table: what the hop's memory grew by with the flows held, per 1000
/// flows and against HAProxy's in the same run.
fn idle_markdown(o: &Outcome, sums: &[Summary]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "### {}: {}\n", o.scenario.name, o.scenario.title);
    m.push_str(
        "| variant | flows | hop RSS after warm-up MiB | hop RSS, flows held MiB | growth per 1000 flows MiB | KiB per flow | ×HAProxy | hop CPU while idle ms/s | TCP mem MiB | bg busy % | runs ok |\n",
    );
    m.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mib = |k: Option<f64>| f(k.map(|k| k / 1024.0), 1);
    for s in sums {
        let Some(i) = &s.idle else { continue };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            s.variant,
            f(i.flows, 0),
            mib(i.rss_base_kib),
            mib(i.rss_held_kib),
            f(i.growth_per_1000_kib.map(|k| k / 1024.0), 2),
            f(i.growth_per_1000_kib.map(|k| k / 1000.0), 2),
            x(i.growth_vs_haproxy),
            f(i.hop_cpu_ms_per_s, 2),
            mib(s.tcp_mem_kib),
            f(s.background_busy_pct, 0),
            s.runs_ok,
            s.runs,
        );
    }
    for (v, why) in &o.unavailable {
        let _ = writeln!(m, "| {v} | {} ||||||||||", cell(why));
    }
    notes_below(o, sums, &mut m);
    m
}

/// The busy-machine warning, failed runs and notes under a scenario's table.
fn notes_below(o: &Outcome, sums: &[Summary], m: &mut String) {
    let busy = median_of(sums.iter().map(|s| s.background_busy_pct));
    // Memory figures do not suffer from a busy machine the way CPU ones do.
    let cpu_table = !matches!(o.scenario.kind, Kind::Idle { .. });
    if let Some(b) = busy.filter(|b| *b > BUSY_PCT && cpu_table) {
        let _ = writeln!(
            m,
            "\nWarning: the machine was {b:.0}% busy with other work just before these runs \
             (median): the whole-machine hop cost is mostly that work's noise; read the \
             attributed column."
        );
    }
    let failures: Vec<String> = o
        .records
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("- {} rep {}: {}", r.variant, r.rep + 1, cell(f)))
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(m, "\nFailed runs:\n{}", failures.join("\n"));
    }
    let notes: Vec<String> = o
        .records
        .iter()
        .filter_map(|r| {
            let n = r.note.as_ref()?;
            Some(format!("- {} rep {}: {}", r.variant, r.rep + 1, cell(n)))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(m, "\nNotes:\n{}", notes.join("\n"));
    }
    m.push('\n');
}

/// A chart panel: its title and the ratio it plots.
type Panel = (&'static str, fn(&Summary) -> Option<f64>);

const PANELS: [Panel; 3] = [
    (
        "hop cost per unit, whole machine (/proc/stat), ratio to HAProxy (srt-ingest: nginx) (lower is better)",
        |s| s.hop_cost_vs_reference,
    ),
    (
        "hop cost per unit, attributed (load+hop+kthreads), ratio to HAProxy (srt-ingest: nginx) (lower is better)",
        |s| s.hop_cost_attributed_vs_reference,
    ),
    ("throughput, ratio to HAProxy (srt-ingest: nginx) (higher is better)", |s| {
        s.rate_vs_reference
    }),
];

/// The chart: per scenario, each hop's cost and throughput as a ratio to the scenario's
/// reference peer (1.0 = HAProxy, or nginx stream in srt-ingest: the black line).
pub fn svg(all: &[Vec<Summary>], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    // The idle scenario has no cost or throughput to plot: its table says what it measured.
    let plotted = |s: &&Vec<Summary>| !s.is_empty() && s.iter().all(|x| x.idle.is_none());
    let scen: Vec<&Vec<Summary>> = all.iter().filter(plotted).collect();
    let mut variants: Vec<String> = Vec::new();
    for s in scen.iter().flat_map(|v| v.iter()) {
        if s.variant != Variant::Direct.label() && !variants.contains(&s.variant) {
            variants.push(s.variant.clone());
        }
    }
    let width = 160 * scen.len().max(1) as u32 + 260;
    let root = SVGBackend::new(path, (width, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    for (area, (title, get)) in root.split_evenly((3, 1)).iter().zip(PANELS) {
        // Rows: scenarios; columns: variants.
        let vals: Vec<Vec<Option<f64>>> = scen
            .iter()
            .map(|sums| {
                variants
                    .iter()
                    .map(|v| sums.iter().find(|s| &s.variant == v).and_then(get))
                    .collect()
            })
            .collect();
        let names: Vec<String> = scen.iter().map(|v| v[0].scenario.clone()).collect();
        draw_panel(area, title, &names, &variants, &vals)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    names: &[String],
    variants: &[String],
    vals: &[Vec<Option<f64>>],
) -> Result<(), String> {
    use plotters::prelude::*;
    let n = names.len().max(1);
    let ymax = vals
        .iter()
        .flatten()
        .flatten()
        .fold(1.5f64, |a, &b| a.max(b))
        .min(5.0)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        // One empty column on the right keeps the legend off the bars.
        .build_cartesian_2d(0f64..n as f64 + 1.0, 0f64..ymax)
        .map_err(|e| e.to_string())?;
    let label = |v: &f64| {
        let i = (*v - 0.5).round();
        let on_centre = (v - 0.5 - i).abs() < 0.01 && i >= 0.0;
        on_centre
            .then(|| names.get(i as usize).cloned())
            .flatten()
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 3)
        .x_label_formatter(&label)
        .draw()
        .map_err(|e| e.to_string())?;
    let w = 0.8 / variants.len().max(1) as f64;
    for (vi, vname) in variants.iter().enumerate() {
        let color = Palette99::pick(vi).to_rgba();
        let bars = vals.iter().enumerate().filter_map(|(si, row)| {
            // Negative ratios (noise larger than the hop's cost) are drawn as zero.
            let y = row[vi]?.clamp(0.0, ymax);
            let x0 = si as f64 + 0.1 + vi as f64 * w;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + w * 0.9, y)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(vname.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (n as f64 + 1.0, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Background, Window};
    use crate::scenario::{all, Outcome};

    fn rec(variant: Variant, rep: usize, units: f64, machine: f64, hop: Option<f64>) -> RunRecord {
        let mut r = RunRecord::new(
            "ingest-200x4",
            &variant.label(),
            rep,
            Background {
                loadavg_1m: None,
                busy_pct: 10.0,
            },
        );
        r.units = units;
        r.window = Some(Window {
            secs: 1.0,
            machine_cpu_s: machine,
            per_cpu_busy: vec![],
            softirq_s: 0.0,
            kthreads_s: 0.0,
            load_cpu_s: 0.0,
            hop_cpu_s: hop,
            hop_rss_kib: Some(2048),
            tcp_mem_kib: None,
            slab_delta_kib: None,
        });
        r
    }

    fn outcome() -> Outcome {
        let d = Variant::Direct;
        let h = Variant::Haproxy;
        let p = Variant::Proxy(crate::hop::Engine::Copy);
        let records = vec![
            rec(d, 0, 1.0, 0.30, None),
            rec(h, 0, 1.0, 0.50, Some(0.2)),
            rec(p, 0, 1.0, 0.40, Some(0.1)),
            rec(d, 1, 1.0, 0.40, None),
            rec(h, 1, 1.0, 0.60, Some(0.2)),
            rec(p, 1, 2.0, 1.00, Some(0.2)),
        ];
        Outcome {
            scenario: all().remove(0),
            variants: vec![d, h, p],
            records,
            unavailable: vec![("proxy sockmap".into(), "not available in this build".into())],
        }
    }

    #[test]
    fn hop_cost_is_paired_against_direct() {
        let s = summarize(&outcome());
        assert_eq!(s[0].variant, "direct");
        assert_eq!(s[0].hop_cost, None);
        // haproxy: 0.5-0.3, 0.6-0.4 → 0.2; proxy: 0.4-0.3, 0.5-0.4 → 0.1
        assert!((s[1].hop_cost.unwrap() - 0.2).abs() < 1e-9);
        assert!((s[2].hop_cost.unwrap() - 0.1).abs() < 1e-9);
        assert!((s[2].hop_cost_vs_reference.unwrap() - 0.5).abs() < 1e-9);
        assert!((s[2].rate.unwrap() - 1.5).abs() < 1e-9);
        assert!((s[2].rate_vs_reference.unwrap() - 1.5).abs() < 1e-9);
        assert!((s[2].rate_vs_direct.unwrap() - 1.5).abs() < 1e-9);
        assert!((s[2].hop_process.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(s[1].hop_rss_kib, Some(2048.0));
    }

    #[test]
    fn markdown_lists_unavailable_and_failures() {
        let mut o = outcome();
        o.records[5].failure = Some("proxy died".into());
        let s = summarize(&o);
        assert_eq!(s[2].runs_ok, 1);
        let md = markdown(&o, &s);
        assert!(md.contains("| proxy copy |"));
        assert!(md.contains("not available in this build"));
        assert!(md.contains("proxy copy rep 2: proxy died"));
    }

    fn idle_rec(v: Variant, base: Option<u64>, held: Option<u64>) -> RunRecord {
        let mut r = rec(v, 0, 8000.0, 0.1, v.ne(&Variant::Direct).then_some(0.001));
        r.scenario = "idle-10k".into();
        r.idle = Some(IdleMemory {
            flows: 8000,
            setup_s: 3.0,
            rss_base_kib: base,
            rss_held_kib: held,
        });
        r
    }

    #[test]
    fn idle_table_gives_memory_per_thousand_flows_against_haproxy() {
        let (d, h, p) = (
            Variant::Direct,
            Variant::Haproxy,
            Variant::Proxy(crate::hop::Engine::Copy),
        );
        let o = Outcome {
            scenario: all().into_iter().find(|s| s.name == "idle-10k").unwrap(),
            variants: vec![d, h, p],
            records: vec![
                idle_rec(d, None, None),
                idle_rec(h, Some(10_000), Some(42_000)),
                idle_rec(p, Some(20_000), Some(36_000)),
            ],
            unavailable: vec![],
        };
        let s = summarize(&o);
        let growth = |i: usize| s[i].idle.as_ref().unwrap().growth_per_1000_kib;
        assert_eq!(growth(0), Some(0.0), "direct has no hop");
        assert_eq!(growth(1), Some(4000.0));
        assert_eq!(growth(2), Some(2000.0));
        assert_eq!(s[2].idle.as_ref().unwrap().growth_vs_haproxy, Some(0.5));
        assert_eq!(s[2].rate, None, "no rate for held flows");
        let md = markdown(&o, &s);
        assert!(
            md.contains("| proxy copy | 8000 | 19.5 | 35.2 | 1.95 | 2.00 | 0.50× |"),
            "{md}"
        );
    }

    #[test]
    fn namespace_scenarios_subtract_routing() {
        let (r, h, p) = (
            Variant::Routing,
            Variant::Haproxy,
            Variant::Proxy(crate::hop::Engine::Auto),
        );
        let with_p99 = |mut x: RunRecord, us: u64| {
            x.p99_us = Some(us);
            x
        };
        let o = Outcome {
            scenario: all()
                .into_iter()
                .find(|s| s.name == "ns-ingest-200x4")
                .unwrap(),
            variants: vec![r, h, p],
            records: vec![
                with_p99(rec(r, 0, 1.0, 0.30, None), 1000),
                with_p99(rec(h, 0, 1.0, 0.70, Some(0.3)), 1500),
                with_p99(rec(p, 0, 1.0, 0.40, Some(0.1)), 1200),
            ],
            unavailable: vec![(
                "proxy nat".into(),
                "not available: x.cfg:14: unknown".into(),
            )],
        };
        let s = summarize(&o);
        assert_eq!(s[0].hop_cost, None, "routing is the floor");
        assert!((s[1].hop_cost.unwrap() - 0.4).abs() < 1e-9);
        assert!((s[2].hop_cost_vs_reference.unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(s[2].p99_vs_baseline_us, Some(200.0));
        let md = markdown(&o, &s);
        assert!(md.contains("| ×routing |"), "{md}");
        assert!(md.contains("| p99 − routing's ms |"), "{md}");
        assert!(md.contains("| routing | 1.000 | 1.00× |"), "{md}");
        assert!(md.contains("| 0 / 0 | 0.20 |\n"), "{md}");
        assert!(
            md.contains("| proxy nat | not available: x.cfg:14: unknown |"),
            "{md}"
        );
    }

    #[test]
    fn reload_table_adds_its_columns() {
        let (d, h) = (Variant::Direct, Variant::Haproxy);
        let reloaded = |v, processes| {
            let mut x = rec(v, 0, 1.0, 0.5, Some(0.1));
            x.lost_bytes = Some(0);
            x.reload = Some(ReloadFigures {
                asked: 3,
                done: 3,
                flows_cut: 0,
                processes_after: Some(processes),
            });
            x
        };
        let o = Outcome {
            scenario: all().into_iter().find(|s| s.name == "reload").unwrap(),
            variants: vec![d, h],
            records: vec![rec(d, 0, 1.0, 0.3, None), reloaded(h, 5)],
            unavailable: vec![],
        };
        let s = summarize(&o);
        let r = s[1].reload.as_ref().unwrap();
        assert_eq!((r.done, r.asked, r.processes_after_max), (3, 3, Some(5)));
        let md = markdown(&o, &s);
        assert!(
            md.contains("| hop processes after last reload (max) |"),
            "{md}"
        );
        assert!(md.contains("| 0 / 0 | 3/3 | 0 | 0 | 5 |\n"), "{md}");
        assert!(md.contains("| 0 / 0 | – | – | – | – |\n"), "direct: {md}");
    }

    #[test]
    fn dns_change_table_adds_its_columns_and_p99_against_haproxy() {
        let (d, h, p) = (
            Variant::Direct,
            Variant::Haproxy,
            Variant::Proxy(crate::hop::Engine::Auto),
        );
        let changed = |v, p99_us, per_address: Vec<u64>| {
            let mut x = rec(v, 0, 1.0, 0.5, Some(0.1));
            x.lost_bytes = Some(0);
            x.p99_us = Some(p99_us);
            x.dns = Some(DnsFigures {
                changes: 4,
                adds: 2,
                adds_with_flows: 2,
                flows_to_removed: 0,
                held_across_removal: 100,
                flows_cut: 0,
                per_address,
                hop_maintenance_lines: Some(2),
            });
            x
        };
        let o = Outcome {
            scenario: all().into_iter().find(|s| s.name == "dns-change").unwrap(),
            variants: vec![d, h, p],
            records: vec![
                rec(d, 0, 1.0, 0.3, None),
                changed(h, 3000, vec![66, 67, 67]),
                changed(p, 2000, vec![67, 66, 67]),
            ],
            unavailable: vec![],
        };
        let s = summarize(&o);
        let dns = s[2].dns.as_ref().unwrap();
        assert_eq!((dns.adds_with_flows, dns.adds), (2, 2));
        assert_eq!(s[2].p99_vs_reference_us, Some(-1000.0));
        let md = markdown(&o, &s);
        assert!(md.contains("| added address got flows |"), "{md}");
        assert!(
            md.contains("| 0 / 0 | 4 | 2/2 | 0 | 100 | 2 | 0 | 0 | 67 / 66 / 67 | -1.00 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| 0 / 0 | – | – | – | – | – | – | – | – | – |\n"),
            "direct without figures: {md}"
        );
    }

    #[test]
    fn srt_ingest_compares_with_nginx_stream_not_haproxy() {
        let (d, n, p) = (Variant::Direct, Variant::NginxStream, Variant::ProxyUdp);
        let run = |v, machine, hop, p50_us, p99_us, lost: i64| {
            let mut x = rec(v, 0, 1.0, machine, hop);
            x.scenario = "srt-ingest".into();
            x.p50_us = Some(p50_us);
            x.p99_us = Some(p99_us);
            x.lost_bytes = Some(lost * 1316);
            x.srt = Some(SrtFigures {
                sent: 1000,
                received: (1000 - lost) as u64,
                lost,
                reordered: 0,
                send_blocked: 0,
                replies_sent: 250,
                replies_received: 250,
            });
            x
        };
        let o = Outcome {
            scenario: all().into_iter().find(|s| s.name == "srt-ingest").unwrap(),
            variants: vec![d, n, p],
            records: vec![
                run(d, 0.30, None, 20, 100, 0),
                run(n, 0.70, Some(0.3), 40, 400, 2),
                run(p, 0.50, Some(0.2), 30, 250, 0),
            ],
            unavailable: vec![("proxy kernel".into(), "not built yet".into())],
        };
        let s = summarize(&o);
        assert_eq!(s[2].reference, "nginx stream");
        // nginx: 0.7-0.3 = 0.4; proxy: 0.5-0.3 = 0.2 → 0.5× nginx's.
        assert!((s[2].hop_cost_vs_reference.unwrap() - 0.5).abs() < 1e-9);
        assert!((s[2].hop_process_vs_reference.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s[1].hop_cost_vs_reference, Some(1.0));
        assert_eq!(s[2].p50_vs_baseline_us, Some(10.0));
        assert_eq!(s[2].p99_vs_baseline_us, Some(150.0));
        assert_eq!(s[2].p99_vs_reference_us, Some(-150.0));
        assert_eq!(s[1].srt.as_ref().unwrap().lost, 2);
        let md = markdown(&o, &s);
        assert!(
            md.contains("| ×direct | ×nginx | hop cost, machine"),
            "{md}"
        );
        assert!(!md.contains("×HAProxy"), "{md}");
        assert!(md.contains("| p50 − direct's µs | p99 − direct's µs | p99 − nginx's µs |"));
        assert!(
            md.contains("| 20 | 300 | 0 | 1000 | 2 | 0 | 0 | 250 / 250 |\n"),
            "nginx row: {md}"
        );
        assert!(
            md.contains("| 10 | 150 | -150 | 1000 | 0 | 0 | 0 | 250 / 250 |\n"),
            "proxy row: {md}"
        );
        assert!(md.contains("| proxy kernel | not built yet |"), "{md}");
    }

    #[test]
    fn svg_renders() {
        let o = outcome();
        let s = summarize(&o);
        let dir = std::env::temp_dir().join(format!("bench-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        svg(&[s], &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.contains("ingest-200x4"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
