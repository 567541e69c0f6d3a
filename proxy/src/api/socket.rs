//! The `stats socket` listeners: bound at start (before chroot and the privilege drop, as
//! HAProxy binds them), then served by one thread each, with a thread per client. A client
//! is answered line by line; without `prompt` the connection closes once the lines it sent
//! are answered, as HAProxy's does. Each socket serves at most `stats maxconn` clients at
//! once (the rest wait in the backlog) and drops a client idle for `stats timeout`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::command::MAX_LINE;
use super::{ApiError, Conn, Control};
use crate::config::{Global, StatsSocket};

/// HAProxy's defaults for `stats timeout` and `stats maxconn`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAXCONN: u32 = 10;

/// The sockets, bound and not yet served. Dropping it (or the [`Serving`] it becomes)
/// removes the socket files.
pub struct Bound {
    sockets: Vec<(UnixListener, StatsSocket)>,
    timeout: Duration,
    maxconn: u32,
    paths: Paths,
}

/// Socket files to remove at exit, each with the inode it was bound as: after a binary
/// upgrade the next process has bound its own socket at the same path, and the old one,
/// exiting, must leave that one alone.
struct Paths(Vec<(PathBuf, Option<u64>)>);

impl Drop for Paths {
    fn drop(&mut self) {
        for (p, ino) in &self.0 {
            if inode(p) == *ino {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn inode(path: &std::path::Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// Binds every `stats socket` of `global`. A socket file left by an earlier run is
/// replaced (HAProxy does the same); any other file in the way is an error.
pub fn bind(global: &Global) -> Result<Bound, ApiError> {
    let mut bound = Bound {
        sockets: Vec::new(),
        timeout: global.stats_timeout.unwrap_or(DEFAULT_TIMEOUT),
        maxconn: global.stats_maxconn.unwrap_or(DEFAULT_MAXCONN),
        paths: Paths(Vec::new()),
    };
    for s in &global.stats_sockets {
        let error = |source| ApiError::Bind {
            loc: s.loc.clone(),
            path: s.path.clone(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&s.path) {
            if !meta.file_type().is_socket() {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            std::fs::remove_file(&s.path).map_err(error)?;
        }
        let listener = UnixListener::bind(&s.path).map_err(error)?;
        bound.paths.0.push((s.path.clone(), inode(&s.path)));
        if let Some(mode) = s.mode {
            std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(mode))
                .map_err(error)?;
        }
        bound.sockets.push((listener, s.clone()));
    }
    Ok(bound)
}

/// The API being served; dropping it removes the socket files (the threads end with the
/// process).
pub struct Serving {
    _paths: Paths,
}

impl Bound {
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Starts one thread per socket.
    pub fn serve(self, control: Arc<dyn Control>) -> Result<Serving, ApiError> {
        for (listener, socket) in self.sockets {
            let control = control.clone();
            let (timeout, maxconn) = (self.timeout, self.maxconn);
            log::info!(
                "runtime API on {} (level {})",
                socket.path.display(),
                socket.level.as_str()
            );
            std::thread::Builder::new()
                .name("api".into())
                .spawn(move || accept_loop(listener, socket, control, timeout, maxconn))
                .map_err(ApiError::Thread)?;
        }
        Ok(Serving { _paths: self.paths })
    }
}

/// A count of clients served, waited on when full.
#[derive(Default)]
struct Slots {
    busy: Mutex<u32>,
    freed: Condvar,
}

impl Slots {
    fn take(&self, max: u32) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= max {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
    }

    fn give(&self) {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        *busy = busy.saturating_sub(1);
        self.freed.notify_one();
    }
}

fn accept_loop(
    listener: UnixListener,
    socket: StatsSocket,
    control: Arc<dyn Control>,
    timeout: Duration,
    maxconn: u32,
) {
    let slots = Arc::new(Slots::default());
    loop {
        slots.take(maxconn);
        match listener.accept() {
            Ok((stream, _)) => {
                let (control, slots) = (control.clone(), slots.clone());
                let (level, expose_fd) = (socket.level, socket.expose_fd);
                let spawned =
                    std::thread::Builder::new()
                        .name("api-client".into())
                        .spawn(move || {
                            client(stream, &*control, level, expose_fd, timeout);
                            slots.give();
                        });
                if let Err(e) = spawned {
                    log::warn!("runtime API: cannot serve a client: {e}");
                }
            }
            Err(e) => {
                slots.give();
                log::warn!(
                    "runtime API on {}: accept failed: {e}",
                    socket.path.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `_getlisteners` and `_getflows`, alone on their line.
fn is_handover(line: &str) -> bool {
    matches!(line.trim(), "_getlisteners" | "_getflows")
}

/// One line read: its text, or that it was longer than [`MAX_LINE`] (and skipped).
enum Line {
    Text(String),
    TooLong,
    End,
}

fn client(
    stream: UnixStream,
    control: &dyn Control,
    level: crate::config::ApiLevel,
    expose_fd: bool,
    timeout: Duration,
) {
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    let mut conn = Conn::new(control, level, expose_fd);
    loop {
        let answer = match read_line(&mut reader) {
            Ok(Line::Text(line))
                if level == crate::config::ApiLevel::Admin && expose_fd && is_handover(&line) =>
            {
                // The rest of the connection speaks the hand-over protocol: no answer text.
                let _ = writer.set_read_timeout(None);
                control.handover(line.trim(), writer);
                return;
            }
            Ok(Line::Text(line)) => conn.answer_line(&line),
            Ok(Line::TooLong) => conn.too_long(),
            // End of input, idle past `stats timeout`, or a broken connection.
            Ok(Line::End) | Err(_) => return,
        };
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if conn.wants_listeners() {
            let listeners = control.listeners();
            match super::fds::send_listeners(&writer, &listeners) {
                Ok(()) => log::info!(
                    "runtime API: {} listening socket(s) handed over (_getsocks)",
                    listeners.len()
                ),
                Err(e) => log::warn!("runtime API: _getsocks failed: {e}"),
            }
            return;
        }
        if conn.done() {
            return;
        }
        // Without prompt, HAProxy closes once what the client sent is answered.
        if !conn.interactive() && reader.buffer().is_empty() {
            return;
        }
    }
}

/// Reads up to a newline, keeping at most [`MAX_LINE`] bytes: a longer line is consumed to
/// its end and reported, so one bad line never costs more memory or the connection.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (line.is_empty(), too_long) {
                (_, true) => Line::TooLong,
                (true, false) => Line::End,
                (false, false) => Line::Text(String::from_utf8_lossy(&line).into_owned()),
            });
        }
        let (part, found) = match chunk.iter().position(|b| *b == b'\n') {
            Some(at) => (&chunk[..at], Some(at)),
            None => (chunk, None),
        };
        if line.len() + part.len() > MAX_LINE {
            too_long = true;
        } else if !too_long {
            line.extend_from_slice(part);
        }
        let used = found.map_or(chunk.len(), |at| at + 1);
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(String::from_utf8_lossy(&line).into_owned())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conn::tests::Fixed;
    use crate::config::ApiLevel;
    use std::io::Read;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut r = BufReader::with_capacity(64, input);
        let mut out = Vec::new();
        loop {
            match read_line(&mut r).expect("read") {
                Line::Text(t) => out.push(t),
                Line::TooLong => out.push("<too long>".into()),
                Line::End => return out,
            }
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut input = b"show info\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nshow stat");
        assert_eq!(lines(&input), ["show info", "<too long>", "show stat"]);
    }

    #[test]
    fn a_socket_answers_and_closes_and_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("api-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("admin.sock");
        // A stale socket file from an earlier run is replaced.
        drop(UnixListener::bind(&path).expect("stale"));
        let global = Global {
            stats_sockets: vec![StatsSocket {
                path: path.clone(),
                mode: Some(0o600),
                level: ApiLevel::User,
                expose_fd: false,
                loc: Default::default(),
            }],
            ..Global::default()
        };
        let serving = bind(&global)
            .expect("bind")
            .serve(Arc::new(Fixed::new()))
            .expect("serve");
        let mode = std::fs::metadata(&path)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut s = UnixStream::connect(&path).expect("connect");
        s.write_all(b"show cli level; set server backend_rtmp/ams1 state maint\n")
            .expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read until close");
        assert_eq!(answer, "user\n\nPermission denied\n\n");
        drop(serving);
        assert!(!path.exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
