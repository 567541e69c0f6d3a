//! HTTP clients and odd servers for the HTTP-mode tests: a raw keep-alive client over one TCP
//! connection (exact bytes in, parsed responses out), curl, a WebSocket echo server and client
//! (python3-websockets), and a one-shot TCP server that answers with scripted bytes.
//! Every read and write is bounded by a timeout.

use crate::util::{require_tool, TestDir};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const IO_LIMIT: Duration = Duration::from_secs(15);

/// A parsed response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The line of the body that starts with `prefix`, without it.
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(String::from))
    }
}

/// One client connection; responses are read with their framing, so requests can follow.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_LIMIT)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Conn::on(stream)
    }

    /// A connection from the local address `src` (bound before connecting), so that the
    /// client's address differs from every hop's on one loopback.
    pub fn open_from(src: IpAddr, addr: SocketAddr) -> Conn {
        Conn::on(connect_from(src, addr))
    }

    /// A connection already made (with a bounded connect, say).
    pub fn on_stream(stream: TcpStream) -> Conn {
        Conn::on(stream)
    }

    fn on(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_LIMIT)).expect("timeout");
        stream.set_write_timeout(Some(IO_LIMIT)).expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("sending a request");
    }

    /// `GET path` with `Host: lb.example` and extra header lines.
    pub fn get(&mut self, path: &str, extra: &[&str]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: lb.example\r\n");
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.send(req.as_bytes());
        self.response(false).expect("a response")
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (`head_only` for HEAD). Err with what arrived if the stream ends first.
    pub fn response(&mut self, head_only: bool) -> Result<Response, String> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match self.fill() {
                Ok(0) => {
                    return Err(format!(
                        "EOF after {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{e} after {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut r = parse_head(&head)?;
        if head_only || r.status == 204 || r.status == 304 || r.status < 200 {
            return Ok(r);
        }
        if r.header("transfer-encoding").is_some() {
            r.body = self.chunked()?;
        } else if let Some(n) = r
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while self.buf.len() < n {
                if self.fill().map_err(|e| e.to_string())? == 0 {
                    return Err("EOF in a body".into());
                }
            }
            r.body = self.buf.drain(..n).collect();
        } else {
            while self.fill().map_err(|e| e.to_string())? > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    fn chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.fill().map_err(|e| e.to_string())? == 0 {
                    return Err("EOF in a chunked body".into());
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if self.fill().map_err(|e| e.to_string())? == 0 {
                    return Err("EOF in a chunk".into());
                }
            }
            if size == 0 {
                // No trailers in these tests: the final CRLF follows.
                self.buf.drain(..2);
                return Ok(body);
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads until EOF (or error) and returns what came; `true` if it ended in EOF or reset,
    /// `false` on a timeout.
    pub fn read_to_close(&mut self) -> (Vec<u8>, bool) {
        loop {
            match self.fill() {
                Ok(0) => return (std::mem::take(&mut self.buf), true),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (std::mem::take(&mut self.buf), false)
                }
                Err(_) => return (std::mem::take(&mut self.buf), true),
            }
        }
    }
}

fn parse_head(head: &str) -> Result<Response, String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: Vec::new(),
    })
}

/// A TCP connection to `addr` from `src` (any port): bind before connect.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("binding the client to {src}: {e}"));
    socket
        .connect_timeout(&addr.into(), IO_LIMIT)
        .unwrap_or_else(|e| panic!("connecting to {addr} from {src}: {e}"));
    socket.into()
}

/// Sends `bytes` on a fresh connection, half-closes, and reads everything until close.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut c = Conn::open(addr);
    c.send(bytes);
    c.shutdown_write();
    let (got, closed) = c.read_to_close();
    assert!(
        closed,
        "the proxy did not close after {:?}",
        String::from_utf8_lossy(bytes)
    );
    got
}

/// The status code of the first response in `raw`.
pub fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

/// `curl -s -i ARGS…`, bounded; returns the output.
pub fn curl(args: &[&str]) -> Output {
    Command::new(require_tool("curl"))
        .args(["-s", "-S", "--max-time", "20"])
        .args(args)
        .output()
        .expect("running curl")
}

/// curl's output as text, after checking that it succeeded.
pub fn ok_text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A python3-websockets echo server that answers `NAME:message`. Killed on drop.
pub struct WsServer {
    child: Child,
    pub addr: SocketAddr,
    /// Kept open: a closed pipe would make the server's next print fail.
    _stdout: std::process::ChildStdout,
    _dir: TestDir,
}

