//! The bench runner that `cargo xtask bench` starts (it builds this and the proxy first).
//! Runs the selected scenarios, prints progress and one table per scenario, and writes
//! Markdown, raw JSON and an SVG chart under the output folder.

use anyhow::{bail, Context, Result};
use benches::hop::Engine;
use benches::machine::{self, Machine};
use benches::pin::Plan;
use benches::report::{self, Summary};
use benches::scenario::{self, Ctx, Kind, Outcome, Scenario};
use benches::vm::VmReport;
use clap::Parser;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "benches",
    about = "Side-by-side benchmarks: direct, HAProxy, this proxy"
)]
struct Cli {
    /// Shorter windows and 3 repetitions (the whole run stays under 5 minutes).
    #[arg(long)]
    quick: bool,
    /// Scenario name or prefix (e.g. `ingest`, `bulk-up`, `http`); repeatable; default all.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Only this forward engine for the proxy (default: every engine the build has).
    #[arg(long, value_name = "auto|sockmap|splice|copy")]
    engine: Option<String>,
    /// The proxy binary (release build).
    #[arg(long, value_name = "PATH")]
    proxy_bin: PathBuf,
    /// Where results go.
    #[arg(long, value_name = "DIR", default_value = "benches/results")]
    out: PathBuf,
    /// Sample the hop with perf in each variant's first repetition: a flame graph per
    /// variant in the run's folder and system calls per unit in the records.
    #[arg(long)]
    profile: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// The console of the `https-bulk-vm` VM run (written by `cargo xtask bench`).
    #[arg(long, value_name = "PATH")]
    vm_console: Option<PathBuf>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let selected = select(&cli.scenarios, cli.quick)?;
    if cli.list {
        for s in scenario::all() {
            println!("{:<16} {}", s.name, s.title);
        }
        return Ok(());
    }
    let engine = match cli.engine.as_deref() {
        Some(e) => Some(Engine::parse(e).with_context(|| format!("unknown engine {e:?}"))?),
        None => None,
    };
    if cli.profile {
        benches::profile::enable();
    }
    raise_nofile_limit();
    let mut plan = Plan::detect();
    plan.raise_priority();
    plan.pin_load_thread();
    let stamp = machine::timestamp();
    let work = cli.out.join(format!("run-{stamp}"));
    fs::create_dir_all(&work).with_context(|| format!("mkdir {}", work.display()))?;
    let proxy_bin = fs::canonicalize(&cli.proxy_bin)
        .with_context(|| format!("proxy binary {}", cli.proxy_bin.display()))?;
    let m = Machine::describe(&proxy_bin, plan.cpus);
    println!("bench: {}", m.line());
    println!("bench: pinning plan: {}", plan.describe());
    println!("bench: work folder {}", work.display());

