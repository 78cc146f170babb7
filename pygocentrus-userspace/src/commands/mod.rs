//! The subcommands of the `pygocentrus` binary, at the top: each may use
//! every folder below, none is used by them. [`cli`] holds the flags as
//! clap parsed them; [`attach`], [`serve`], [`client`] (`set`, `status`,
//! `reset`) and [`demo`] run them. `guard` runs
//! [`crate::datapath::guard::run`].

pub mod attach;
pub mod cli;
pub mod client;
pub mod demo;
pub mod serve;

/// The API token: `--token-file`'s contents less a trailing newline, or
/// `--token` (or `PYGOCENTRUS_API_TOKEN`). A token file must be a regular
/// file of at most 4 KiB, and not empty.
fn token(flag: Option<&String>, file: Option<&std::path::Path>) -> Result<Option<String>, crate::UsageError> {
    use crate::UsageError;
    let Some(path) = file else { return Ok(flag.cloned()) };
    let refuse = |why: String| UsageError::Api(format!("--token-file {}: {why}", path.display()));
    let bytes = crate::files::read_regular(path, 4096).map_err(|e| refuse(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| refuse("not UTF-8 text".to_owned()))?;
    let token = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if token.is_empty() {
        return Err(refuse("empty".to_owned()));
    }
    if token.contains(['\r', '\n']) {
        return Err(refuse("the token is one line".to_owned()));
    }
    Ok(Some(token.to_owned()))
}
