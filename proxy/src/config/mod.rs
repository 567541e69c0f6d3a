//! HAProxy-syntax configuration: lexer → sections → validated typed model.
//! Every error carries `file:line`. This room never touches sockets (host names in `server`
//! and `bind` lines are resolved once, at load time, as HAProxy does).
//!
//! Modules, one concern each:
//! - `lexer`: one line → words (quotes, escapes, environment variables, comments);
//! - `time`, `num`, `addr`: values (durations, integers, addresses);
//! - `args`: the cursor a directive reads its words with, conditions included;
//! - `parse`: sections and defaults inheritance; `keywords`: which keyword goes where;
//! - `global`, `proxy`, `bind`, `server`, `http`: the directives; `httpchk` and
//!   `check_expect`: `option httpchk` and the `http-check` lines;
//! - `resolvers`: the `resolvers` section (DNS servers for `server … resolvers`);
//! - `udp`: the `udp-lb` section's own directives and checks;
//! - `validate`: checks across proxies (references, bind conflicts, modes).
//!
//! Loading reports every problem it finds, not only the first, parse and validation alike,
//! sorted by file (in load order) and line.

mod addr;
mod args;
mod bind;
mod check_expect;
mod error;
mod global;
mod http;
mod httpchk;
mod keywords;
mod lexer;
pub mod model;
mod nat;
mod num;
mod parse;
mod proxy;
mod resolvers;
mod server;
mod time;
mod udp;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use std::path::{Path, PathBuf};

use lexer::EnvLookup;
use parse::Parser;

/// Loads `-f` arguments in order: a file is read as is, a directory contributes its `*.cfg`
/// files in lexical order (as HAProxy does). The result is validated as a whole.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let (config, errors) = load_partial(paths);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The config as far as it could be read, with every problem found: refused lines are left
/// out of the model, so the next stage (the plan's compile pass) can go on and name its own
/// problems in the same run.
pub fn load_partial(paths: &[PathBuf]) -> (Config, Vec<ConfigError>) {
    load_partial_with(paths, &working_dir(), &lexer::process_env)
}

/// Parses and validates one configuration text; `file` names it in errors. Relative paths
/// in it (`errorfile`) are taken from the working directory, as for `load`.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut parser = Parser::new(&lexer::process_env, &working_dir());
    parser.parse_file(text, file);
    let (config, errors) = finish(parser, &[file.to_path_buf()]);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A server line's words after `server` (`NAME ADDR[:PORT] [options]`) read on top of a
/// backend's `default-server` settings by the parser the config file uses: the runtime API's
/// `add server`. `loc` names where the line came from in the server's later messages.
pub fn server_line(defaults: &ServerParams, words: &[String], loc: &Loc) -> Result<Server, String> {
    let mut args = args::Args::new("server", words);
    let server = server::parse(defaults, &mut args, loc)?;
    args.end()?;
    Ok(server)
}

/// `load` with the working directory and the environment given, for tests.
#[cfg(test)]
pub(crate) fn load_with(
    paths: &[PathBuf],
    cwd: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigErrors> {
    let (config, errors) = load_partial_with(paths, cwd, env);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn load_partial_with(
    paths: &[PathBuf],
    cwd: &Path,
    env: EnvLookup<'_>,
) -> (Config, Vec<ConfigError>) {
    let mut parser = Parser::new(env, cwd);
    let mut files = Vec::new();
    for path in paths {
        match config_files(path) {
            Ok(found) => files.extend(found),
            Err(error) => parser.push_error(error),
        }
    }
    for file in &files {
        match read_text(file) {
            Ok(text) => parser.parse_file(&text, file),
            Err(error) => parser.push_error(error),
        }
    }
    finish(parser, &files)
}

/// HAProxy takes relative paths from where it was started; if even that is unknown, "."
/// still means the same thing to the file system.
fn working_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Validates what was parsed and turns all errors into one sorted list.
fn finish(parser: Parser<'_>, files: &[PathBuf]) -> (Config, Vec<ConfigError>) {
    let parsed = parser.finish();
    let mut errors = parsed.errors;
    errors.extend(validate::validate(&parsed.config, &parsed.notes));
    let file_rank = |e: &ConfigError| {
        files
            .iter()
            .position(|f| *f == e.file)
            .unwrap_or(usize::MAX)
    };
    errors.sort_by_key(|e| (file_rank(e), e.line));
    errors.dedup();
    (parsed.config, errors)
}

/// A file as given, or a directory's `*.cfg` regular files sorted by name.
fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let unreadable =
        |e: std::io::Error| file_error(path, format!("cannot read configuration directory: {e}"));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let file = entry.path();
        if file.extension().is_some_and(|ext| ext == "cfg") && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(file_error(
            path,
            "no *.cfg file in this directory".to_string(),
        ));
    }
    Ok(files)
}

/// A file's text; invalid UTF-8 is reported at the line where it starts.
fn read_text(file: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(file)
        .map_err(|e| file_error(file, format!("cannot read configuration file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or_default();
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        ConfigError {
            file: file.to_path_buf(),
            line,
            reason: "invalid UTF-8 text".to_string(),
        }
    })
}

/// An error about a whole file or directory: line 0, as there is no line to point at.
fn file_error(path: &Path, reason: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: 0,
        reason,
    }
}
