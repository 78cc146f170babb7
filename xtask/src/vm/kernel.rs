//! The Debian kernels of the matrix: downloaded once with `apt-get download`,
//! unpacked into a cache outside the repository, and their modules resolved
//! (with dependencies, in load order) for the initramfs.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::host;

/// One kernel of the matrix.
#[derive(Debug)]
pub struct KernelSpec {
    /// What `--kernel` accepts.
    pub label: &'static str,
    /// The Debian package holding `/boot/vmlinuz-*` and the modules.
    pub package: &'static str,
    /// How pygocentrus attaches there (printed with the results).
    pub hook: &'static str,
}

pub const KERNELS: [KernelSpec; 2] = [
    KernelSpec { label: "6.1", package: "linux-image-6.1.0-47-cloud-amd64", hook: "no TCX: netlink clsact + cls_bpf" },
    KernelSpec { label: "6.12", package: "linux-image-6.12.113+deb12-cloud-amd64-unsigned", hook: "TCX links" },
];

/// The modules every run loads, in addition to their dependencies: the lab
/// (bridge, veth), the netlink attach path (clsact is `sch_ingress`,
/// `cls_bpf`), the qdiscs the delay family needs (`fq`, `netem`), and the
/// per-target netem set-up `bench-vm` compares with (`prio`, `u32`).
pub const MODULES: [&str; 8] =
    ["bridge", "veth", "sch_ingress", "cls_bpf", "sch_fq", "sch_netem", "sch_prio", "cls_u32"];

/// A kernel unpacked in the cache.
#[derive(Debug)]
pub struct Kernel {
    pub spec: &'static KernelSpec,
    /// `uname -r` of the kernel, e.g. `6.1.0-47-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    modules_dir: PathBuf,
}

/// A module to load: its name and its (possibly compressed) file.
#[derive(Debug)]
pub struct Module {
    pub name: String,
    pub file: PathBuf,
}

/// `$PYGOCENTRUS_VM_CACHE`, else `$XDG_CACHE_HOME/pygocentrus/vm`, else
/// `$HOME/.cache/pygocentrus/vm`: shared by every clone on the machine.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PYGOCENTRUS_VM_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").context("neither HOME nor XDG_CACHE_HOME is set")?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(base.join("pygocentrus").join("vm"))
}

/// Returns the kernel unpacked in `cache`, downloading it first if needed.
pub fn ensure(spec: &'static KernelSpec, cache: &Path) -> Result<Kernel> {
    let dir = cache.join(spec.package);
    if !dir.join(".complete").is_file() {
        download(spec, cache, &dir)?;
    }
    locate(spec, &dir)
}

