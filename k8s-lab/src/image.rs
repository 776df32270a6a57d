//! Container images built here, from files on this machine, and imported into containerd.
//!
//! No registry is reachable from the project's machines and there is no Docker engine, so the
//! k8s tier's pods run images that [`ImageBuilder`] packs: one uncompressed layer holding just
//! the files a pod needs (a binary with its dynamic loader and libraries, config files, empty
//! directories), an image config saying how to run it, and a manifest, laid out as an
//! [OCI image layout] and packed into one tar archive that `ctr images import` reads.
//! [`import`] puts it into the `k8s.io` namespace, whose images containerd's CRI plugin serves
//! to the kubelet; pods use them with `imagePullPolicy: Never`.
//!
//! ```no_run
//! use std::path::Path;
//! use weft_k8s_lab::image::{self, ImageBuilder};
//!
//! # fn main() -> weft_k8s_lab::Result<()> {
//! let digest = ImageBuilder::new("weft.local/pause:v1")
//!     .binary("/pause", "/tmp/k8sbin/pause")
//!     .entrypoint(["/pause"])
//!     .write_archive(Path::new("/tmp/pause.tar"))?;
//! image::import(Path::new("/usr/bin/ctr"), Path::new("/run/containerd.sock"), Path::new("/tmp/pause.tar"))?;
//! # let _ = digest;
//! # Ok(())
//! # }
//! ```
//!
//! The archive is deterministic: entries sorted by path, every mtime 0, owners 0 unless set,
//! no timestamps in the config, so the same inputs give the same bytes and the same digest
//! (and containerd skips a layer it already has). The layer is written to a temporary file
//! beside the destination while its digest is computed, never held in memory whole, and no
//! single file may be bigger than [`DEFAULT_MAX_FILE_SIZE`] (or the builder's
//! [`ImageBuilder::max_file_size`]).
//!
//! Crates: `tar` writes both the layer and the archive (GNU headers, long names through the
//! GNU extension that containerd's Go reader accepts); its default `xattr` feature is off, as
//! these images carry no extended attributes. `ring`, already the workspace's crypto, gives
//! SHA-256 for the digests, and `serde_json` writes the config, manifest and index (its
//! object keys come out sorted, which keeps them deterministic).
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

mod ldd;

