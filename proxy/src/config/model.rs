//! The validated, typed configuration. Built by `parse` from HAProxy-syntax files and never
//! mutated afterwards: the data path holds it behind an `Arc` and a reload swaps the whole value.
//!
//! Everything a seed file may say is kept here, also what later parts of the proxy act on
//! (TLS, cookies, stats, HTTP rules), so that loading a config never silently drops a directive.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where a directive came from, for `file:line: reason` messages at load and at run time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub global: Global,
    /// Frontends, backends and listens in file order.
    pub proxies: Vec<Proxy>,
    /// `resolvers` sections in file order.
    pub resolvers: Vec<Resolvers>,
}

impl Config {
    pub fn proxy(&self, name: &str) -> Option<&Proxy> {
        self.proxies.iter().find(|p| p.name == name)
    }

    /// A proxy that can receive traffic from a frontend: a backend or a listen section.
    pub fn proxy_backend(&self, name: &str) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.name == name && p.kind.has_backend())
    }

    /// The backend a `mode tcp` frontend sends to: its first `use_backend` (conditions are
    /// refused by the plan), else its `default_backend`, else itself when it is a listen.
    pub fn tcp_backend_of<'c>(&'c self, fe: &'c Proxy) -> Option<&'c Proxy> {
        let name = fe
            .use_backends
            .first()
            .map(|r| &r.backend)
            .or(fe.default_backend.as_ref());
        match name {
            Some(name) => self.proxy_backend(name),
            None if fe.kind.has_backend() => Some(fe),
            None => None,
        }
    }

    /// Proxies that accept connections (frontend, listen).
    pub fn frontends(&self) -> impl Iterator<Item = &Proxy> {
        self.proxies.iter().filter(|p| p.kind.has_frontend())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Global {
    pub maxconn: Option<u32>,
    /// Worker threads; `None` means one per online CPU.
    pub nbthread: Option<usize>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Where `group` was set, to name the line when it comes without `user`.
    pub group_loc: Option<Loc>,
    pub logs: Vec<LogTarget>,
    /// `hard-stop-after`: how long established flows may run on after SIGTERM/SIGINT.
    pub hard_stop_after: Option<Duration>,
    /// `tune.bufsize`: per-direction buffer of the userspace engines and HTTP heads.
    pub bufsize: Option<usize>,
    /// `tune.sockmap.budget`: per-direction psock backlog bound of the sockmap engine.
    pub sockmap_budget: Option<u64>,
    /// `tune.ssl.ktls on|off`: `off` keeps TLS records in userspace rustls even where the
    /// kernel has kTLS (to compare the two, or to step around a kernel bug). Default on.
    pub ssl_ktls: Option<bool>,
    /// `crt-base DIR`: where later relative `crt` paths start (the parser applies it).
    pub crt_base: Option<PathBuf>,
    /// `chroot DIR`: the process confines itself there once listeners, certificates and
    /// the BPF programs are loaded, before dropping privileges.
    pub chroot: Option<PathBuf>,
    /// `pidfile PATH`: written at start, removed at exit.
    pub pidfile: Option<PathBuf>,
    /// `ulimit-n N`: the open-file limit the process sets for itself at start.
    pub ulimit_n: Option<u64>,
    /// `log-tag`: the syslog tag (HAProxy's default is `haproxy`).
    pub log_tag: Option<String>,
    /// `node NAME` and `description TEXT`: shown on the stats page.
    pub node: Option<String>,
    pub description: Option<String>,
    /// `ssl-default-bind-ciphers|ciphersuites|options`: applied to every `bind … ssl`.
    pub ssl_bind_defaults: SslBind,
    /// `stats socket PATH …`: the runtime API's sockets (several lines allowed).
    pub stats_sockets: Vec<StatsSocket>,
    /// `stats timeout`: how long an API connection may sit idle (HAProxy's default 10 s).
    pub stats_timeout: Option<Duration>,
    /// `stats maxconn`: API connections served at once (HAProxy's default 10).
    pub stats_maxconn: Option<u32>,
}

/// What a runtime API socket lets its clients do (HAProxy's `level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ApiLevel {
    /// Non-sensitive reads only.
    User,
    /// Every read; no change to servers or frontends (HAProxy's default).
    #[default]
    Operator,
    /// Everything.
    Admin,
}