fn download(spec: &KernelSpec, cache: &Path, dir: &Path) -> Result<()> {
    eprintln!("vm-test: downloading {} (once; cached in {})", spec.package, cache.display());
    let partial = cache.join(format!("{}.partial", spec.package));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;

    let apt_get = host::tool("apt-get")?;
    let fetch = || {
        Command::new(&apt_get)
            .args(["download", "-q", spec.package])
            .current_dir(&partial)
            .output()
            .context("running apt-get download")
    };
    let mut out = fetch()?;
    if !out.status.success() && host::is_root() {
        // A machine whose package lists are old or missing: refresh once.
        eprintln!("vm-test: apt-get download failed; running apt-get update and retrying");
        let update = Command::new(&apt_get).args(["update", "-qq"]).status().context("running apt-get update")?;
        if update.success() {
            out = fetch()?;
        }
    }
    if !out.status.success() {
        bail!(
            "apt-get download {} failed ({}):\n{}\nThe kernels are Debian bookworm packages (the 6.12 one from \
             bookworm-security); run `apt-get update` as root, or put an unpacked kernel in {}",
            spec.package,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            dir.display()
        );
    }

    let deb = fs::read_dir(&partial)
        .with_context(|| format!("listing {}", partial.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", partial.display()))?;
    let root = partial.join("root");
    host::run(Command::new(host::tool("dpkg-deb")?).arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;

    // The package has no modules.dep (its postinst runs depmod): make one.
    let release = release_of(&root)?;
    host::run(Command::new(host::tool("depmod")?).arg("-b").arg(&root).arg(&release))?;
    fs::write(root.join(".complete"), format!("{}\n", spec.package)).context("marking the cache complete")?;

    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(&root, dir).with_context(|| format!("moving the kernel into {}", dir.display()))?;
    fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    Ok(())
}

/// The one release under `root/lib/modules`.
fn release_of(root: &Path) -> Result<String> {
    let modules = root.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("listing {}", modules.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => bail!("expected one kernel release in {}, found {n}", modules.display()),
    }
}

fn locate(spec: &'static KernelSpec, dir: &Path) -> Result<Kernel> {
    let release = release_of(dir)?;
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} is missing: remove {} to download it again", vmlinuz.display(), dir.display());
    }
    let modules_dir = dir.join("lib/modules").join(&release);
    Ok(Kernel { spec, release, vmlinuz, modules_dir })
}

impl Kernel {
    /// `names` and everything they depend on, dependencies first, each once.
    /// Modules built into the kernel are left out.
    pub fn modules(&self, names: &[&str]) -> Result<Vec<Module>> {
        let dep_file = self.modules_dir.join("modules.dep");
        let text = fs::read_to_string(&dep_file).with_context(|| format!("reading {}", dep_file.display()))?;
        let deps = parse_modules_dep(&text);
        let builtin = fs::read_to_string(self.modules_dir.join("modules.builtin")).unwrap_or_default();
        let builtin: HashSet<String> = builtin.lines().map(module_name).collect();

        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let name = module_name(name);
            if builtin.contains(&name) {
                continue;
            }
            visit(&name, &deps, &mut seen, &mut order, 0)
                .with_context(|| format!("resolving module {name} of {}", self.release))?;
        }
        Ok(order
            .into_iter()
            .filter_map(|name| {
                deps.get(&name).map(|(path, _)| Module { file: self.modules_dir.join(path), name: name.clone() })
            })
            .collect())
    }
}

/// `kernel/net/bridge/bridge.ko.xz` → `bridge`; dashes count as underscores.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// name → (relative path, names of its dependencies).
fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(module_name).collect();
            Some((module_name(path), (path.trim().to_owned(), deps)))
        })
        .collect()
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if seen.contains(name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies loop at {name}");
    }
    let (_, needs) = deps.get(name).with_context(|| format!("no module {name} in modules.dep"))?;
    for dep in needs {
        visit(dep, deps, seen, order, depth + 1)?;
    }
    seen.insert(name.to_owned());
    order.push(name.to_owned());
    Ok(())
}

/// The module's ELF bytes: busybox `insmod` cannot read `.ko.xz`.
pub fn module_bytes(module: &Module) -> Result<Vec<u8>> {
    let path = &module.file;
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else {
        bail!("{}: unknown module compression", path.display());
    };
    let out = Command::new(host::tool(tool)?)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz
kernel/net/llc/llc.ko.xz:
kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz
kernel/drivers/net/veth.ko.xz:
";

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = parse_modules_dep(DEP);
        let (mut seen, mut order) = (HashSet::new(), Vec::new());
        for m in ["bridge", "veth", "stp"] {
            visit(m, &deps, &mut seen, &mut order, 0).unwrap();
        }
        assert_eq!(order, ["llc", "stp", "bridge", "veth"]);
        assert_eq!(deps["bridge"].0, "kernel/net/bridge/bridge.ko.xz");
    }

    #[test]
    fn unknown_modules_are_an_error() {
        let deps = parse_modules_dep(DEP);
        assert!(visit("sch_fq", &deps, &mut HashSet::new(), &mut Vec::new(), 0).is_err());
    }

    #[test]
    fn names_ignore_compression_and_dashes() {
        assert_eq!(module_name("kernel/net/sched/sch_fq.ko"), "sch_fq");
        assert_eq!(module_name("kernel/x/nf-conntrack.ko.zst"), "nf_conntrack");
    }
}
