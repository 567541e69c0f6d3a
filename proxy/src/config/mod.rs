//! HAProxy-syntax configuration: lexer → sections → validated typed model.
//! Every error carries `file:line`. This room never touches sockets.

mod error;
pub mod model;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use std::path::PathBuf;

/// Loads `-f` arguments in order: a file is read as is, a directory contributes its `*.cfg`
/// files in lexical order (as HAProxy does). The result is validated as a whole.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let _ = paths;
    todo!("config loader")
}
