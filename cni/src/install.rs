//! The chart's CNI installer (`weft-cni-install`, one pod per node from a DaemonSet): puts
//! `weft-cni` and a kubeconfig for it on the node and chains the plugin into the node's CNI
//! configuration, keeps all three so while it runs, and takes them away when it stops.
//!
//! The node's folders reach the installer as hostPath mounts: the CNI binary folder and the
//! CNI configuration folder. The plugin runs on the node, not in this pod, so the paths written
//! into its configuration are the node's ([`Settings::host_conf_dir`]), not the mount points.
//!
//! What the installer keeps, checked every [`Settings::interval`] ([`Installer::reconcile`]):
//! - `weft-cni` in the binary folder, a copy of the one in the image, replaced atomically (a new
//!   file renamed over the old, so a runtime never runs half a binary);
//! - `weft-cni.kubeconfig` in the configuration folder (mode 0600): the API server, its CA and
//!   the pod's own service-account token, which the kubelet rotates; rewritten when they change;
//! - Weft's entry, last in the `plugins` of the file the runtime reads (`chain::pick`): added
//!   again whenever something else (the primary CNI's own installer, an operator) rewrites the
//!   file. A single-plugin `.conf` or `.json` becomes a `.conflist` of the same name, since
//!   libcni reads a list only from that extension; the original goes.
//!
//! On SIGTERM ([`Installer::uninstall`]) Weft's entry leaves every configuration file that has
//! one, and the kubeconfig and the binary are deleted. While no installer runs on a node (during
//! a rolling update of the DaemonSet, say), new pods there get no redirect rules: the proxy's
//! redirect self-check (`WEFT_REDIRECT_CHECK`, set by the injector) keeps such a pod unready
//! rather than letting it run outside the mesh unnoticed.
//!
//! Nothing here panics on what it reads: a missing folder, an unreadable or malformed
//! configuration, a token that is not there yet, each is a [`InstallError`] naming the file,
//! reported and tried again on the next round.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use serde_json::{json, Value};
use thiserror::Error;
use weft_cni_core::chain::{self, ChainError, MAX_CONFIG_BYTES, PLUGIN_TYPE};

/// The plugin's file name in the binary folder.
pub const PLUGIN_FILE: &str = "weft-cni";
/// The kubeconfig's file name in the configuration folder (no `.conf`, `.conflist` or `.json`
/// ending, so the runtime never takes it for a network configuration).
pub const KUBECONFIG_FILE: &str = "weft-cni.kubeconfig";
/// The largest token or CA file read: real ones are a few KiB.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// Where things are and what goes into Weft's entry.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `weft-cni` binary to install (in the installer's image).
    pub plugin: PathBuf,
    /// The node's CNI binary folder, as mounted here.
    pub bin_dir: PathBuf,
    /// The node's CNI configuration folder, as mounted here.
    pub conf_dir: PathBuf,
    /// The same folder as the node sees it: the kubeconfig's path in Weft's entry.
    pub host_conf_dir: PathBuf,
    /// The API server as the node reaches it, `https://host:port`.
    pub api_server: String,
    /// The service-account token and the API server's CA, as the kubelet mounts them.
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    /// Namespaces whose pods `weft-cni` leaves alone.
    pub exclude_namespaces: Vec<String>,
    /// The plugin's log level, and its log file on the node (none: it does not log).
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    /// How often the files are checked.
    pub interval: Duration,
}

/// What went wrong, naming the file.
#[derive(Debug, Error)]
pub enum InstallError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is {size} bytes; at most {max} are read", path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{}: {source}", path.display())]
    Chain {
        path: PathBuf,
        #[source]
        source: ChainError,
    },
    #[error("the service-account token {} is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error("no CNI configuration in {} yet (a file ending .conflist, .conf or .json): the pod network's own plugin has not been installed", .0.display())]
    NoNetwork(PathBuf),
}

/// What a round found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// The binary was (re)written.
    pub binary_written: bool,
    /// The kubeconfig was (re)written.
    pub kubeconfig_written: bool,
    /// The configuration file now holding Weft's entry.
    pub chained: PathBuf,
    /// That file was (re)written (the entry was missing or different, or the file was a
    /// `.conf` made a list).
    pub config_written: bool,
}

