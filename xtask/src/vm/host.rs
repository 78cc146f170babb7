//! Small helpers for the host side: finding programs, running them,
//! listing the shared libraries a program loads.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The sbin directories are searched too: a user's PATH often lacks them,
/// and `depmod`, `ip` and `tc` live there.
const EXTRA_DIRS: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The absolute path of program `name`, if the host has it.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Like [`find`], but missing is an error that says which package to install.
pub fn tool(name: &str) -> Result<PathBuf> {
    find(name).with_context(|| {
        let package = match name {
            "qemu-system-x86_64" => "qemu-system-x86",
            "busybox" => "busybox-static",
            "ip" | "tc" | "bridge" => "iproute2",
            "unshare" => "util-linux",
            "depmod" => "kmod",
            "xz" => "xz-utils",
            "dpkg-deb" => "dpkg",
            "apt-get" => "apt",
            "ldd" => "libc-bin",
            other => other,
        };
        format!("{name} not found: install the Debian package {package} (scripts/setup does)")
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `cmd`, failing with its stderr when it does not exit 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The shared libraries `ldd` says `program` loads, and its dynamic loader,
/// as absolute paths; empty for a static program.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new(tool("ldd")?)
        .arg(program)
        .output()
        .with_context(|| format!("running ldd {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": a static program (busybox-static).
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic executable") || text.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", program.display(), err.trim());
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", program.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        if line.contains("=> not found") {
            bail!("a library is missing: {line}");
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or the
        // loader, "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x00007f04)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f04)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f04)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libtinfo.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error() {
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }
}
