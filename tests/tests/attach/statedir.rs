//! The state directory as an unprivileged user would attack it. The tool
//! keeps what outlives a killed run in `/run/pygocentrus`; here each test
//! gives it a directory of its own through `PYGOCENTRUS_STATE_DIR`, and the
//! attacker's files belong to user 65534 (`nobody`) or carry its modes.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use pygocentrus_tests::{BRIDGE, Lab, TOOL_TIMEOUT, args, in_netns};

use crate::{PORT, rule, usage::assert_refused};

/// The unprivileged attacker: user and group `nobody`.
const NOBODY: u32 = 65534;

/// A private parent directory (root's, 0700) in which the state directory
/// of one test is made; removed with everything in it on drop.
struct StateDir {
    parent: PathBuf,
}

impl StateDir {
    fn new(tag: &str) -> Self {
        let parent = std::env::temp_dir().join(format!("pyg-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        fs::DirBuilder::new().mode(0o700).create(&parent).unwrap();
        Self { parent }
    }

    /// The state directory the tool is told to use (not made yet).
    fn dir(&self) -> PathBuf {
        self.parent.join("run")
    }

    /// The state directory, made root's with `mode`.
    fn make(&self, mode: u32) -> PathBuf {
        let dir = self.dir();
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("PYGOCENTRUS_STATE_DIR", self.dir().to_str().unwrap().to_owned())]
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.parent);
    }
}

fn env_of<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A rule whose hooks outlive the process (netlink filters): the run
/// needs its state directory.
fn netlink_rule() -> Vec<String> {
    rule("udp", None, args!["--drop", 100, "--hook", "netlink", "--duration", "5s"])
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn a_state_directory_another_user_could_write_to_is_refused_in_one_line() {
    let lab = Lab::new("stdirbad", 2);
    type Setup = fn(&StateDir);
    let cases: [(&str, Setup); 5] = [
        ("writable by others (0777)", |s| {
            s.make(0o777);
        }),
        ("writable by its group (0770)", |s| {
            s.make(0o770);
        }),
        ("owned by another user", |s| chown_nobody(&s.make(0o700))),
        ("a symbolic link", |s| {
            let real = s.parent.join("real");
            fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
            std::os::unix::fs::symlink(&real, s.dir()).unwrap();
        }),
        ("not a directory", |s| fs::write(s.dir(), "").unwrap()),
    ];
    for (case, setup) in cases {
        let state = StateDir::new("bad");
        setup(&state);
        let vars = state.env();
        let out = lab.spawn_with(&[], &env_of(&vars), &netlink_rule()).wait(TOOL_TIMEOUT);
        assert_refused(&lab, case, &out);
        assert!(out.stderr[0].contains("state directory"), "{case}: the message does not name the problem:\n{out}");
        // Nothing was written through the link.
        let real = state.parent.join("real");
        if real.exists() {
            assert_eq!(fs::read_dir(&real).unwrap().count(), 0, "{case}: files written through the symbolic link");
        }
    }
}

#[test]
fn under_umask_000_the_state_directory_is_made_0700_and_its_files_0600() {
    let lab = Lab::new("stdirmask", 2);
    let state = StateDir::new("umask");
    let vars = state.env();
    let umask_000 = ["sh", "-c", r#"umask 000 && exec "$0" "$@""#];
    let tool = lab.attach_with(&umask_000, &env_of(&vars), &netlink_rule());
    let dir = state.dir();
    let meta = fs::symlink_metadata(&dir).unwrap();
    assert!(meta.is_dir(), "{} is not a directory", dir.display());
    assert_eq!(meta.mode() & 0o7777, 0o700, "the state directory's mode");
    assert_eq!(meta.uid(), 0, "the state directory's owner");
    let files: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "state")), "no state file in {files:?}");
    for file in &files {
        let meta = fs::symlink_metadata(file).unwrap();
        assert!(meta.is_file(), "{} is not a regular file", file.display());
        assert_eq!(meta.mode() & 0o777, 0o600, "{}: mode", file.display());
        assert_eq!(meta.uid(), 0, "{}: owner", file.display());
    }
    tool.terminate();
    lab.assert_clean("after SIGTERM", Duration::ZERO);
}

/// A FIFO named like a run's lock: opening it to see whether the run is
/// alive blocked every later start.
#[test]
fn a_fifo_named_like_a_lock_does_not_hang_a_start() {
    let lab = Lab::new("stdirfifo", 2);
    let state = StateDir::new("fifo");
    let dir = state.make(0o700);
    let fifo = dir.join("4242-00000000deadbeef.lock");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    chown_nobody(&fifo);
    let vars = state.env();
    let tool = lab.attach_with(&[], &env_of(&vars), &netlink_rule());
    tool.terminate();
    lab.assert_clean("after SIGTERM", Duration::ZERO);
    assert!(fs::symlink_metadata(&fifo).is_ok(), "the FIFO was removed");
}

/// A state file someone else wrote, naming a clsact qdisc the run never
/// added: a start removed it as a dead run's leftover.
#[test]
fn a_state_file_of_another_user_is_not_acted_on() {
    let lab = Lab::new("stdirfake", 2);
    let victim = lab.container(0).port;
    lab.tc(&["qdisc", "add", "dev", &victim, "clsact"]);
    let index = in_netns(lab.host(), || nix::net::if_::if_nametoindex(victim.as_str()).unwrap());
    let ns = fs::metadata(lab.host_netns_path()).unwrap();

    let state = StateDir::new("fake");
    let dir = state.make(0o700);
    let fake = dir.join("4243-00000000deadbeef.0.state");
    fs::write(&fake, format!("netns {}:{}\n{index} {victim} 1 0\n", ns.dev(), ns.ino())).unwrap();
    chown_nobody(&fake);
    let vars = state.env();
    // A run on the bridge itself that needs no state of its own.
    let tool = lab.attach_with(&[], &env_of(&vars), &args!["--iface", BRIDGE, "--port", PORT, "--drop", 5]);
    let out = tool.terminate();
    assert!(lab.hooks(&victim).clsact, "the clsact qdisc the fake state file named was removed:\n{out}");
    assert!(fake.exists(), "the fake state file was removed:\n{out}");
    assert!(out.stderr_has("ignoring"), "no word of the file ignored:\n{out}");
    lab.tc(&["qdisc", "del", "dev", &victim, "clsact"]);
}