use std::{
    collections::BTreeMap,
    fmt,
    fs::{self, File},
    io::{self, BufWriter, Read, Seek, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ring::digest;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The containerd namespace whose images the CRI plugin (and so the kubelet) sees.
pub const NAMESPACE: &str = "k8s.io";

/// The snapshotter images are unpacked for: the CRI plugin's default, and the one that works
/// on this machine's ext4 (aufs, btrfs, zfs and devmapper do not load here).
pub const SNAPSHOTTER: &str = "overlayfs";

/// The largest file an image may hold unless the builder says otherwise: the Kubernetes
/// binaries built from source are 50 to 130 MB, so this leaves room and still stops a
/// mistaken path (a disk image, a core file) from filling the disk with layers.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 512 << 20;

/// How long `ctr images import` may take: it copies the blobs into containerd's content store
/// and unpacks the layer into a snapshot, a few seconds for the tier's images.
pub const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// The UID and GID of the `weft` user in the default `/etc/passwd` and `/etc/group`: the user
/// the proxy runs as, whose traffic the redirect rules leave alone.
pub const WEFT_UID: u32 = 2121;

/// The `PATH` an image's config sets unless the caller sets its own (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The platform written into the config and the index, so `ctr images import` (which keeps
/// only the host's platform) and the kubelet accept the image.
#[cfg(target_arch = "x86_64")]
const ARCHITECTURE: &str = "amd64";
#[cfg(target_arch = "aarch64")]
const ARCHITECTURE: &str = "arm64";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURE: &str = std::env::consts::ARCH;

/// The annotation containerd's importer names an image by (the full reference).
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for a reference in a layout: the tag, as Docker and BuildKit write it.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The longest tag a reference may carry (the distribution spec's limit).
const MAX_TAG_LEN: usize = 128;

/// A content digest, `sha256:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// An image to build: files, directories and symlinks for its one layer, and how to run it.
///
/// Every method records what to do; [`ImageBuilder::write_archive`] checks it all (the
/// reference, every path, every source file) and says what is wrong, naming the path.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    reference: String,
    ops: Vec<Op>,
    owners: Vec<(String, u32, u32)>,
    run: RunConfig,
    max_file_size: u64,
}

/// One thing added to the image, in call order (a later one at the same path wins).
#[derive(Debug, Clone)]
enum Op {
    Put(String, Kind),
    /// An executable from disk, with what `ldd` says it needs.
    Binary(String, PathBuf),
}

/// What a path in the image is.
#[derive(Debug, Clone)]
enum Kind {
    Dir { mode: u32 },
    File { content: Content, mode: u32 },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
enum Content {
    Disk(PathBuf),
    Bytes(Vec<u8>),
}

/// How the image runs: the config's `config` object.
#[derive(Debug, Clone, Default)]
struct RunConfig {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    user: Option<(u32, u32)>,
}

/// A path of the layer, resolved: what it is and who owns it.
#[derive(Debug)]
struct Node {
    kind: Kind,
    uid: u32,
    gid: u32,
}

/// A reference split into what the index annotations need.
#[derive(Debug)]
struct Reference<'a> {
    full: &'a str,
    tag: &'a str,
}

/// A blob's digest and size, as descriptors carry them.
#[derive(Debug)]
struct Blob {
    digest: Digest,
    size: u64,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(digest::digest(&digest::SHA256, bytes))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex digits alone: the blob's file name under `blobs/sha256/`.
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }

    fn from_sha256(d: digest::Digest) -> Digest {
        let mut text = String::with_capacity(7 + 64);
        text.push_str("sha256:");
        for byte in d.as_ref() {
            text.push_str(&format!("{byte:02x}"));
        }
        Digest(text)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ImageBuilder {
    /// An empty image named `reference`, a full reference with a registry host and a tag
    /// (`weft.local/pause:v1`): the kubelet looks a short name up as `docker.io/library/...`,
    /// so a pod's `image:` must be the same full string.
    pub fn new(reference: impl Into<String>) -> ImageBuilder {
        ImageBuilder {
            reference: reference.into(),
            ops: Vec::new(),
            owners: Vec::new(),
            run: RunConfig {
                env: vec![("PATH".to_string(), DEFAULT_PATH.to_string())],
                ..RunConfig::default()
            },
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// The reference the image is named by.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The file at `source` on this machine (its content; a symlink is followed) at the
    /// absolute `path` in the image, with permission bits `mode` (e.g. `0o644`).
    pub fn file(mut self, path: &str, source: impl Into<PathBuf>, mode: u32) -> ImageBuilder {
        let content = Content::Disk(source.into());
        self.ops
            .push(Op::Put(path.to_string(), Kind::File { content, mode }));
        self
    }

    /// A file holding `bytes` at `path`, with permission bits `mode`.
    pub fn bytes(mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> ImageBuilder {
        let content = Content::Bytes(bytes.into());
        self.ops
            .push(Op::Put(path.to_string(), Kind::File { content, mode }));
        self
    }

    /// A directory at `path` with permission bits `mode` (`0o1777` for `/tmp`). The parents
    /// of every path are added as `0o755` directories on their own; this is for the ones that
    /// need another mode or must exist empty.
    pub fn dir(mut self, path: &str, mode: u32) -> ImageBuilder {
        self.ops.push(Op::Put(path.to_string(), Kind::Dir { mode }));
        self
    }

    /// A symlink at `path` pointing at `target` (kept as written, relative or absolute).
    pub fn symlink(mut self, path: &str, target: &str) -> ImageBuilder {
        let target = target.to_string();
        self.ops
            .push(Op::Put(path.to_string(), Kind::Symlink { target }));
        self
    }

    /// The ELF executable `source` at `path` (mode `0o755`), and everything it needs to run in
    /// an otherwise empty root filesystem: the dynamic loader and the shared libraries that
    /// `ldd` reports, each at the absolute path `ldd` names, as a regular file with the
    /// content of the file that path resolves to here. A static binary brings nothing more.
    /// A path the caller adds itself is kept over a library `ldd` names. Libraries a program
    /// only `dlopen`s at run time are not in `ldd`'s list: add those with [`Self::file`].
    pub fn binary(mut self, path: &str, source: impl Into<PathBuf>) -> ImageBuilder {
        self.ops.push(Op::Binary(path.to_string(), source.into()));
        self
    }

    /// Owner of `path` (which the image must hold: added, or a parent added on its own).
    /// Everything else belongs to root.
    pub fn owner(mut self, path: &str, uid: u32, gid: u32) -> ImageBuilder {
        self.owners.push((path.to_string(), uid, gid));
        self
    }

    /// The program and its first arguments (the config's `Entrypoint`).
    pub fn entrypoint<I, S>(mut self, argv: I) -> ImageBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.run.entrypoint = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The default arguments, or the program if there is no entrypoint (the config's `Cmd`).
    pub fn cmd<I, S>(mut self, argv: I) -> ImageBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.run.cmd = argv.into_iter().map(Into::into).collect();
        self
    }

    /// An environment variable; a second call for the same name replaces the value (`PATH` is
    /// [`DEFAULT_PATH`] until set).
    pub fn env(mut self, name: &str, value: &str) -> ImageBuilder {
        match self.run.env.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.run.env.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// The working directory of the image's processes (absolute).
    pub fn working_dir(mut self, dir: &str) -> ImageBuilder {
        self.run.working_dir = Some(dir.to_string());
        self
    }

    /// The numeric user and group the image's processes run as (root when unset). Numeric, so
    /// the runtime needs no name lookup in the image.
    pub fn user(mut self, uid: u32, gid: u32) -> ImageBuilder {
        self.run.user = Some((uid, gid));
        self
    }

    /// The largest file the image may hold, in bytes ([`DEFAULT_MAX_FILE_SIZE`] unless set).
    pub fn max_file_size(mut self, bytes: u64) -> ImageBuilder {
        self.max_file_size = bytes;
        self
    }

    /// Writes the image as an OCI image layout packed in a tar archive at `dst` (replaced
    /// whole, never left half-written), ready for `ctr images import`. Returns the manifest's
    /// digest, which names this exact image.
    pub fn write_archive(&self, dst: &Path) -> Result<Digest> {
        let reference = Reference::parse(&self.reference).map_err(|reason| self.error(reason))?;
        let tree = self.resolve()?;
        let dir = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };

        let layer_file = tempfile::tempfile_in(dir).map_err(Error::io(format!(
            "create a temporary layer file in {} for image {}",
            dir.display(),
            self.reference
        )))?;
        let (layer_file, layer) = self.write_layer(&tree, layer_file)?;

        let config = serde_json::to_vec(&self.config_json(&layer.digest))
            .map_err(|e| self.error(format!("encode the image config: {e}")))?;
        let config_blob = Blob::of(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": config_blob.descriptor(MEDIA_TYPE_CONFIG),
            "layers": [layer.descriptor(MEDIA_TYPE_LAYER)],
        }))
        .map_err(|e| self.error(format!("encode the manifest: {e}")))?;
        let manifest_blob = Blob::of(&manifest);
        let mut manifest_descriptor = manifest_blob.descriptor(MEDIA_TYPE_MANIFEST);
        manifest_descriptor["platform"] = json!({ "architecture": ARCHITECTURE, "os": "linux" });
        manifest_descriptor["annotations"] = json!({
            ANNOTATION_IMAGE_NAME: reference.full,
            ANNOTATION_REF_NAME: reference.tag,
        });
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [manifest_descriptor],
        }))
        .map_err(|e| self.error(format!("encode index.json: {e}")))?;

        let mut blobs: BTreeMap<String, BlobSource<'_>> = BTreeMap::new();
        blobs.insert(config_blob.digest.hex().into(), BlobSource::Bytes(&config));
        blobs.insert(
            manifest_blob.digest.hex().into(),
            BlobSource::Bytes(&manifest),
        );
        blobs.insert(
            layer.digest.hex().into(),
            BlobSource::File(layer_file, layer.size),
        );
        self.write_layout(dst, dir, &index, blobs)?;
        Ok(manifest_blob.digest)
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Image {
            image: self.reference.clone(),
            reason: reason.into(),
        }
    }

    /// Every path of the layer: what was added (later wins), the libraries of binaries, the
    /// default `/etc/passwd` and `/etc/group`, and the parents, with owners applied.
    fn resolve(&self) -> Result<BTreeMap<String, Node>> {
        let root = |kind| Node {
            kind,
            uid: 0,
            gid: 0,
        };
        let mut tree: BTreeMap<String, Node> = BTreeMap::new();
        let mut libraries: BTreeMap<String, PathBuf> = BTreeMap::new();
        for op in &self.ops {
            match op {
                Op::Put(path, kind) => {
                    let key = self.image_path(path)?;
                    self.check_kind(path, kind)?;
                    tree.insert(key, root(kind.clone()));
                }
                Op::Binary(path, source) => {
                    let key = self.image_path(path)?;
                    ldd::check_elf(source).map_err(|reason| {
                        self.error(format!("binary {path} from {}: {reason}", source.display()))
                    })?;
                    let needed = ldd::shared_objects(source).map_err(|e| match e {
                        ldd::Failure::Lab(e) => Error::Lab(e),
                        ldd::Failure::Output(reason) => self.error(format!(
                            "the libraries of binary {path} ({}): {reason}",
                            source.display()
                        )),
                    })?;
                    for library in needed {
                        let text = library.to_string_lossy().into_owned();
                        let lib_key = self.image_path(&text)?;
                        let resolved = fs::canonicalize(&library).map_err(Error::io(format!(
                            "resolve {}, a library of {} (image {})",
                            library.display(),
                            source.display(),
                            self.reference
                        )))?;
                        libraries.insert(lib_key, resolved);
                    }
                    let content = Content::Disk(source.clone());
                    tree.insert(
                        key,
                        root(Kind::File {
                            content,
                            mode: 0o755,
                        }),
                    );
                }
            }
        }
        for (key, source) in libraries {
            if tree.contains_key(&key) {
                continue;
            }
            let mode = fs::metadata(&source)
                .map_err(Error::io(format!("stat library {}", source.display())))?
                .permissions()
                .mode()
                & 0o7777;
            let content = Content::Disk(source);
            tree.insert(key, root(Kind::File { content, mode }));
        }
        for (key, text) in [
            ("etc/passwd", default_passwd()),
            ("etc/group", default_group()),
        ] {
            tree.entry(key.to_string()).or_insert_with(|| {
                root(Kind::File {
                    content: Content::Bytes(text.into_bytes()),
                    mode: 0o644,
                })
            });
        }
        let keys: Vec<String> = tree.keys().cloned().collect();
        for key in &keys {
            for parent in ancestors(key) {
                match tree.get(parent).map(|node| &node.kind) {
                    None => {
                        tree.insert(parent.to_string(), root(Kind::Dir { mode: 0o755 }));
                    }
                    Some(Kind::Dir { .. }) => {}
                    Some(_) => {
                        return Err(self.error(format!(
                            "/{key} lies under /{parent}, which the image holds as a file or \
                             symlink, not a directory; add /{key} at the path /{parent} points \
                             to, or drop /{parent}"
                        )))
                    }
                }
            }
        }
        for (path, uid, gid) in &self.owners {
            let key = self.image_path(path)?;
            let node = tree.get_mut(&key).ok_or_else(|| {
                self.error(format!(
                    "owner set for {path}, which the image does not hold; add it first"
                ))
            })?;
            node.uid = *uid;
            node.gid = *gid;
        }
        for (key, node) in &tree {
            if let Kind::File {
                content: Content::Disk(source),
                ..
            } = &node.kind
            {
                self.disk_size(key, source)?;
            }
        }
        Ok(tree)
    }

    /// `path` as the layer names it (relative, no `.` or `..`), or why it cannot be.
    fn image_path(&self, path: &str) -> Result<String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(self.error(format!(
                "the path {path:?} in the image is not absolute; write it from /"
            )));
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(self.error(format!(
                "the path {path:?} names the image's root, which is always there"
            )));
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(self.error(format!(
                "the path {path:?} in the image has a . or .. component; write it plainly"
            )));
        }
        if path.contains('\0') {
            return Err(self.error(format!("the path {path:?} in the image has a NUL byte")));
        }
        Ok(parts.join("/"))
    }

    fn check_kind(&self, path: &str, kind: &Kind) -> Result<()> {
        match kind {
            Kind::Dir { mode } | Kind::File { mode, .. } if *mode > 0o7777 => Err(self.error(
                format!("the mode {mode:#o} of {path} has bits beyond permissions (0o7777)"),
            )),
            Kind::File {
                content: Content::Bytes(bytes),
                ..
            } if bytes.len() as u64 > self.max_file_size => Err(self.error(format!(
                "{path} ({} bytes) is bigger than the limit of {} bytes per file; raise \
                 max_file_size if it is meant to be",
                bytes.len(),
                self.max_file_size
            ))),
            Kind::Symlink { target } if target.is_empty() || target.contains('\0') => {
                Err(self.error(format!("the symlink {path} has an empty or NUL target")))
            }
            _ => Ok(()),
        }
    }

    /// The size of the regular file `source` that goes to `key`, checked against the limit.
    fn disk_size(&self, key: &str, source: &Path) -> Result<u64> {
        let meta = fs::metadata(source).map_err(Error::io(format!(
            "stat {} for /{key} in image {}",
            source.display(),
            self.reference
        )))?;
        if !meta.is_file() {
            return Err(self.error(format!(
                "{} (for /{key}) is not a regular file",
                source.display()
            )));
        }
        if meta.len() > self.max_file_size {
            return Err(self.error(format!(
                "{} (for /{key}, {} bytes) is bigger than the limit of {} bytes per file; raise \
                 max_file_size if it is meant to be",
                source.display(),
                meta.len(),
                self.max_file_size
            )));
        }
        Ok(meta.len())
    }

    /// The layer tar, written to `file` while its digest is computed.
    fn write_layer(&self, tree: &BTreeMap<String, Node>, file: File) -> Result<(File, Blob)> {
        let what = || format!("write the layer of image {}", self.reference);
        let mut tar = tar::Builder::new(Hashing::new(BufWriter::new(file)));
        for (key, node) in tree {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(u64::from(node.uid));
            header.set_gid(u64::from(node.gid));
            match &node.kind {
                Kind::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    tar.append_data(&mut header, format!("{key}/"), io::empty())
                        .map_err(Error::io(format!("{}: directory /{key}", what())))?;
                }
                Kind::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, key, target)
                        .map_err(Error::io(format!("{}: symlink /{key}", what())))?;
                }
                Kind::File { content, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    match content {
                        Content::Bytes(bytes) => {
                            header.set_size(bytes.len() as u64);
                            tar.append_data(&mut header, key, bytes.as_slice())
                                .map_err(Error::io(format!("{}: file /{key}", what())))?;
                        }
                        Content::Disk(source) => {
                            let size = self.disk_size(key, source)?;
                            let file = File::open(source).map_err(Error::io(format!(
                                "open {} for /{key} in image {}",
                                source.display(),
                                self.reference
                            )))?;
                            header.set_size(size);
                            tar.append_data(&mut header, key, Exact::new(file, size))
                                .map_err(Error::io(format!(
                                    "{}: /{key} from {}",
                                    what(),
                                    source.display()
                                )))?;
                        }
                    }
                }
            }
        }
        let hashing = tar.into_inner().map_err(Error::io(what()))?;
        let (writer, blob) = hashing.finish();
        let mut file = writer
            .into_inner()
            .map_err(|e| Error::io(what())(e.into_error()))?;
        file.rewind().map_err(Error::io(what()))?;
        Ok((file, blob))
    }

    /// The image config: platform, how to run, and the layer's diff ID (the digest of the
    /// uncompressed layer, which is the layer blob itself here).
    fn config_json(&self, layer: &Digest) -> Value {
        let run = &self.run;
        let mut config = serde_json::Map::new();
        let env: Vec<String> = run.env.iter().map(|(n, v)| format!("{n}={v}")).collect();
        config.insert("Env".into(), json!(env));
        if !run.entrypoint.is_empty() {
            config.insert("Entrypoint".into(), json!(run.entrypoint));
        }
        if !run.cmd.is_empty() {
            config.insert("Cmd".into(), json!(run.cmd));
        }
        if let Some(dir) = &run.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if let Some((uid, gid)) = run.user {
            config.insert("User".into(), json!(format!("{uid}:{gid}")));
        }
        json!({
            "architecture": ARCHITECTURE,
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": [layer.as_str()] },
        })
    }

    /// The OCI layout as a tar archive at `dst`, via a temporary file in `dir` renamed over it.
    fn write_layout(
        &self,
        dst: &Path,
        dir: &Path,
        index: &[u8],
        blobs: BTreeMap<String, BlobSource<'_>>,
    ) -> Result<()> {
        let what = || format!("write image {} to {}", self.reference, dst.display());
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(Error::io(what()))?;
        let mut tar = tar::Builder::new(BufWriter::new(tmp));
        let dir_entry = |tar: &mut tar::Builder<_>, path: &str| {
            let mut header = layout_header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut header, path, io::empty())
        };
        let file_entry = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| {
            let mut header = layout_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            tar.append_data(&mut header, path, bytes)
        };
        dir_entry(&mut tar, "blobs/").map_err(Error::io(what()))?;
        dir_entry(&mut tar, "blobs/sha256/").map_err(Error::io(what()))?;
        for (hex, blob) in blobs {
            let path = format!("blobs/sha256/{hex}");
            match blob {
                BlobSource::Bytes(bytes) => file_entry(&mut tar, &path, bytes),
                BlobSource::File(file, size) => {
                    let mut header = layout_header(tar::EntryType::Regular, 0o644, size);
                    tar.append_data(&mut header, &path, Exact::new(file, size))
                }
            }
            .map_err(Error::io(what()))?;
        }
        file_entry(&mut tar, "index.json", index).map_err(Error::io(what()))?;
        file_entry(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(Error::io(what()))?;
        let tmp = tar
            .into_inner()
            .map_err(Error::io(what()))?
            .into_inner()
            .map_err(|e| Error::io(what())(e.into_error()))?;
        tmp.as_file().sync_all().map_err(Error::io(what()))?;
        tmp.persist(dst).map_err(|e| Error::io(what())(e.error))?;
        Ok(())
    }
}