impl ApiLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiLevel::User => "user",
            ApiLevel::Operator => "operator",
            ApiLevel::Admin => "admin",
        }
    }
}

/// One `stats socket PATH [mode OCTAL] [level L] [expose-fd listeners]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    pub path: PathBuf,
    /// `mode 660`: the socket file's permissions (else as the umask leaves them).
    pub mode: Option<u32>,
    pub level: ApiLevel,
    /// `expose-fd listeners`: `_getsocks` hands the listening sockets to a new process
    /// (HAProxy's `-x`).
    pub expose_fd: bool,
    pub loc: Loc,
}

impl Global {
    /// `tune.bufsize`, or HAProxy's default of 16 KiB.
    pub fn bufsize(&self) -> usize {
        self.bufsize.unwrap_or(16 * 1024)
    }

    /// Whether TLS sessions may be handed to the kernel (`tune.ssl.ktls`, default on).
    pub fn ktls_allowed(&self) -> bool {
        self.ssl_ktls != Some(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Frontend,
    Backend,
    Listen,
    /// `udp-lb NAME` (HAProxy Enterprise's UDP load balancer): datagram binds and servers in
    /// one section, forwarded by the `udp` room. Neither a TCP frontend nor a backend: no
    /// `use_backend` may name it, and the TCP/HTTP passes skip it.
    UdpLb,
}

impl ProxyKind {
    pub fn has_frontend(self) -> bool {
        matches!(self, ProxyKind::Frontend | ProxyKind::Listen)
    }
    pub fn has_backend(self) -> bool {
        matches!(self, ProxyKind::Backend | ProxyKind::Listen)
    }
    /// A section with rows of both kinds on the stats page (frontend counters and servers),
    /// whether or not it takes part in TCP/HTTP routing.
    pub fn has_stats_rows(self) -> (bool, bool) {
        match self {
            ProxyKind::UdpLb => (true, true),
            other => (other.has_frontend(), other.has_backend()),
        }
    }
    pub fn keyword(self) -> &'static str {
        match self {
            ProxyKind::Frontend => "frontend",
            ProxyKind::Backend => "backend",
            ProxyKind::Listen => "listen",
            ProxyKind::UdpLb => "udp-lb",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    Source,
    First,
    /// `uri`: the request path (see [`BalanceArgs`] for `whole`, `depth`, `len`).
    Uri,
    /// `url_param NAME`: the value of one query parameter.
    UrlParam,
    /// `hdr(NAME)`: the value of one request header.
    Hdr,
    Random,
}

impl Balance {
    /// Whether the algorithm hashes something of an HTTP request (mode http only).
    pub fn reads_requests(self) -> bool {
        matches!(self, Balance::Uri | Balance::UrlParam | Balance::Hdr)
    }
}

/// The arguments of the hashing `balance` algorithms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceArgs {
    /// `uri whole`: the query string too.
    pub whole: bool,
    /// `uri depth N`: only the first N directories.
    pub depth: Option<u32>,
    /// `uri len N`: only the first N characters.
    pub len: Option<u32>,
    /// `url_param NAME` / `hdr(NAME)`.
    pub name: Option<String>,
}

/// `hash-type`: how a hash picks a server, and the hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashType {
    /// `consistent`: a ring of points per server, so that adding or removing one server moves
    /// only the keys it takes or held; `map-based` (default): hash modulo the total weight.
    pub consistent: bool,
    pub function: HashFunction,
    /// `avalanche`: the hash mixed once more, to spread similar keys.
    pub avalanche: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashFunction {
    #[default]
    Sdbm,
    Djb2,
    Wt6,
    Crc32,
}

/// `forward-engine` (our own keyword): which engine moves the bytes of an established pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    #[default]
    Auto,
    Sockmap,
    Splice,
    Copy,
    /// `nat`: no socket on the proxy's side; the kernel's NAT balances new connections and
    /// rewrites addresses (`nat/`). Only `mode tcp` without TLS; never picked by `auto`.
    Nat,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub client: Option<Duration>,
    pub server: Option<Duration>,
    pub tunnel: Option<Duration>,
    pub client_fin: Option<Duration>,
    pub server_fin: Option<Duration>,
    pub check: Option<Duration>,
    pub queue: Option<Duration>,
    pub http_request: Option<Duration>,
    pub http_keep_alive: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub redispatch: bool,
    pub forwardfor: Option<ForwardFor>,
    pub http_server_close: bool,
    pub http_keep_alive: bool,
    pub httpclose: bool,
    pub httplog: bool,
    pub tcplog: bool,
    pub dontlognull: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardFor {
    /// Header name, `X-Forwarded-For` unless `header NAME` is given.
    pub header: String,
    /// `except NETWORK`, as written (parsed by the HTTP room).
    pub except: Option<String>,
    pub if_none: bool,
}

/// The logging a section asks for: `log global` inherits the global targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyLog {
    pub global: bool,
    pub targets: Vec<LogTarget>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogTarget {
    pub dest: LogDest,
    /// syslog facility name as written (`local0`, `daemon`, …), validated by the parser.
    pub facility: String,
    /// Most verbose level sent (`notice`, `info`, …); `None` sends all.
    pub level: Option<String>,
    /// Least verbose level sent (HAProxy's `minlevel`): more urgent messages are lowered to it.
    pub minlevel: Option<String>,
    /// `format rfc3164|rfc5424|raw`; HAProxy's default is RFC 3164.
    pub format: LogFormat,
    /// `len N`: longest message sent, framing included (HAProxy's default 1024).
    pub len: usize,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Rfc3164,
    Rfc5424,
    Raw,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogDest {
    Udp(SocketAddr),
    Unix(PathBuf),
    Stderr,
    Stdout,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    pub addr: SocketAddr,
    pub ssl: Option<SslBind>,
    /// `name X`: the listener's label in stats and logs.
    pub name: Option<String>,
    /// `maxconn N` on this listener alone.
    pub maxconn: Option<u32>,
    /// `v6only` → `Some(true)`, `v4v6` → `Some(false)`; `None` keeps the system default
    /// (`net.ipv6.bindv6only`, off on Linux: an IPv6 wildcard then also takes IPv4).
    pub v6only: Option<bool>,
    /// `accept-proxy`: every connection starts with a PROXY protocol header (v1 or v2) whose
    /// addresses replace the socket's (logs, ACL `src`, `option forwardfor`, `balance source`,
    /// `send-proxy` toward servers).
    pub accept_proxy: bool,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SslBind {
    /// `crt PATH` (file or directory), possibly several.
    pub crt: Vec<PathBuf>,
    pub alpn: Vec<String>,
    pub min_ver: Option<String>,
    /// Highest version offered (`ssl-max-ver`, `no-tlsv13`).
    pub max_ver: Option<String>,
    /// TLS 1.2 suites by their OpenSSL names (`ciphers`, `ssl-default-bind-ciphers`).
    pub ciphers: Option<Vec<String>>,
    /// TLS 1.3 suites by their IANA names (`ciphersuites`, `ssl-default-bind-ciphersuites`).
    pub ciphersuites: Option<Vec<String>>,
    /// `prefer-client-ciphers`: the client's order of suites wins.
    pub prefer_client_ciphers: bool,
}

impl SslBind {
    /// This bind's settings, with `defaults` (the `ssl-default-bind-*` lines) where the bind
    /// says nothing, as HAProxy applies them.
    pub fn with_defaults(&self, defaults: &SslBind) -> SslBind {
        SslBind {
            crt: self.crt.clone(),
            alpn: self.alpn.clone(),
            min_ver: self.min_ver.clone().or_else(|| defaults.min_ver.clone()),
            max_ver: self.max_ver.clone().or_else(|| defaults.max_ver.clone()),
            ciphers: self.ciphers.clone().or_else(|| defaults.ciphers.clone()),
            ciphersuites: self
                .ciphersuites
                .clone()
                .or_else(|| defaults.ciphersuites.clone()),
            prefer_client_ciphers: self.prefer_client_ciphers || defaults.prefer_client_ciphers,
        }
    }
}

/// Per-server settings; `default-server` fills the same struct and servers start from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerParams {
    pub check: bool,
    pub inter: Duration,
    pub fastinter: Option<Duration>,
    pub downinter: Option<Duration>,
    pub rise: u32,
    pub fall: u32,
    pub weight: u32,
    pub backup: bool,
    pub maxconn: Option<u32>,
    /// `maxqueue N`: at most N requests wait in this server's own queue (cookie-pinned ones);
    /// more go to any server through the backend queue.
    pub maxqueue: Option<u32>,
    pub disabled: bool,
    pub cookie: Option<String>,
    /// `port N`: check a different port than the traffic port.
    pub check_port: Option<u16>,
    /// `addr IP`: check a different address than the traffic address.
    pub check_addr: Option<IpAddr>,
    /// `send-proxy`: a PROXY protocol v1 line opens every connection to the server.
    pub send_proxy: bool,
    /// `send-proxy-v2`: the binary v2 header instead (it wins when both are set, as HAProxy).
    pub send_proxy_v2: bool,
    /// `check-send-proxy`: health checks send the header even where the traffic does not.
    pub check_send_proxy: bool,
    /// `proxy-v2-options crc32c`: the v2 header carries its CRC32C checksum (TLV 0x03).
    pub proxy_v2_crc32c: bool,
    /// `check-ssl`: health checks handshake TLS after connecting (and the PROXY header).
    pub check_ssl: bool,
    /// `check-sni NAME`: the SNI of the checks' TLS handshake; without it none is sent.
    pub check_sni: Option<String>,
    /// `verify none`: the server's certificate is not verified. The only mode built
    /// (`verify required` needs `ca-file`), so `check-ssl` is refused without it.
    pub verify_none: bool,
    /// `resolvers NAME`: the server's host name is re-resolved at run time through that
    /// `resolvers` section.
    pub resolvers: Option<String>,
    /// `resolve-prefer ipv4|ipv6`: the family taken when a name has both (HAProxy's default:
    /// IPv6).
    pub resolve_prefer: IpFamily,
    /// `init-addr`: how a host name gets its first address, methods tried in order (HAProxy's
    /// default `last,libc`).
    pub init_addr: Vec<InitAddr>,
}

/// An address family a name is resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpFamily {
    V4,
    #[default]
    V6,
}

/// One `init-addr` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitAddr {
    /// The address in the server-state file: there is no such file here (no
    /// `server-state-file` directive), so this step never finds one and the next is tried,
    /// as in HAProxy without that file.
    Last,
    /// The system resolver, at load time.
    Libc,
    /// No address: the server starts in maintenance until DNS gives it one.
    None,
    /// This address.
    Ip(IpAddr),
}

/// The DNS side of a server whose host name `resolvers` follows at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerDns {
    /// The name as written, without its port. A name whose first label starts with `_`
    /// (`_service._proto.name`) asks for SRV records, which give the port and weight.
    pub fqdn: String,
    /// The `resolvers` section.
    pub resolvers: String,
    /// The slots one name fills: the `server-template` NAME (or the server's own name for a
    /// `server` line); the slots of a group are its servers in file order.
    pub group: String,
}