    let started = Instant::now();
    let (tcp_engines, engine_notes) = engines(&proxy_bin, &work, &plan, engine, &selected);
    let ctx = Ctx::new(
        plan,
        proxy_bin,
        work.clone(),
        cli.quick,
        tcp_engines,
        engine.unwrap_or(Engine::Auto),
    );
    let mut outcomes: Vec<(Outcome, Vec<Summary>)> = Vec::new();
    let mut vm_reports: Vec<VmReport> = Vec::new();
    for sc in &selected {
        if sc.kind == Kind::HttpsBulkVm {
            let r = vm_report(sc, cli.vm_console.as_deref());
            println!("\n{}", r.markdown());
            vm_reports.push(r);
            continue;
        }
        let t = sc.kind.timing(cli.quick);
        println!(
            "\n== {} — {} ({} reps, {:.1} s warm-up + {:.1} s window each)",
            sc.name,
            sc.title,
            t.reps,
            t.warmup.as_secs_f64(),
            t.window.as_secs_f64()
        );
        let o = scenario::run(&ctx, sc, &engine_notes);
        let sums = report::summarize(&o);
        println!("\n{}", report::markdown(&o, &sums));
        outcomes.push((o, sums));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let results = Results {
        outcomes: &outcomes,
        vm: &vm_reports,
    };
    write_results(&cli.out, &stamp, &m, &ctx, &results, elapsed)?;
    println!("bench: done in {elapsed:.0} s");
    Ok(())
}

fn select(names: &[String], quick: bool) -> Result<Vec<Scenario>> {
    let all = scenario::all();
    if names.is_empty() {
        return Ok(all.into_iter().filter(|s| s.in_quick || !quick).collect());
    }
    let wanted: Vec<&str> = names
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .collect();
    let picked: Vec<Scenario> = all
        .into_iter()
        .filter(|s| wanted.iter().any(|w| s.name.starts_with(w)))
        .collect();
    if picked.is_empty() {
        bail!("no scenario matches {wanted:?} (try --list)");
    }
    Ok(picked)
}

/// The proxy engines to run in TCP scenarios, and a note for each one left out.
fn engines(
    proxy_bin: &Path,
    work: &Path,
    plan: &Plan,
    only: Option<Engine>,
    selected: &[Scenario],
) -> (Vec<Engine>, Vec<(String, String)>) {
    if selected.iter().all(|s| !s.kind.uses_tcp_engines()) {
        return (vec![], vec![]);
    }
    if only == Some(Engine::Auto) {
        return (vec![Engine::Auto], vec![]);
    }
    let mut run = Vec::new();
    let mut notes = Vec::new();
    for (e, res) in scenario::detect_engines(proxy_bin, work, plan) {
        if only.is_some_and(|o| o != e) {
            continue;
        }
        let label = format!("proxy {}", e.keyword());
        match res {
            Ok(()) => {
                println!("bench: forward-engine {}: available", e.keyword());
                run.push(e);
            }
            Err(why) => {
                println!(
                    "bench: forward-engine {}: not available in this build",
                    e.keyword()
                );
                notes.push((label, format!("not available in this build ({why})")));
            }
        }
    }
    // What an operator gets without choosing: `auto` picks per flow (sockmap for long-lived
    // flows, copy for short ones, where sockmap loads).
    if only.is_none() {
        run.push(Engine::Auto);
    }
    (run, notes)
}

/// The VM scenario's section, from the console the xtask saved (it ran before this runner).
fn vm_report(sc: &Scenario, console: Option<&Path>) -> VmReport {
    let text = console.map(|p| {
        fs::read_to_string(p).unwrap_or_else(|e| format!("cannot read {}: {e}", p.display()))
    });
    VmReport::from_console(sc.title, text.as_deref())
}

/// What a run produced: host scenarios and the VM one.
struct Results<'a> {
    outcomes: &'a [(Outcome, Vec<Summary>)],
    vm: &'a [VmReport],
}

fn write_results(
    out: &Path,
    stamp: &str,
    m: &Machine,
    ctx: &Ctx,
    results: &Results<'_>,
    elapsed: f64,
) -> Result<()> {
    let outcomes = results.outcomes;
    let mut md = format!(
        "## cargo xtask bench{} — {stamp} UTC\n\nMachine: {}\n\nPinning: {}\n\n",
        if ctx.quick { " --quick" } else { "" },
        m.line(),
        ctx.plan.describe()
    );
    for (o, s) in outcomes {
        md.push_str(&report::markdown(o, s));
    }
    for r in results.vm {
        md.push_str(&r.markdown());
    }
    let json = serde_json::json!({
        "timestamp_utc": stamp,
        "quick": ctx.quick,
        "elapsed_s": elapsed,
        "machine": m,
        "pinning": ctx.plan,
        "scenarios": outcomes.iter().map(|(o, s)| serde_json::json!({
            "name": o.scenario.name,
            "title": o.scenario.title,
            "unavailable": o.unavailable,
            "summaries": s,
            "runs": o.records,
        })).collect::<Vec<_>>(),
        "vm_scenarios": results.vm,
    });
    let files = [
        ("md", md.clone()),
        ("json", serde_json::to_string_pretty(&json)?),
    ];
    for (ext, text) in &files {
        for name in [format!("bench-{stamp}.{ext}"), format!("latest.{ext}")] {
            let p = out.join(name);
            fs::write(&p, text).with_context(|| format!("write {}", p.display()))?;
        }
    }
    let sums: Vec<Vec<Summary>> = outcomes.iter().map(|(_, s)| s.clone()).collect();
    let svg = out.join(format!("bench-{stamp}.svg"));
    match report::svg(&sums, &svg) {
        Ok(()) => {
            let _ = fs::copy(&svg, out.join("latest.svg"));
        }
        Err(e) => eprintln!("bench: chart not written: {e}"),
    }
    println!(
        "bench: results in {}/bench-{stamp}.{{md,json,svg}} (also latest.*)",
        out.display()
    );
    Ok(())
}

/// A thousand flows need ~4000 descriptors here (client, backend) and HAProxy computes its
/// own need from maxconn; raise the soft limit to the hard one (children inherit it).
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
