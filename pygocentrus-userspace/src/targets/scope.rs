//! The scope of an attachment: what `--iface`, `--container` or `--netns`
//! name, and `--hook`. `attach`, `serve` and a session all give one.

use crate::datapath::hooks::HookMode;

/// Where to hook, and how: `--iface`, `--container` or `--netns` (one of
/// them), and `--hook`. The same for `attach`, `serve` and a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub iface: Option<String>,
    pub container: Option<String>,
    pub netns: Option<String>,
    pub hook: HookMode,
}

impl Scope {
    /// `--netns` given as the PID of a process (rather than a path).
    pub fn netns_pid(&self) -> Option<u32> {
        self.netns.as_deref().and_then(|n| n.parse::<u32>().ok()).filter(|pid| *pid > 0)
    }

    /// How messages name the endpoint of `--container` or `--netns`, if given.
    pub fn endpoint_label(&self) -> Option<String> {
        match (&self.container, &self.netns, self.netns_pid()) {
            (Some(c), _, _) => Some(format!("container {c}")),
            (None, Some(_), Some(pid)) => Some(format!("netns of process {pid}")),
            (None, Some(n), None) => Some(format!("netns {n}")),
            (None, None, _) => None,
        }
    }
}
