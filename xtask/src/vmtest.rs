//! `cargo xtask vmtest`: the kernel-facing tests on Debian's own kernels under qemu (TCG).
//!
//! This host's kernel has no `CONFIG_TLS`; Debian's cloud kernels do. Everything comes from
//! Debian packages, fetched with a private apt state (no change to the host's apt) and cached
//! under `target/vmtest/`:
//! - `linux-image-*-cloud-amd64`: the newest 6.1 (bookworm-security) and 6.12
//!   (bookworm-backports);
//! - `qemu-system-x86` 10 from bookworm-backports with the libraries the host lacks,
//!   unpacked with `dpkg -x` (bookworm's qemu 7.2 oopses 6.12 in 8–50% of boots);
//! - `busybox-static` for the initramfs' shell and `modprobe`.
//!
//! The proxy's unit tests are built as one static binary (glibc, `+crt-static`), put in an
//! initramfs with busybox and the kernel's `tls` and crypto modules, and run as PID 1's
//! child with `PROXY_REQUIRE_KTLS=1` (a kTLS test that cannot engage kTLS fails there) and
//! `PROXY_TEST_BIG_MIB=256`. The summary line is `N passed, M failed`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Test filters run in the VM (the proxy's unit tests whose subject is the kernel): the TLS
/// room's, and HTTPS through the plan's HTTP-over-TLS session (kTLS, spliced bodies), and the
/// sockmap engine's (the verdict and the `iter/tcp` park walk load against the VM kernel's BTF;
/// a slow flow parks and arrives whole; a segment overlapping received bytes is trimmed), and
/// the privilege drop's (the kept capabilities suffice for bpf(2) on kernels before 6.5).
const FILTERS: &[&str] = &[
    "tls::",
    "http_over_tls",
    "forward::sockmap",
    "runtime::privileges",
];
/// Bound for one VM run (boot, module load, tests, power-off). TCG is slow; generous.
const VM_LIMIT: Duration = Duration::from_secs(900);

const SOURCES: &str = "\
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-backports main
deb http://deb.debian.org/debian-security bookworm-security main
";

/// A kernel to boot: the package and the version string of its files.
pub(crate) struct Kernel {
    package: String,
    pub(crate) release: String,
}

/// What booting needs, downloaded and unpacked once (also used by `cargo xtask bench`).
pub(crate) struct Vm {
    /// `target/vmtest` (or `VMTEST_CACHE`): apt state, unpacked tools, initramfs images.
    pub(crate) cache: PathBuf,
    /// The unpacked kernels, modules, busybox and qemu.
    pub(crate) root: PathBuf,
    /// The newest 6.1 and 6.12, in that order.
    pub(crate) kernels: Vec<Kernel>,
}

impl Vm {
    pub(crate) fn prepare() -> Result<Vm> {
        let cache = cache_dir();
        let apt = Apt::new(&cache)?;
        let kernels = apt.kernels()?;
        let root = apt.unpack_tools(&kernels)?;
        Ok(Vm {
            cache,
            root,
            kernels,
        })
    }

    /// The kernel of a series (`"6.12"`).
    pub(crate) fn kernel(&self, series: &str) -> Result<&Kernel> {
        self.kernels
            .iter()
            .find(|k| k.release.starts_with(&format!("{series}.")))
            .with_context(|| format!("no {series} kernel among the cached ones"))
    }
}