/// A blob of the layout: bytes in memory, or the layer's temporary file and its size.
enum BlobSource<'a> {
    Bytes(&'a [u8]),
    File(File, u64),
}

impl Blob {
    fn of(bytes: &[u8]) -> Blob {
        Blob {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({ "mediaType": media_type, "digest": self.digest.as_str(), "size": self.size })
    }
}

impl<'a> Reference<'a> {
    /// Checks `full` is `host[:port]/path[/path...]:tag` and finds its tag.
    fn parse(full: &'a str) -> std::result::Result<Reference<'a>, String> {
        let bad = |why: &str| {
            format!(
                "the reference {full:?} {why}; write a full reference such as weft.local/pause:v1"
            )
        };
        if full.contains('@') {
            return Err(bad("has a digest; name images by tag here"));
        }
        let Some((host, rest)) = full.split_once('/') else {
            return Err(bad("has no registry host"));
        };
        let host_ok = host == "localhost" || host.contains('.') || host.contains(':');
        let host_chars = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !host_ok || !host_chars || host.starts_with(['.', '-']) {
            return Err(bad(
                "does not start with a registry host (with a dot or port, or localhost)",
            ));
        }
        let Some((path, tag)) = rest.rsplit_once(':') else {
            return Err(bad("has no tag"));
        };
        let path_ok = path.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        });
        if !path_ok {
            return Err(bad(
                "has a repository path that is not lowercase letters, digits and . _ -",
            ));
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= MAX_TAG_LEN
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !tag_ok {
            return Err(bad(
                "has a tag that is not 1 to 128 of letters, digits and . _ -",
            ));
        }
        Ok(Reference { full, tag })
    }
}

/// Imports the image archive `archive` into the `k8s.io` namespace of the containerd serving
/// `address`, through `ctr`, unpacked for the overlayfs snapshotter, within
/// [`IMPORT_TIMEOUT`]. The archive must name its image (as [`ImageBuilder`]'s do); the error
/// says what `ctr` printed.
pub fn import(ctr: &Path, address: &Path, archive: &Path) -> Result<()> {
    let mut cmd = Command::new(ctr);
    cmd.arg("--address")
        .arg(address)
        .args(["--namespace", NAMESPACE, "images", "import"])
        .args(["--snapshotter", SNAPSHOTTER])
        .arg(archive);
    let line = format!(
        "{} --address {} --namespace {NAMESPACE} images import --snapshotter {SNAPSHOTTER} {}",
        ctr.display(),
        address.display(),
        archive.display()
    );
    let out = weft_lab::process::run_with_input(&mut cmd, b"", IMPORT_TIMEOUT)?;
    let printed = format!("{}{}", out.stdout, out.stderr);
    let image = archive.display().to_string();
    if !out.status.success() {
        return Err(Error::Image {
            image,
            reason: format!(
                "`{line}` failed ({}): {}; is containerd serving {}?",
                out.status,
                printed.trim(),
                address.display()
            ),
        });
    }
    // ctr says `unpacking <name> (<digest>)...done` per named image; an archive without the
    // name annotations imports blobs but names nothing, which no pod could use.
    if !out.stdout.contains("unpacking ") {
        return Err(Error::Image {
            image,
            reason: format!(
                "`{line}` named no image (its index has no io.containerd.image.name \
                 annotation?); it printed: {}",
                printed.trim()
            ),
        });
    }
    Ok(())
}

/// The header of an entry of the layout archive: root's, mtime 0.
fn layout_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// root, and the `weft` user the proxy runs as; neither can log in.
fn default_passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\nweft:x:{WEFT_UID}:{WEFT_UID}:weft:/nonexistent:/sbin/nologin\n"
    )
}

fn default_group() -> String {
    format!("root:x:0:\nweft:x:{WEFT_UID}:\n")
}

/// The parent directories of a layer path, outermost first (`a/b/c` gives `a`, `a/b`).
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    key.match_indices('/').map(move |(at, _)| &key[..at])
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    context: digest::Context,
    len: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            context: digest::Context::new(&digest::SHA256),
            len: 0,
        }
    }

    fn finish(self) -> (W, Blob) {
        let blob = Blob {
            digest: Digest::from_sha256(self.context.finish()),
            size: self.len,
        };
        (self.inner, blob)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.context.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `size` bytes of a file whose size was written in a tar header before its
/// content: a file that shrinks or grows meanwhile is an error, not a corrupt archive.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Exact<R> {
        Exact { inner, left: size }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("the file grew while it was being packed")),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being packed",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