impl ServerDns {
    pub fn is_srv(&self) -> bool {
        self.fqdn.starts_with('_')
    }
}

/// A `resolvers` section: the DNS servers asked and how answers are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolvers {
    pub name: String,
    pub nameservers: Vec<Nameserver>,
    pub hold: Hold,
    /// `timeout resolve`: the shortest time between two resolutions of one name (default 1s).
    pub resolve: Duration,
    /// `timeout retry`: how long one query waits for its answer (default 1s).
    pub retry: Duration,
    /// `resolve_retries`: queries sent for one resolution before it counts as timed out
    /// (default 3).
    pub retries: u32,
    /// `accepted_payload_size`: the EDNS0 size announced and the largest UDP answer read
    /// (default 512; a truncated one is asked again over TCP, up to 64 KiB).
    pub payload_size: u16,
    pub loc: Loc,
}

impl Resolvers {
    pub fn new(name: &str, loc: Loc) -> Resolvers {
        Resolvers {
            name: name.to_string(),
            nameservers: Vec::new(),
            hold: Hold::default(),
            resolve: Duration::from_secs(1),
            retry: Duration::from_secs(1),
            retries: 3,
            payload_size: 512,
            loc,
        }
    }
}

/// `nameserver NAME [udp@|tcp@]ADDR:PORT`, or one line of `/etc/resolv.conf`
/// (`parse-resolv-conf`).
#[derive(Debug, Clone, PartialEq)]
pub struct Nameserver {
    pub name: String,
    pub addr: SocketAddr,
    pub transport: DnsTransport,
}