pub fn vmtest(filters: &[String]) -> Result<()> {
    let Vm {
        cache,
        root,
        kernels,
    } = Vm::prepare()?;
    let tests = build_tests()?;
    let filters: Vec<String> = if filters.is_empty() {
        FILTERS.iter().map(|s| s.to_string()).collect()
    } else {
        filters.to_vec()
    };
    let (mut passed, mut failed) = (0u64, 0u64);
    for k in &kernels {
        println!("\n==> vmtest: Linux {} ({})", k.release, k.package);
        let init = init_script(&k.release, &test_command(&filters));
        let initrd = initramfs(&cache, &root, k, &init, &[("proxy-tests", &tests)])?;
        match boot(&root, k, &initrd, VM_LIMIT).and_then(|text| test_counts(&text)) {
            Ok((p, f)) => {
                println!("vmtest: Linux {}: {p} passed, {f} failed", k.release);
                passed += p;
                failed += f;
            }
            Err(e) => {
                println!("vmtest: Linux {}: no test result: {e:#}", k.release);
                failed += 1;
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("vmtest: {failed} failed");
    }
    Ok(())
}

fn cache_dir() -> PathBuf {
    std::env::var_os("VMTEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target").join("vmtest"))
}

/// apt with its own sources, lists and status (empty: nothing counts as installed).
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path) -> Result<Apt> {
        let dir = cache.join("apt");
        for d in ["lists/partial", "cache/archives/partial", "etc", "debs"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(dir.join("etc/sources.list"), SOURCES)?;
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let apt = Apt { dir };
        // Lists are refreshed once a day at most: a cached run needs no network.
        let fresh = std::fs::metadata(apt.dir.join("lists"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(86400));
        let has_lists = std::fs::read_dir(apt.dir.join("lists"))?.count() > 2;
        if !(fresh && has_lists) {
            crate::run_checked(apt.cmd("apt-get").arg("update"))?;
        }
        Ok(apt)
    }

    fn cmd(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(program);
        for opt in [
            format!("Dir::Etc::SourceList={d}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={d}/etc"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            "Debug::NoLocking=1".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ] {
            c.arg("-o").arg(opt);
        }
        c.arg("-q");
        c
    }

    fn output(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .cmd(program)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {program} {args:?}"))?;
        if !out.status.success() {
            bail!("{program} {args:?} failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The newest 6.1 and 6.12 cloud kernels the meta package points at.
    fn kernels(&self) -> Result<Vec<Kernel>> {
        let show = self.output("apt-cache", &["show", "linux-image-cloud-amd64"])?;
        let mut found: Vec<Kernel> = Vec::new();
        for dep in show.lines().filter_map(|l| l.strip_prefix("Depends: ")) {
            let Some(package) = dep.split_whitespace().next() else {
                continue;
            };
            let release = package.trim_start_matches("linux-image-").to_string();
            let series = if release.starts_with("6.12.") {
                "6.12"
            } else if release.starts_with("6.1.") {
                "6.1"
            } else {
                continue;
            };
            // apt-cache lists the newest version of each suite first.
            if !found
                .iter()
                .any(|k| k.release.starts_with(&format!("{series}.")))
            {
                found.push(Kernel {
                    package: package.to_string(),
                    release,
                });
            }
        }
        found.sort_by(|a, b| a.release.cmp(&b.release));
        if found.len() < 2 {
            bail!(
                "expected a 6.1 and a 6.12 cloud kernel in Debian's lists, found {} ",
                found.len()
            );
        }
        Ok(found)
    }

    /// Downloads (once) the kernels, busybox-static and qemu 10 with the libraries the host
    /// lacks, and unpacks them all into one folder.
    fn unpack_tools(&self, kernels: &[Kernel]) -> Result<PathBuf> {
        let root = self.dir.parent().unwrap_or(&self.dir).join("root");
        let stamp = root.join(".complete");
        let mut wanted: Vec<String> = kernels.iter().map(|k| k.package.clone()).collect();
        wanted.push("busybox-static".into());
        let key = wanted.join(" ");
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
            return Ok(root);
        }
        wanted.extend(self.qemu_packages()?);
        let debs = self.dir.join("debs");
        let mut args = vec!["-t", "bookworm-backports", "download"];
        args.extend(wanted.iter().map(String::as_str));
        crate::run_checked(self.cmd("apt-get").current_dir(&debs).args(&args))?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        for deb in std::fs::read_dir(&debs)? {
            let deb = deb?.path();
            if deb.extension().is_some_and(|e| e == "deb") {
                crate::run_checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
            }
        }
        std::fs::write(&stamp, key)?;
        Ok(root)
    }

    /// qemu-system-x86 from backports and every dependency the host has not installed.
    fn qemu_packages(&self) -> Result<Vec<String>> {
        let deps = self.output(
            "apt-cache",
            &[
                "-t",
                "bookworm-backports",
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
                "--no-pre-depends",
                "qemu-system-x86",
            ],
        )?;
        let mut names: Vec<String> = deps
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        // Installer-only alternatives of debconf and friends are never needed to run qemu.
        let skip = [
            "cdebconf",
            "install-info",
            "libdebian-installer4",
            "libelogind0",
        ];
        Ok(names
            .into_iter()
            .filter(|n| !skip.contains(&n.as_str()) && !host_has(n))
            .collect())
    }
}

fn host_has(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("ok installed"))
}

/// The proxy's unit tests as one static, stripped, optimised binary (TCG is slow; the 256
/// MiB integrity test hashes every byte twice).
fn build_tests() -> Result<PathBuf> {
    let json = static_build(&["test", "-p", "proxy", "--lib", "--release", "--no-run"])?;
    executable(&json, "proxy", true)
}

/// `cargo ARGS` for a static glibc target (`+crt-static`, stripped) in its own target folder;
/// returns cargo's JSON messages, for [`executable`].
pub(crate) fn static_build(args: &[&str]) -> Result<String> {
    let target = crate::root().join("target").join("vmtest").join("build");
    let out = crate::cargo()
        .args(args)
        .args([
            "--target",
            "x86_64-unknown-linux-gnu",
            "--message-format=json",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("building static binaries: cargo {args:?}"))?;
    if !out.status.success() {
        bail!("static build cargo {args:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The executable cargo built for target `name` (a test harness when `test`).
pub(crate) fn executable(json: &str, name: &str, test: bool) -> Result<PathBuf> {
    let exe = json
        .lines()
        .filter(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .filter(|l| l.contains(&format!("\"test\":{test}")))
        .find_map(|l| l.split("\"executable\":\"").nth(1))
        .and_then(|s| s.split('"').next())
        .with_context(|| format!("cargo named no executable for {name}"))?;
    Ok(PathBuf::from(exe))
}

/// What the tests' init runs: the unit tests, kTLS required.
fn test_command(filters: &[String]) -> String {
    format!(
        "PROXY_REQUIRE_KTLS=1 PROXY_SOCKMAP_MAY_LACK=1 PROXY_TEST_BIG_MIB=256 RUST_BACKTRACE=1 \\
    /proxy-tests --test-threads=1 {}",
        filters.join(" ")
    )
}

/// `/init` of the VM: mount, modules, loopback, `command` (in `/tmp`), power off.
pub(crate) fn init_script(release: &str, command: &str) -> String {
    format!(
        "#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ln -s /bin /sbin
ip link set lo up
for m in tls gcm ghash-generic ghash-clmulni-intel aesni-intel chacha20poly1305 \\
    chacha-x86_64 poly1305-x86_64 chacha_generic poly1305_generic; do
    modprobe $m 2>&1 | head -n 2
done
echo \"VMTEST kernel $(uname -r) (want {release}); modules: $(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')\"
cd /tmp
{command}
echo \"VMTEST-EXIT $?\"
poweroff -f
"
    )
}

/// The initramfs of `k`: busybox, the TLS and crypto modules, `init`, and `files` (name at
/// the root, host path). Named after the first file, so the tests and the bench keep theirs.
pub(crate) fn initramfs(
    cache: &Path,
    root: &Path,
    k: &Kernel,
    init: &str,
    files: &[(&str, &Path)],
) -> Result<PathBuf> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.node("dev/console", 5, 1);
    cpio.file("init", init.as_bytes(), 0o755);
    cpio.file(
        "bin/busybox",
        &std::fs::read(root.join("bin/busybox"))?,
        0o755,
    );
    for (name, path) in files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(name, &bytes, 0o755);
    }
    add_modules(&mut cpio, root, &k.release)?;
    let tag = files.first().map_or("init", |f| f.0);
    let path = cache.join(format!("initramfs-{tag}-{}.cpio", k.release));
    std::fs::write(&path, cpio.finish())?;
    Ok(path)
}

/// The TLS and crypto modules (decompressed: busybox's modprobe reads plain `.ko`) and a
/// `modules.dep` that names them so.
fn add_modules(cpio: &mut Cpio, root: &Path, release: &str) -> Result<()> {
    let base = root.join("lib/modules").join(release);
    // The package ships no modules.dep (its postinst runs depmod); make it on the unpacked tree.
    if !base.join("modules.dep").is_file() {
        crate::run_checked(Command::new("depmod").arg("-b").arg(root).arg(release))?;
    }
    let prefix = format!("lib/modules/{release}");
    cpio.dir(&prefix);
    let mut dirs = vec![];
    for sub in [
        "kernel/net/tls",
        "kernel/crypto",
        "kernel/arch/x86/crypto",
        "kernel/lib/crypto",
    ] {
        collect(&base.join(sub), &mut dirs)?;
    }
    let mut made = std::collections::BTreeSet::new();
    for file in dirs {
        let rel = file.strip_prefix(&base)?.to_string_lossy().into_owned();
        let (name, bytes) = match rel.strip_suffix(".xz") {
            Some(plain) => {
                let out = Command::new("xz").arg("-dc").arg(&file).output()?;
                if !out.status.success() {
                    bail!("xz -dc {} failed", file.display());
                }
                (plain.to_string(), out.stdout)
            }
            None => (rel.clone(), std::fs::read(&file)?),
        };
        let mut parent = String::new();
        for part in Path::new(&name).parent().into_iter().flat_map(|p| p.iter()) {
            parent = format!("{parent}/{}", part.to_string_lossy());
            if made.insert(parent.clone()) {
                cpio.dir(&format!("{prefix}{parent}"));
            }
        }
        cpio.file(&format!("{prefix}/{name}"), &bytes, 0o644);
    }
    for meta in [
        "modules.dep",
        "modules.alias",
        "modules.builtin",
        "modules.order",
    ] {
        let text = std::fs::read_to_string(base.join(meta)).unwrap_or_default();
        cpio.file(
            &format!("{prefix}/{meta}"),
            text.replace(".ko.xz", ".ko").as_bytes(),
            0o644,
        );
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Boots `k` with `initrd`, bounded by `limit`; returns the serial console's text (also
/// streamed to stdout as it comes).
pub(crate) fn boot(root: &Path, k: &Kernel, initrd: &Path, limit: Duration) -> Result<String> {
    let lib = format!(
        "{}:{}",
        root.join("usr/lib/x86_64-linux-gnu").display(),
        root.join("lib/x86_64-linux-gnu").display()
    );
    let mut child = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg(root.join("usr/bin/qemu-system-x86_64"))
        .env("LD_LIBRARY_PATH", lib)
        .arg("-L")
        .arg(root.join("usr/share/seabios"))
        .arg("-L")
        .arg(root.join("usr/share/qemu"))
        .args(["-M", "pc", "-accel", "tcg,thread=multi", "-cpu", "max"])
        .args(["-smp", "2", "-m", "1024", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(root.join("boot").join(format!("vmlinuz-{}", k.release)))
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu")?;
    // Streamed as it comes: a slow or stuck test shows where it is.
    let mut text = String::new();
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            println!("  | {line}");
            text.push_str(&line);
            text.push('\n');
        }
    }
    let _ = child.wait();
    Ok(text)
}

/// (passed, failed) from the test runner's result line.
fn test_counts(text: &str) -> Result<(u64, u64)> {
    let result = text
        .lines()
        .find(|l| l.starts_with("test result:"))
        .context("the VM printed no test result")?;
    Ok((count(result, "passed"), count(result, "failed")))
}

/// `N` in "…; N passed; …".
fn count(line: &str, what: &str) -> u64 {
    line.split([';', '.'])
        .filter_map(|part| part.trim().strip_suffix(what))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// An initramfs in the `newc` cpio format, uncompressed (the kernel accepts it as is).
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let name_len = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name_len,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    fn node(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn result_line_counts() {
        let l = "test result: ok. 18 passed; 0 failed; 0 ignored; 0 measured; 205 filtered out";
        assert_eq!(
            (super::count(l, "passed"), super::count(l, "failed")),
            (18, 0)
        );
    }
}