const WS_SERVER: &str = r#"
import asyncio, sys, websockets
name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def echo(ws, path=None):
    async for m in ws:
        await ws.send(name + ":" + m)
async def main():
    async with websockets.serve(echo, host, port, ping_interval=None):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// Connects, sends `first`, stays idle `idle` seconds, sends `second`, prints both answers.
const WS_CLIENT: &str = r#"
import asyncio, sys, websockets
url, cookie, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
async def main():
    headers = {"Cookie": cookie} if cookie else {}
    async with websockets.connect(url, extra_headers=headers, ping_interval=None, open_timeout=10) as ws:
        await ws.send("first")
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
        await asyncio.sleep(idle)
        await ws.send("second")
        print(await asyncio.wait_for(ws.recv(), 10), flush=True)
asyncio.run(main())
"#;

/// The Debian python with python3-websockets (not a pyenv one that lacks it).
fn python() -> &'static str {
    "/usr/bin/python3"
}

impl WsServer {
    pub fn start(name: &str, addr: SocketAddr) -> WsServer {
        let dir = TestDir::new(&format!("ws-{name}"));
        let script = dir.join("server.py");
        std::fs::write(&script, WS_SERVER).expect("writing server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args([name, &addr.ip().to_string(), &addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting python3 (apt-get install python3-websockets)");
        let mut out = child.stdout.take().expect("stdout");
        let mut ready = [0u8; 6];
        out.read_exact(&mut ready)
            .expect("the websocket server did not start (is python3-websockets installed?)");
        assert_eq!(&ready, b"ready\n");
        WsServer {
            child,
            addr,
            _stdout: out,
            _dir: dir,
        }
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the WebSocket client: the two answers it got, or its error output.
pub fn ws_exchange(url: &str, cookie: &str, idle_secs: f64) -> Result<Vec<String>, String> {
    let idle = idle_secs.to_string();
    run_ws_client(
        "ws-client",
        WS_CLIENT,
        &[url.as_ref(), cookie.as_ref(), idle.as_ref()],
    )
}

/// Runs a WebSocket client script (`ws://` here, `wss://` in `tls`) with `args`, bounded by
/// `timeout 60`: the lines it printed (the answers it got), or its error output.
pub(crate) fn run_ws_client(
    dir_name: &str,
    script_text: &str,
    args: &[&OsStr],
) -> Result<Vec<String>, String> {
    let dir = TestDir::new(dir_name);
    let script = dir.join("client.py");
    std::fs::write(&script, script_text).expect("writing client.py");
    let out = Command::new(require_tool("timeout"))
        .args(["60", python()])
        .arg(&script)
        .args(args)
        .output()
        .expect("running the websocket client");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

/// A server that accepts connections and answers each with `reply` (after reading a head),
/// then closes. For backends that misbehave on purpose.
pub fn scripted_server(addr: SocketAddr, reply: &'static [u8]) {
    let listener = TcpListener::bind(addr).expect("binding the scripted server");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let _ = s.set_read_timeout(Some(IO_LIMIT));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut byte), Ok(1)) {
                head.push(byte[0]);
            }
            let _ = s.write_all(reply);
        }
    });
}

/// One column of one CSV row of the stats page on `127.0.0.1:stats` (`/stats;csv`).
pub fn csv_field(stats: u16, proxy: &str, service: &str, column: &str) -> String {
    csv_column(stats, proxy, column)
        .into_iter()
        .find(|(sv, _)| sv == service)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no row {proxy}/{service}"))
}

/// One column of every row of `proxy` (its servers, FRONTEND and BACKEND), as (service,
/// value), from one read of the stats page on `127.0.0.1:stats` (`/stats;csv`).
pub fn csv_column(stats: u16, proxy: &str, column: &str) -> Vec<(String, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, stats));
    let (status, body) = crate::nginx::http_get(addr, "/stats;csv").expect("the stats CSV");
    assert_eq!(status, 200, "{body}");
    let mut lines = body.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("a CSV header")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let at = header
        .iter()
        .position(|c| *c == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r.first() == Some(&proxy))
        .filter_map(|r| Some((r.get(1)?.to_string(), r.get(at)?.to_string())))
        .collect()
}