/// How a nameserver is asked: over UDP (HAProxy's default, `udp@`), where an answer too
/// large for `accepted_payload_size` is asked again over TCP, or always over TCP (`tcp@`,
/// HAProxy 2.4+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsTransport {
    #[default]
    Udp,
    Tcp,
}

/// `hold STATUS PERIOD`: how long the last good answer stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hold {
    /// The longest time between two resolutions after a valid answer (the record TTL, when
    /// shorter, comes first).
    pub valid: Duration,
    /// How long a record missing from a newer answer keeps its server.
    pub obsolete: Duration,
    /// After NXDOMAIN, a timeout, REFUSED or another error: how long the last valid answer
    /// still stands before its servers go to maintenance.
    pub nx: Duration,
    pub timeout: Duration,
    pub refused: Duration,
    pub other: Duration,
}

impl Default for Hold {
    /// HAProxy's: 10s valid, 0s obsolete, 30s for the rest.
    fn default() -> Hold {
        let thirty = Duration::from_secs(30);
        Hold {
            valid: Duration::from_secs(10),
            obsolete: Duration::ZERO,
            nx: thirty,
            timeout: thirty,
            refused: thirty,
            other: thirty,
        }
    }
}

/// Which PROXY protocol header a server's connections start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

impl ServerParams {
    /// The header the traffic to this server starts with, if any.
    pub fn proxy_version(&self) -> Option<ProxyVersion> {
        if self.send_proxy_v2 {
            Some(ProxyVersion::V2)
        } else if self.send_proxy {
            Some(ProxyVersion::V1)
        } else {
            None
        }
    }

