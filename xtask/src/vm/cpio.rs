//! A minimal writer of `newc` cpio archives, the format the kernel unpacks
//! as an initramfs.
//!
//! Entries are collected first (so a library wanted by two programs is
//! packed once and every parent directory exists before its children) and
//! written sorted by path. Everything is owned by root; device nodes can be
//! made without being root on the host, which `cpio` from a staging
//! directory could not do.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Where the bytes of a regular file come from.
#[derive(Debug)]
pub enum Content {
    /// Copied from a file on the host when the archive is written.
    Host(PathBuf),
    /// Held in memory (generated scripts and lists).
    Bytes(Vec<u8>),
}

#[derive(Debug)]
enum Entry {
    Dir,
    File { mode: u32, content: Content },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// The entries of an archive, keyed by absolute path inside it.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn dir(&mut self, path: &str) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        match self.entries.get(&path) {
            None => {
                self.entries.insert(path, Entry::Dir);
                Ok(())
            }
            Some(Entry::Dir) => Ok(()),
            Some(_) => bail!("initramfs: {path} is already a file, cannot make it a directory"),
        }
    }

    /// Adds a regular file; a second file at the same path replaces the first.
    pub fn file(&mut self, path: &str, mode: u32, content: Content) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        if matches!(self.entries.get(&path), Some(Entry::Dir)) {
            bail!("initramfs: {path} is already a directory");
        }
        self.entries.insert(path, Entry::File { mode, content });
        Ok(())
    }

    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entries.insert(path, Entry::Symlink(target.to_owned()));
        Ok(())
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> Result<()> {
        let path = normalize(path)?;
        self.parents(&path)?;
        self.entries.insert(path, Entry::CharDev { major, minor });
        Ok(())
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            let parent = &path[..at + 1 + i];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(parent.to_owned(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => bail!("initramfs: {parent} is not a directory (wanted for {path})"),
            }
            at += 1 + i;
        }
        Ok(())
    }

    /// Writes the archive to `out` and returns its size in bytes.
    pub fn write(&self, out: &Path) -> Result<u64> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = Counting { inner: BufWriter::new(file), written: 0 };
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            // The archive's names are relative ("usr/bin/bash"), as `cpio`
            // writes them from `find .`.
            let name = &path[1..];
            match entry {
                Entry::Dir => header(&mut w, ino, S_IFDIR | 0o755, 0, (0, 0), name)?,
                Entry::Symlink(target) => {
                    header(&mut w, ino, S_IFLNK | 0o777, target.len(), (0, 0), name)?;
                    w.write_all(target.as_bytes())?;
                    pad(&mut w)?;
                }
                Entry::CharDev { major, minor } => {
                    header(&mut w, ino, S_IFCHR | 0o600, 0, (*major, *minor), name)?;
                }
                Entry::File { mode, content: Content::Bytes(bytes) } => {
                    header(&mut w, ino, S_IFREG | mode, bytes.len(), (0, 0), name)?;
                    w.write_all(bytes)?;
                    pad(&mut w)?;
                }
                Entry::File { mode, content: Content::Host(src) } => {
                    let mut f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
                    let len = f.metadata().with_context(|| format!("reading {}", src.display()))?.len();
                    let len = usize::try_from(len).context("file too large for cpio")?;
                    header(&mut w, ino, S_IFREG | mode, len, (0, 0), name)?;
                    let copied = io::copy(&mut f, &mut w).with_context(|| format!("copying {}", src.display()))?;
                    if copied != len as u64 {
                        bail!("{} changed size while being packed", src.display());
                    }
                    pad(&mut w)?;
                }
            }
        }
        header(&mut w, 0, 0, 0, (0, 0), "TRAILER!!!")?;
        w.inner.flush().with_context(|| format!("writing {}", out.display()))?;
        Ok(w.written)
    }
}

fn normalize(path: &str) -> Result<String> {
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || path.contains("//") {
        bail!("initramfs: bad path {path:?} (absolute, no trailing slash)");
    }
    Ok(path.to_owned())
}

/// Counts bytes so entries can be padded to 4-byte boundaries.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<W>) -> io::Result<()> {
    let rem = (w.written % 4) as usize;
    if rem != 0 {
        w.write_all(&[0u8; 4][..4 - rem])?;
    }
    Ok(())
}

/// One `newc` header followed by the name (NUL-terminated, padded).
fn header<W: Write>(
    w: &mut Counting<W>,
    ino: u32,
    mode: u32,
    size: usize,
    (rdev_major, rdev_minor): (u32, u32),
    name: &str,
) -> Result<()> {
    let size = u32::try_from(size).context("cpio newc entries are limited to 4 GiB")?;
    let name_size = u32::try_from(name.len() + 1).context("name too long")?;
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
    // devminor, rdevmajor, rdevminor, namesize, check
    let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0];
    let mut text = String::from("070701");
    for f in fields {
        text.push_str(&format!("{f:08X}"));
    }
    w.write_all(text.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut a = Archive::default();
        a.file("/usr/bin/bash", 0o755, Content::Bytes(b"x".to_vec())).unwrap();
        a.symlink("/bin/sh", "/usr/bin/bash").unwrap();
        let paths: Vec<_> = a.entries.keys().cloned().collect();
        assert_eq!(paths, ["/bin", "/bin/sh", "/usr", "/usr/bin", "/usr/bin/bash"]);
    }

    #[test]
    fn a_file_cannot_be_a_parent() {
        let mut a = Archive::default();
        a.file("/init", 0o755, Content::Bytes(Vec::new())).unwrap();
        assert!(a.file("/init/x", 0o644, Content::Bytes(Vec::new())).is_err());
    }

    #[test]
    fn entries_are_aligned_and_end_with_a_trailer() {
        let mut a = Archive::default();
        a.file("/abc", 0o644, Content::Bytes(b"hello".to_vec())).unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let size = a.write(&dir).unwrap();
        let bytes = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(size as usize, bytes.len());
        // header 110 + "abc\0" = 114 -> padded to 116; data 5 -> 8.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[110..114], b"abc\0");
        assert_eq!(&bytes[116..121], b"hello");
        assert_eq!(&bytes[124..130], b"070701");
        // 110 + "TRAILER!!!\0" = 121 -> padded to 124.
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"));
    }
}