impl Round {
    /// Whether this round changed anything on the node.
    pub fn changed(&self) -> bool {
        self.binary_written || self.kubeconfig_written || self.config_written
    }
}

/// The installer, with what it last saw of the binary (so a round reads the image's binary
/// again only when the node's copy changed size or went).
#[derive(Debug)]
pub struct Installer {
    settings: Settings,
    binary_checked: bool,
}

impl Installer {
    pub fn new(settings: Settings) -> Self {
        Installer {
            settings,
            binary_checked: false,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Weft's entry for the node's configuration.
    pub fn entry(&self) -> Value {
        let s = &self.settings;
        let mut entry = json!({
            "type": PLUGIN_TYPE,
            "kubeconfig": s.host_conf_dir.join(KUBECONFIG_FILE),
            "excludeNamespaces": s.exclude_namespaces,
            "logLevel": s.log_level,
        });
        if let Some(file) = &s.log_file {
            entry["logFile"] = json!(file);
        }
        entry
    }

    /// One round: binary, kubeconfig, then the chain (last, so that the runtime never runs an
    /// entry whose binary or kubeconfig is not there yet).
    pub fn reconcile(&mut self) -> Result<Round, InstallError> {
        let mut round = Round {
            binary_written: self.install_binary()?,
            kubeconfig_written: self.write_kubeconfig()?,
            ..Round::default()
        };
        let (chained, written) = self.chain()?;
        round.chained = chained;
        round.config_written = written;
        Ok(round)
    }

    /// Whether the node has all three (the readiness check, and what `reconcile` keeps).
    pub fn check(&self) -> Result<PathBuf, String> {
        let s = &self.settings;
        let binary = s.bin_dir.join(PLUGIN_FILE);
        if !binary.is_file() {
            return Err(format!("{} is missing", binary.display()));
        }
        let kubeconfig = s.conf_dir.join(KUBECONFIG_FILE);
        if !kubeconfig.is_file() {
            return Err(format!("{} is missing", kubeconfig.display()));
        }
        let path = picked(&s.conf_dir).map_err(|e| e.to_string())?;
        let config = read_bounded(&path, MAX_CONFIG_BYTES as u64).map_err(|e| e.to_string())?;
        match chain::is_chained(&config) {
            Ok(true) => Ok(path),
            Ok(false) => Err(format!("{} has no {PLUGIN_TYPE} entry", path.display())),
            Err(source) => Err(InstallError::Chain { path, source }.to_string()),
        }
    }

    /// Takes Weft's entry out of every configuration file that has one, then deletes the
    /// kubeconfig and the binary. Goes on past a failure and returns the first one.
    pub fn uninstall(&self) -> Result<Vec<PathBuf>, InstallError> {
        let s = &self.settings;
        let mut first_error = None;
        let mut unchained = Vec::new();
        match config_files(&s.conf_dir) {
            Ok(files) => {
                for path in files {
                    match unchain(&path) {
                        Ok(true) => unchained.push(path),
                        Ok(false) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        for (what, path) in [
            ("delete the kubeconfig", s.conf_dir.join(KUBECONFIG_FILE)),
            ("delete the plugin", s.bin_dir.join(PLUGIN_FILE)),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_error.get_or_insert(InstallError::Io { what, path, source });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(unchained),
        }
    }

    /// Copies the plugin into the binary folder unless the node's copy is the same: compared
    /// byte for byte on the first round, by size on later ones (a rewrite by someone else of
    /// the same size is not looked for).
    fn install_binary(&mut self) -> Result<bool, InstallError> {
        let s = &self.settings;
        let dst = s.bin_dir.join(PLUGIN_FILE);
        let src_len = metadata(&s.plugin, "read the plugin")?.len();
        let same = match fs::metadata(&dst) {
            Ok(m) if m.len() == src_len => {
                if self.binary_checked {
                    true
                } else {
                    read_all(&s.plugin, "read the plugin")? == read_all(&dst, "read the plugin")?
                }
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(InstallError::Io {
                    what: "look at",
                    path: dst,
                    source,
                })
            }
        };
        self.binary_checked = true;
        if same {
            return Ok(false);
        }
        let bytes = read_all(&s.plugin, "read the plugin")?;
        write_atomically(&dst, &bytes, 0o755)?;
        Ok(true)
    }

    /// Writes the kubeconfig when what it would hold differs from the file.
    fn write_kubeconfig(&self) -> Result<bool, InstallError> {
        let s = &self.settings;
        let token = read_bounded(&s.token_file, MAX_CREDENTIAL_BYTES)?;
        let token = token.trim();
        if token.is_empty() {
            return Err(InstallError::EmptyToken(s.token_file.clone()));
        }
        let ca = read_bounded(&s.ca_file, MAX_CREDENTIAL_BYTES)?;
        let text = kubeconfig(&s.api_server, ca.as_bytes(), token);
        let path = s.conf_dir.join(KUBECONFIG_FILE);
        match fs::read_to_string(&path) {
            Ok(old) if old == text => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(InstallError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
        }
        write_atomically(&path, text.as_bytes(), 0o600)?;
        Ok(true)
    }

    /// Puts Weft's entry into the file the runtime reads; returns that file and whether it
    /// was written.
    fn chain(&self) -> Result<(PathBuf, bool), InstallError> {
        let path = picked(&self.settings.conf_dir)?;
        let config = read_bounded(&path, MAX_CONFIG_BYTES as u64)?;
        let edit = chain::add(&config, &self.entry()).map_err(|source| InstallError::Chain {
            path: path.clone(),
            source,
        })?;
        let list = as_conflist(&path);
        if list == path {
            if edit.changed {
                write_atomically(&path, edit.config.as_bytes(), 0o644)?;
            }
            return Ok((path, edit.changed));
        }
        // A `.conf` or `.json`: the list goes beside it under `.conflist`, then the original
        // goes, so that the runtime finds the list first by name (or, in between, the
        // original: never neither).
        write_atomically(&list, edit.config.as_bytes(), 0o644)?;
        fs::remove_file(&path).map_err(|source| InstallError::Io {
            what: "delete the single-plugin configuration",
            path,
            source,
        })?;
        Ok((list, true))
    }
}

/// The kubeconfig `weft-cni` reads: one cluster, one user with a bearer token.
pub fn kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "weft", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": "weft-cni", "user": {"token": token}}],
        "contexts": [{"name": "weft-cni", "context": {"cluster": "weft", "user": "weft-cni"}}],
        "current-context": "weft-cni",
    });
    // JSON is YAML, and kubeconfig readers (kube-rs, client-go) take it.
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    text.push('\n');
    text
}

/// The API server's URL from the address Kubernetes gives every pod
/// (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_SERVICE_PORT`), bracketing an IPv6 host.
pub fn api_server_url(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The configuration file the runtime reads in `dir`.
fn picked(dir: &Path) -> Result<PathBuf, InstallError> {
    let names = config_files(dir)?
        .into_iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string));
    chain::pick(names)
        .map(|name| dir.join(name))
        .ok_or_else(|| InstallError::NoNetwork(dir.to_path_buf()))
}

/// Every file of `dir` the runtime could read as a network configuration.
fn config_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let io_error = |source| InstallError::Io {
        what: "list",
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if chain::pick([name.as_str()]).is_some() && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Takes Weft's entry out of `path`; whether there was one.
fn unchain(path: &Path) -> Result<bool, InstallError> {
    let config = read_bounded(path, MAX_CONFIG_BYTES as u64)?;
    let edit = chain::remove(&config).map_err(|source| InstallError::Chain {
        path: path.to_path_buf(),
        source,
    })?;
    if edit.changed {
        write_atomically(path, edit.config.as_bytes(), 0o644)?;
    }
    Ok(edit.changed)
}

/// `10-net.conf` and `10-net.json` become `10-net.conflist`; a `.conflist` stays.
fn as_conflist(path: &Path) -> PathBuf {
    match path.extension().and_then(|e| e.to_str()) {
        Some("conf" | "json") => path.with_extension("conflist"),
        _ => path.to_path_buf(),
    }
}

fn metadata(path: &Path, what: &'static str) -> Result<fs::Metadata, InstallError> {
    fs::metadata(path).map_err(|source| InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_all(path: &Path, what: &'static str) -> Result<Vec<u8>, InstallError> {
    fs::read(path).map_err(|source| InstallError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A text file of at most `max` bytes (one more is read, so a longer one is refused, not cut).
fn read_bounded(path: &Path, max: u64) -> Result<String, InstallError> {
    let io_error = |source| InstallError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    fs::File::open(path)
        .map_err(io_error)?
        .take(max + 1)
        .read_to_string(&mut text)
        .map_err(io_error)?;
    if text.len() as u64 > max {
        return Err(InstallError::TooLarge {
            path: path.to_path_buf(),
            size: text.len() as u64,
            max,
        });
    }
    Ok(text)
}

/// Writes `bytes` to a hidden file beside `path` with `mode`, then renames it over `path`: a
/// reader sees the old file or the new one, never a part.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.weft-tmp"));
    let io_error = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| InstallError::Io {
            what,
            path: p,
            source,
        }
    };
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    io::Write::write_all(&mut file, bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("write", &tmp))?;
    drop(file);
    // The umask may have narrowed the mode.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .map_err(io_error("set the mode of", &tmp))?;
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(InstallError::Io {
            what: "rename a new file over",
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(root: &Path) -> Settings {
        let image = root.join("image");
        let secrets = root.join("secrets");
        for dir in [&image, &secrets, &root.join("bin"), &root.join("net.d")] {
            fs::create_dir_all(dir).expect("test setup");
        }
        fs::write(image.join("weft-cni"), b"#!plugin v1").expect("test setup");
        fs::write(secrets.join("token"), "tok-1\n").expect("test setup");
        fs::write(
            secrets.join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .expect("test setup");
        Settings {
            plugin: image.join("weft-cni"),
            bin_dir: root.join("bin"),
            conf_dir: root.join("net.d"),
            host_conf_dir: PathBuf::from("/etc/cni/net.d"),
            api_server: api_server_url("198.19.0.1", "443"),
            token_file: secrets.join("token"),
            ca_file: secrets.join("ca.crt"),
            exclude_namespaces: vec!["kube-system".into(), "weft".into()],
            log_level: "info".into(),
            log_file: None,
            interval: Duration::from_millis(10),
        }
    }

    const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}"#;

    fn plugins(path: &Path) -> Vec<String> {
        let v: Value = serde_json::from_str(&fs::read_to_string(path).expect("test setup"))
            .expect("test setup");
        v["plugins"]
            .as_array()
            .expect("test setup")
            .iter()
            .map(|p| p["type"].as_str().expect("test setup").to_string())
            .collect()
    }

    #[test]
    fn installs_keeps_and_uninstalls() {
        let root = tempfile::tempdir().expect("test setup");
        let s = settings(root.path());
        let list = s.conf_dir.join("10-k8s.conflist");
        fs::write(&list, BRIDGE).expect("test setup");
        fs::write(s.conf_dir.join("99-later.conflist"), BRIDGE).expect("test setup");
        let mut installer = Installer::new(s.clone());
        assert!(installer.check().is_err(), "nothing installed yet");

        let round = installer.reconcile().expect("test setup");
        assert!(round.binary_written && round.kubeconfig_written && round.config_written);
        assert_eq!(round.chained, list);
        assert_eq!(plugins(&list), ["bridge", "weft-cni"]);
        assert_eq!(
            plugins(&s.conf_dir.join("99-later.conflist")),
            ["bridge"],
            "only the file the runtime reads"
        );
        assert_eq!(
            fs::read(s.bin_dir.join(PLUGIN_FILE)).expect("test setup"),
            b"#!plugin v1"
        );
        let kc = s.conf_dir.join(KUBECONFIG_FILE);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&kc).expect("test setup").permissions().mode() & 0o777,
            0o600
        );
        let entry: Value = serde_json::from_str(&fs::read_to_string(&list).expect("test setup"))
            .expect("test setup");
        assert_eq!(
            entry["plugins"][1]["kubeconfig"], "/etc/cni/net.d/weft-cni.kubeconfig",
            "the node's path, not the mount's"
        );
        assert_eq!(
            entry["plugins"][1]["excludeNamespaces"],
            json!(["kube-system", "weft"])
        );
        assert_eq!(installer.check().expect("test setup"), list);

        // Nothing changed: nothing written.
        assert!(!installer.reconcile().expect("test setup").changed());

        // The primary CNI rewrites its file; the token rotates; the binary goes.
        fs::write(&list, BRIDGE).expect("test setup");
        fs::write(&s.token_file, "tok-2").expect("test setup");
        fs::remove_file(s.bin_dir.join(PLUGIN_FILE)).expect("test setup");
        let round = installer.reconcile().expect("test setup");
        assert!(round.binary_written && round.kubeconfig_written && round.config_written);
        assert_eq!(plugins(&list), ["bridge", "weft-cni"]);
        assert!(fs::read_to_string(&kc)
            .expect("test setup")
            .contains("tok-2"));

        let unchained = installer.uninstall().expect("test setup");
        assert_eq!(unchained, std::slice::from_ref(&list));
        assert_eq!(plugins(&list), ["bridge"]);
        assert!(!kc.exists() && !s.bin_dir.join(PLUGIN_FILE).exists());
        assert!(installer.check().is_err());
        // No temporary file left behind.
        let leftovers: Vec<_> = fs::read_dir(&s.conf_dir)
            .expect("test setup")
            .chain(fs::read_dir(&s.bin_dir).expect("test setup"))
            .map(|e| e.expect("test setup").file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_conflist() {
        let root = tempfile::tempdir().expect("test setup");
        let s = settings(root.path());
        let conf = s.conf_dir.join("10-net.conf");
        fs::write(
            &conf,
            r#"{"cniVersion":"0.4.0","name":"net","type":"bridge"}"#,
        )
        .expect("test setup");
        let mut installer = Installer::new(s.clone());
        let round = installer.reconcile().expect("test setup");
        let list = s.conf_dir.join("10-net.conflist");
        assert_eq!(round.chained, list);
        assert!(!conf.exists(), "the original goes");
        assert_eq!(plugins(&list), ["bridge", "weft-cni"]);
        assert!(!installer.reconcile().expect("test setup").changed());
        // The primary plugin's installer writes its .conf again: it sorts first, is chained
        // again and goes again.
        fs::write(
            &conf,
            r#"{"cniVersion":"0.4.0","name":"net","type":"bridge"}"#,
        )
        .expect("test setup");
        assert!(installer.reconcile().expect("test setup").config_written);
        assert!(!conf.exists());
        assert_eq!(plugins(&list), ["bridge", "weft-cni"]);
    }

    #[test]
    fn every_problem_is_named() {
        let root = tempfile::tempdir().expect("test setup");
        let s = settings(root.path());
        let mut installer = Installer::new(s.clone());
        let e = installer.reconcile().expect_err("an error").to_string();
        assert!(
            e.contains("no CNI configuration in") && e.contains("net.d"),
            "{e}"
        );

        let list = s.conf_dir.join("10-k8s.conflist");
        fs::write(&list, "{not json").expect("test setup");
        let e = installer.reconcile().expect_err("an error").to_string();
        assert!(
            e.contains("10-k8s.conflist") && e.contains("not JSON"),
            "{e}"
        );
        assert!(installer
            .check()
            .expect_err("an error")
            .contains("not JSON"));

        fs::write(&list, vec![b' '; MAX_CONFIG_BYTES + 1]).expect("test setup");
        let e = installer.reconcile().expect_err("an error").to_string();
        assert!(
            e.contains("10-k8s.conflist") && e.contains("at most"),
            "{e}"
        );

        fs::write(&list, BRIDGE).expect("test setup");
        fs::write(&s.token_file, "\n").expect("test setup");
        let e = installer.reconcile().expect_err("an error").to_string();
        assert!(e.contains("token") && e.contains("empty"), "{e}");
        assert_eq!(
            plugins(&list),
            ["bridge"],
            "no entry without its kubeconfig"
        );

        fs::remove_file(&s.plugin).expect("test setup");
        let e = installer.reconcile().expect_err("an error").to_string();
        assert!(e.contains("read the plugin") && e.contains("image"), "{e}");
    }

    #[test]
    fn the_kubeconfig_is_one_that_kube_reads() {
        let text = kubeconfig("https://[fd00::1]:443", b"CA", "secret-token");
        let parsed = kube::config::Kubeconfig::from_yaml(&text).expect("test setup");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("test setup");
        assert_eq!(cluster.server.as_deref(), Some("https://[fd00::1]:443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(parsed.current_context.as_deref(), Some("weft-cni"));
        assert_eq!(api_server_url("fd00::1", "443"), "https://[fd00::1]:443");
        assert_eq!(
            api_server_url("198.19.0.1", "6443"),
            "https://198.19.0.1:6443"
        );
    }
}