    /// The header health checks start with: HAProxy sends the traffic's header on checks
    /// unless `port` moves them elsewhere (then only with `check-send-proxy`), v1 unless the
    /// traffic uses v2.
    pub fn check_proxy_version(&self) -> Option<ProxyVersion> {
        let traffic = self.proxy_version();
        let on = self.check_send_proxy || (traffic.is_some() && self.check_port.is_none());
        on.then_some(traffic.unwrap_or(ProxyVersion::V1))
    }
}

impl Default for ServerParams {
    /// HAProxy's defaults: inter 2s, rise 2, fall 3, weight 1.
    fn default() -> Self {
        ServerParams {
            check: false,
            inter: Duration::from_secs(2),
            fastinter: None,
            downinter: None,
            rise: 2,
            fall: 3,
            weight: 1,
            backup: false,
            maxconn: None,
            maxqueue: None,
            disabled: false,
            cookie: None,
            check_port: None,
            check_addr: None,
            send_proxy: false,
            send_proxy_v2: false,
            check_send_proxy: false,
            proxy_v2_crc32c: false,
            check_ssl: false,
            check_sni: None,
            verify_none: false,
            resolvers: None,
            resolve_prefer: IpFamily::V6,
            init_addr: vec![InitAddr::Last, InitAddr::Libc],
        }
    }
}

/// `option httpchk` with the section's `http-check` lines, resolved as HAProxy 2.6 builds its
/// ruleset: the request to send, and every expectation the response must meet.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub request: CheckRequest,
    /// Checked in order on the same response; never empty (without an `http-check expect`
    /// line it holds HAProxy's implicit `status 200-399`).
    pub expects: Vec<CheckExpect>,
    /// The `option httpchk` line.
    pub loc: Loc,
}

/// The request of an HTTP check, validated so it cannot break the request framing.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    /// `OPTIONS` unless given, as HAProxy.
    pub method: String,
    /// `/` unless given.
    pub uri: String,
    /// `HTTP/1.0` unless given.
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// Sent with a `Content-Length`; empty means none.
    pub body: String,
}

