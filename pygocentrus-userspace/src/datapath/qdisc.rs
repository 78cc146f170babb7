//! The qdiscs under the hooks: the `fq` root qdisc that holds delayed
//! packets, put on a port and taken off again, and the clsact qdisc of the
//! netlink path, removed when no filter is left on it.

use anyhow::Result;

use super::netlink::{Link, Netlink};
use crate::{error::UsageError, rules::FqParams};

/// Puts `fq` at the root of `link` unless it is there already. Returns
/// whether we added it (and must remove it). A root qdisc someone set up
/// (non-zero handle) is not replaced: delay would silently change their
/// shaping.
pub(super) async fn ensure_fq(nl: &Netlink, link: &Link, fq: &FqParams) -> Result<bool> {
    match nl.root_qdisc(link.index).await? {
        Some((kind, _)) if kind == "fq" => return Ok(false),
        Some((kind, handle)) if handle.major != 0 => {
            return Err(UsageError::ForeignRootQdisc { iface: link.name.clone(), kind }.into());
        }
        _ => {}
    }
    match nl.set_root_fq(link.index, fq).await {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)) => {
            Err(UsageError::NoFq.into())
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("adding an fq qdisc to {}", link.name))),
    }
}

/// Takes our `fq` off `index` again (if it is still ours: still fq).
pub(super) async fn remove_fq(nl: &Netlink, index: u32, name: &str) {
    match nl.root_qdisc(index).await {
        Ok(Some((kind, _))) if kind == "fq" => {
            if let Err(e) = nl.del_root_qdisc(index).await {
                eprintln!("pygocentrus: warning: removing the fq qdisc of {name}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("pygocentrus: warning: reading the root qdisc of {name}: {e}"),
    }
}

/// Deletes a clsact qdisc we added, unless someone else's filters now live
/// on it.
pub(super) async fn remove_clsact_if_unused(nl: &Netlink, index: u32, name: &str) {
    match nl.filter_count(index).await {
        Ok(0) => {
            if let Err(e) = nl.del_clsact(index).await {
                eprintln!("pygocentrus: warning: removing the clsact qdisc of {name}: {e}");
            }
        }
        Ok(_) => eprintln!("pygocentrus: leaving the clsact qdisc of {name}: other filters use it"),
        Err(e) => eprintln!("pygocentrus: warning: listing filters of {name}: {e}"),
    }
}
