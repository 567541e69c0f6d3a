//! One API client: its level (which `user`/`operator` may lower), prompt mode, and the
//! answer to each line, framed as HAProxy's CLI frames it: each command's output followed
//! by an empty line, and `> ` after each line in prompt mode.

use super::command::{self, Command, PERMISSION_DENIED};
use super::{flows, frontends, help, servers, show, Control};
use crate::config::ApiLevel;

pub struct Conn<'c> {
    control: &'c dyn Control,
    level: ApiLevel,
    /// The socket has `expose-fd listeners`.
    expose_fd: bool,
    prompt: bool,
    done: bool,
    /// `_getsocks` was asked for: the socket layer sends the listeners, then closes.
    send_listeners: bool,
}

impl<'c> Conn<'c> {
    pub fn new(control: &'c dyn Control, level: ApiLevel, expose_fd: bool) -> Conn<'c> {
        Conn {
            control,
            level,
            expose_fd,
            prompt: false,
            done: false,
            send_listeners: false,
        }
    }

    /// `_getsocks` was asked for on a socket that allows it.
    pub fn wants_listeners(&self) -> bool {
        self.send_listeners
    }

    /// In prompt mode: the connection stays open for more lines.
    pub fn interactive(&self) -> bool {
        self.prompt
    }

    /// `quit` was said.
    pub fn done(&self) -> bool {
        self.done
    }

    /// What to send back for one line (its end of line already taken off).
    pub fn answer_line(&mut self, line: &str) -> String {
        let mut out = String::new();
        for words in command::split_line(line) {
            if self.done {
                break;
            }
            let text = self.answer(&words);
            if self.done {
                break;
            }
            out.push_str(&text);
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
            out.push('\n');
        }
        self.prompted(out)
    }

    /// What a line too long to read gets.
    pub fn too_long(&mut self) -> String {
        self.prompted(format!(
            "Command line too long (at most {} bytes).\n\n",
            command::MAX_LINE
        ))
    }

    fn prompted(&self, mut out: String) -> String {
        if self.prompt && !self.done {
            out.push_str("> ");
        }
        out
    }

    fn answer(&mut self, words: &[String]) -> String {
        let cmd = match command::parse(words) {
            Ok(cmd) => cmd,
            Err(e) => return e,
        };
        if cmd.level() > self.level {
            return PERMISSION_DENIED.into();
        }
        self.run(&cmd).unwrap_or_else(|e| e)
    }

    fn run(&mut self, cmd: &Command) -> Result<String, String> {
        // Read for each command: a reload between two commands replaces the registry.
        let reg = self.control.registry();
        match cmd {
            Command::Help => Ok(help::text(self.level)),
            Command::Prompt => {
                self.prompt = !self.prompt;
                Ok(String::new())
            }
            Command::Quit => {
                self.done = true;
                Ok(String::new())
            }
            Command::Lower(level) if *level > self.level => Err(PERMISSION_DENIED.into()),
            Command::Lower(level) => {
                self.level = *level;
                Ok(String::new())
            }
            Command::ShowCliLevel => Ok(self.level.as_str().to_string()),
            Command::ShowVersion => Ok(env!("CARGO_PKG_VERSION").to_string()),
            Command::ShowInfo => Ok(show::info(&reg)),
            Command::ShowStat(f) => Ok(show::stat(&reg, f)),
            Command::ShowServersState(b) => show::servers_state(&reg, b.as_deref()),
            Command::ShowSess => Ok(flows::sess(&reg)),
            Command::ShowFlows => Ok(flows::table(&reg)),
            Command::ShowSslCert(f) => show::ssl_certs(&self.control.certificates(), f.as_deref()),
            Command::SetMaxconnFrontend(name, n) => {
                frontends::set_maxconn(self.control, &reg, name, *n)
            }
            Command::Reload => self.control.reload(),
            Command::GetSocks if !self.expose_fd => {
                Err("_getsocks needs 'expose-fd listeners' on this stats socket.".into())
            }
            // Taken by the socket layer when it may run; here it may not.
            Command::Handover(what) => Err(format!(
                "{what} must be alone on its line, on a level admin stats socket with \
                 'expose-fd listeners'."
            )),
            Command::GetSocks => {
                // What follows on the connection is the hand-over protocol, nothing else.
                self.send_listeners = true;
                self.done = true;
                Ok(String::new())
            }
            other => servers::run(&reg, other),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{Registry, TEST_CONFIG};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    /// A control over one registry; records the frontend limits it was asked to set.
    pub struct Fixed {
        pub registry: Arc<Registry>,
        pub limits: Mutex<Vec<(String, u32)>>,
    }

    impl Fixed {
        pub fn new() -> Fixed {
            let cfg = crate::config::parse_str(TEST_CONFIG, std::path::Path::new("t.cfg"))
                .expect("config");
            Fixed {
                registry: Arc::new(Registry::from_config(&cfg)),
                limits: Mutex::new(Vec::new()),
            }
        }
    }

    impl Control for Fixed {
        fn registry(&self) -> Arc<Registry> {
            self.registry.clone()
        }
        fn reload(&self) -> Result<String, String> {
            Err("reload is not wired yet".into())
        }
        fn set_frontend_maxconn(&self, frontend: &str, n: u32) -> Result<(), String> {
            self.limits.lock().unwrap().push((frontend.into(), n));
            Ok(())
        }
        fn certificates(&self) -> Vec<PathBuf> {
            vec![PathBuf::from("/etc/ssl/site.pem")]
        }
        fn handover(&self, _: &str, _: std::os::unix::net::UnixStream) {}
        fn listeners(&self) -> Vec<std::os::fd::OwnedFd> {
            Vec::new()
        }
    }

    #[test]
    fn each_answer_ends_with_an_empty_line() {
        let c = Fixed::new();
        let mut conn = Conn::new(&c, ApiLevel::Admin, false);
        assert_eq!(
            conn.answer_line("show cli level;user;show cli level"),
            "admin\n\n\nuser\n\n"
        );
        assert_eq!(conn.answer_line("operator"), "Permission denied\n\n");
        assert_eq!(
            conn.answer_line("set server backend_rtmp/ams1 state drain"),
            "Permission denied\n\n"
        );
        assert_eq!(conn.answer_line("   "), "");
        assert_eq!(
            conn.answer_line("frob"),
            format!("{}\n\n", command::UNKNOWN),
            "one line, then the blank one"
        );
    }

    #[test]
    fn prompt_mode_and_quit() {
        let c = Fixed::new();
        let mut conn = Conn::new(&c, ApiLevel::Operator, false);
        assert_eq!(conn.answer_line("prompt"), "\n> ");
        assert!(conn.interactive());
        assert_eq!(conn.answer_line("show cli level"), "operator\n\n> ");
        assert_eq!(conn.answer_line("quit; show info"), "");
        assert!(conn.done());
    }

    #[test]
    fn levels_and_admin_commands() {
        let c = Fixed::new();
        let mut user = Conn::new(&c, ApiLevel::User, false);
        assert_eq!(user.answer_line("show sess"), "Permission denied\n\n");
        assert!(user
            .answer_line("show stat")
            .starts_with("# pxname,svname,"));
        assert!(user
            .answer_line("show servers state")
            .starts_with("1\n# be_id "));
        assert!(!user.answer_line("help").contains("set server"));
        let mut op = Conn::new(&c, ApiLevel::Operator, false);
        assert_eq!(
            op.answer_line("show ssl cert"),
            "# filename\n/etc/ssl/site.pem\n\n"
        );
        assert_eq!(
            op.answer_line("set maxconn frontend rtmp_lb 5"),
            "Permission denied\n\n"
        );
        let mut admin = Conn::new(&c, ApiLevel::Admin, false);
        assert_eq!(admin.answer_line("set maxconn frontend rtmp_lb 5"), "\n");
        assert_eq!(*c.limits.lock().unwrap(), [("rtmp_lb".to_string(), 5)]);
        assert_eq!(
            c.registry.proxy("rtmp_lb").and_then(|p| p.frontend_limit()),
            Some(5)
        );
        assert_eq!(
            admin.answer_line("set maxconn frontend nope 5"),
            "No such frontend.\n\n"
        );
        assert_eq!(admin.answer_line("reload"), "reload is not wired yet\n\n");
        assert_eq!(
            admin.too_long(),
            "Command line too long (at most 16384 bytes).\n\n"
        );
        assert_eq!(
            admin.answer_line("_getsocks"),
            "_getsocks needs 'expose-fd listeners' on this stats socket.\n\n"
        );
        let mut exposing = Conn::new(&c, ApiLevel::User, true);
        assert_eq!(exposing.answer_line("_getsocks; show info"), "");
        assert!(exposing.wants_listeners() && exposing.done());
    }
}