impl CheckRequest {
    /// HAProxy's request when `option httpchk` has no arguments.
    pub fn haproxy_default() -> CheckRequest {
        CheckRequest {
            method: "OPTIONS".to_string(),
            uri: "/".to_string(),
            version: "HTTP/1.0".to_string(),
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// One `http-check expect` line.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckExpect {
    /// `!`: the check fails when the pattern matches.
    pub negate: bool,
    pub matcher: ExpectMatch,
    /// `comment MSG`: added to the check's report when this expectation fails.
    pub comment: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectMatch {
    /// `status 200,300-399`: inclusive ranges of status codes.
    Status(Vec<(u16, u16)>),
    /// `rstatus REGEX`, on the status code's three digits.
    StatusRegex(Pattern),
    /// `string TEXT`, found anywhere in the body.
    Body(String),
    /// `rstring REGEX`, on the body.
    BodyRegex(Pattern),
}

/// A regular expression compiled when the line is read (so a bad one is a `file:line` error),
/// compared by its text. Bytes, not text: a response body need not be UTF-8.
#[derive(Debug, Clone)]
pub struct Pattern(regex::bytes::Regex);

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, String> {
        regex::bytes::Regex::new(text)
            .map(Pattern)
            .map_err(|e| format!("invalid regex '{text}': {}", regex_reason(&e)))
    }

    /// Found anywhere in `haystack` (HAProxy's regex_exec: a search, not a full match).
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.0.is_match(haystack)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

/// The regex crate explains a syntax error over several lines (the pattern, a caret, then
/// the reason); a config problem is one `file:line: reason` line, so only the reason is kept.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct DgramBind {
    pub addr: SocketAddr,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    /// Where it is reached. An unspecified IP (`init-addr none`, or a template slot no
    /// record filled yet) means no address: the server starts in maintenance.
    pub addr: SocketAddr,
    pub params: ServerParams,
    /// `resolvers`: the address follows DNS at run time.
    pub dns: Option<ServerDns>,
    pub loc: Loc,
}

/// A condition after `if`/`unless`, kept as words; the HTTP room compiles the ACL subset.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub negate: bool,
    pub words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UseBackend {
    pub backend: String,
    pub cond: Option<Condition>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Acl {
    pub name: String,
    pub words: Vec<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieMode {
    Prefix,
    Insert,
    Rewrite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CookieSpec {
    pub name: String,
    pub mode: CookieMode,
    pub indirect: bool,
    pub nocache: bool,
    pub httponly: bool,
    pub secure: bool,
    pub maxidle: Option<Duration>,
    pub maxlife: Option<Duration>,
    /// `domain D` (repeatable) and `attr A` (repeatable): added to the inserted cookie.
    pub domains: Vec<String>,
    pub attrs: Vec<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsSpec {
    pub enabled: bool,
    pub uri: Option<String>,
    pub realm: Option<String>,
    /// `stats auth USER:PASSWORD`, possibly several.
    pub auth: Vec<(String, String)>,
    pub hide_version: bool,
    pub refresh: Option<Duration>,
    pub show_legends: bool,
}

/// HAProxy's default `stats uri`.
pub const DEFAULT_STATS_URI: &str = "/haproxy?stats";
/// After the stats URI, asks for the Prometheus exporter behind the same `stats auth`, as
/// `;csv` asks for CSV: `/haproxy_stats;metrics`.
pub const METRICS_FLAG: &str = ";metrics";

impl StatsSpec {
    /// `stats uri`, or HAProxy's default.
    pub fn uri(&self) -> &str {
        self.uri.as_deref().unwrap_or(DEFAULT_STATS_URI)
    }

    /// True when `path_and_query` asks for the exporter under the stats URI. Metrics are
    /// served only where configured: here, behind the page's auth, or by an
    /// `http-request use-service prometheus-exporter` rule.
    pub fn is_metrics_path(&self, path_and_query: &str) -> bool {
        path_and_query
            .strip_prefix(self.uri())
            .is_some_and(|rest| rest.split(['?', '&']).next() == Some(METRICS_FLAG))
    }

    /// True when `path_and_query`, sent to a proxy with this `stats` block, is for the stats
    /// service. HAProxy matches `stats uri` as a prefix, so `;csv` and the like ride after it.
    pub fn matches(&self, path_and_query: &str) -> bool {
        self.enabled && path_and_query.starts_with(self.uri())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFile {
    pub status: u16,
    pub path: PathBuf,
    pub loc: Loc,
}

/// `http-request …`, `reqadd …` (legacy spelling of `http-request add-header`), `redirect …`.
/// `Proxy::http_rules` keeps them in the order HAProxy evaluates them: by `origin` first
/// (see [`Proxy::add_http_rule`]), then in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRule {
    pub action: HttpAction,
    pub cond: Option<Condition>,
    pub loc: Loc,
    pub origin: RuleOrigin,
}

/// Which keyword wrote a rule. HAProxy runs all `http-request` rules, then the legacy `req*`
/// rules, then `redirect` rules, whatever their order in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleOrigin {
    HttpRequest,
    Reqadd,
    Redirect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpAction {
    AddHeader {
        name: String,
        value: String,
    },
    SetHeader {
        name: String,
        value: String,
    },
    DelHeader {
        name: String,
    },
    Deny {
        status: u16,
    },
    Redirect(Redirect),
    /// `http-request use-service prometheus-exporter`.
    UseService(String),
}

/// One `http-response` rule: applied to a server's response head, backend rules first, then
/// the frontend's, as HAProxy does.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponseRule {
    pub action: HttpResponseAction,
    pub cond: Option<Condition>,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpResponseAction {
    AddHeader {
        name: String,
        value: String,
    },
    SetHeader {
        name: String,
        value: String,
    },
    DelHeader {
        name: String,
    },
    /// `replace-header NAME REGEX REPLACEMENT`: each value of NAME matching REGEX whole is
    /// replaced, with `\1`…`\9` for the regex's groups.
    ReplaceHeader {
        name: String,
        regex: String,
        replacement: String,
    },
    /// The response is replaced by an error page with this status (HAProxy's default 502).
    Deny {
        status: u16,
    },
    SetStatus {
        status: u16,
        reason: Option<String>,
    },
}

/// `http-reuse`: which idle server connections a request may use (HAProxy's default `safe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpReuse {
    Never,
    #[default]
    Safe,
    Aggressive,
    Always,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub kind: RedirectKind,
    /// `code N`; HAProxy's default is 302.
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedirectKind {
    Scheme(String),
    Location(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub name: String,
    pub kind: ProxyKind,
    pub loc: Loc,
    pub mode: Mode,
    pub binds: Vec<Bind>,
    /// `dgram-bind ADDR:PORT[,…]` of a `udp-lb` section.
    pub dgram_binds: Vec<DgramBind>,
    pub default_backend: Option<String>,
    pub use_backends: Vec<UseBackend>,
    pub servers: Vec<Server>,
    pub default_server: ServerParams,
    pub balance: Balance,
    pub maxconn: Option<u32>,
    pub timeouts: Timeouts,
    pub retries: u32,
    pub options: Options,
    pub log: ProxyLog,
    pub engine: EngineChoice,
    pub acls: Vec<Acl>,
    pub http_rules: Vec<HttpRule>,
    pub cookie: Option<CookieSpec>,
    pub stats: Option<StatsSpec>,
    pub errorfiles: Vec<ErrorFile>,
    /// `http-response` rules in file order.
    pub http_response_rules: Vec<HttpResponseRule>,
    /// `http-reuse never|safe|aggressive|always`.
    pub http_reuse: HttpReuse,
    /// The arguments of `balance uri|url_param|hdr(…)`.
    pub balance_args: BalanceArgs,
    /// `hash-type`.
    pub hash_type: HashType,
    /// `id N`: the proxy's number on the stats page (`iid`); else its position in the file.
    pub id: Option<u32>,
    /// `description TEXT`: shown on the stats page.
    pub description: Option<String>,
    /// `option httpchk` (with its `http-check` lines): servers with `check` are checked over
    /// HTTP instead of by a bare TCP connect.
    pub http_check: Option<HttpCheck>,
}

impl Proxy {
    /// Adds a rule where HAProxy would evaluate it: after every rule of the same or an
    /// earlier phase, before the rules of later phases.
    pub fn add_http_rule(&mut self, rule: HttpRule) {
        let at = self
            .http_rules
            .iter()
            .position(|r| r.origin > rule.origin)
            .unwrap_or(self.http_rules.len());
        self.http_rules.insert(at, rule);
    }

    /// A proxy as a section header creates it, before any defaults are applied.
    pub fn new(name: &str, kind: ProxyKind, loc: Loc) -> Proxy {
        Proxy {
            name: name.to_string(),
            kind,
            loc,
            mode: Mode::Tcp,
            binds: Vec::new(),
            dgram_binds: Vec::new(),
            default_backend: None,
            use_backends: Vec::new(),
            servers: Vec::new(),
            default_server: ServerParams::default(),
            balance: Balance::RoundRobin,
            maxconn: None,
            timeouts: Timeouts::default(),
            retries: 3,
            options: Options::default(),
            log: ProxyLog::default(),
            engine: EngineChoice::Auto,
            acls: Vec::new(),
            http_rules: Vec::new(),
            cookie: None,
            stats: None,
            errorfiles: Vec::new(),
            http_response_rules: Vec::new(),
            http_reuse: HttpReuse::Safe,
            balance_args: BalanceArgs::default(),
            hash_type: HashType::default(),
            id: None,
            description: None,
            http_check: None,
        }
    }
}
