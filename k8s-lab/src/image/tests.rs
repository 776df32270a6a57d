use std::{collections::BTreeMap, fs, io::Read, path::Path};

use serde_json::Value;

use super::*;

/// One entry of a tar archive read back.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// The entries of a tar archive, in archive order, by path.
fn read_tar(bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let header = entry.header();
        let link = entry
            .link_name()
            .expect("a link name")
            .map(|l| l.to_string_lossy().into_owned());
        let mut read = Entry {
            kind: header.entry_type(),
            mode: header.mode().expect("a mode"),
            uid: header.uid().expect("a uid"),
            gid: header.gid().expect("a gid"),
            mtime: header.mtime().expect("an mtime"),
            link,
            data: Vec::new(),
        };
        entry.read_to_end(&mut read.data).expect("entry data");
        out.push((path, read));
    }
    out
}

/// An archive read back and checked against the layout's rules: every blob named by its
/// digest, every descriptor's digest and size matching its blob.
#[derive(Debug)]
struct Layout {
    index: Value,
    manifest: Value,
    config: Value,
    layer: Vec<(String, Entry)>,
    manifest_digest: String,
}

fn read_layout(archive: &Path) -> Layout {
    let bytes = fs::read(archive).expect("the archive");
    let entries = read_tar(&bytes);
    let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "the archive's entries are sorted");
    let files: BTreeMap<&str, &Entry> = entries.iter().map(|(p, e)| (p.as_str(), e)).collect();
    for (path, entry) in &files {
        assert_eq!(entry.mtime, 0, "{path} has mtime 0");
        assert_eq!((entry.uid, entry.gid), (0, 0), "{path} belongs to root");
    }
    assert_eq!(
        files["oci-layout"].data,
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
    );
    for (path, entry) in &files {
        if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
            assert_eq!(
                Digest::of(&entry.data).hex(),
                hex,
                "{path} is named by its digest"
            );
        }
    }
    let blob = |descriptor: &Value| -> Vec<u8> {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let entry = files
            .get(format!("blobs/sha256/{hex}").as_str())
            .unwrap_or_else(|| panic!("the blob of {digest}"));
        assert_eq!(
            descriptor["size"].as_u64(),
            Some(entry.data.len() as u64),
            "the size of {digest}"
        );
        entry.data.clone()
    };
    let index: Value = serde_json::from_slice(&files["index.json"].data).expect("index.json");
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    let manifest: Value = serde_json::from_slice(&blob(&manifests[0])).expect("the manifest");
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    let config: Value = serde_json::from_slice(&blob(&manifest["config"])).expect("the config");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], MEDIA_TYPE_LAYER);
    let layer_bytes = blob(&layers[0]);
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([layers[0]["digest"]]),
        "the diff ID is the (uncompressed) layer's digest"
    );
    let layer = read_tar(&layer_bytes);
    let layer_paths: Vec<&str> = layer.iter().map(|(p, _)| p.as_str()).collect();
    let mut sorted = layer_paths.clone();
    sorted.sort();
    assert_eq!(layer_paths, sorted, "the layer's entries are sorted");
    Layout {
        manifest_digest: manifests[0]["digest"].as_str().unwrap_or_default().into(),
        index,
        manifest,
        config,
        layer,
    }
}

impl Layout {
    fn entry(&self, path: &str) -> &Entry {
        self.layer
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("the layer holds {path}"))
    }

    fn paths(&self) -> Vec<&str> {
        self.layer.iter().map(|(p, _)| p.as_str()).collect()
    }
}

fn sample(dir: &Path) -> ImageBuilder {
    let on_disk = dir.join("greeting");
    fs::write(&on_disk, "hello from disk\n").expect("write the sample file");
    ImageBuilder::new("weft.local/sample:v1")
        .file("/etc/weft/greeting", &on_disk, 0o640)
        .bytes("/etc/weft/inline", "inline\n", 0o600)
        .dir("/tmp", 0o1777)
        .dir("/var/lib/weft", 0o750)
        .owner("/var/lib/weft", WEFT_UID, WEFT_UID)
        .symlink("/greeting", "etc/weft/greeting")
        .entrypoint(["/bin/app", "--flag"])
        .cmd(["arg"])
        .env("WEFT_X", "1")
        .env("WEFT_X", "2")
        .working_dir("/var/lib/weft")
        .user(WEFT_UID, WEFT_UID)
}

#[test]
fn the_archive_is_an_oci_layout_whose_digests_match() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("sample.tar");
    let digest = sample(dir.path()).write_archive(&archive).expect("write");
    let layout = read_layout(&archive);

    assert_eq!(layout.manifest_digest, digest.as_str());
    assert_eq!(layout.manifest["schemaVersion"], 2);
    let descriptor = &layout.index["manifests"][0];
    assert_eq!(
        descriptor["annotations"][ANNOTATION_IMAGE_NAME],
        "weft.local/sample:v1"
    );
    assert_eq!(descriptor["annotations"][ANNOTATION_REF_NAME], "v1");
    assert_eq!(descriptor["platform"]["architecture"], "amd64");
    assert_eq!(layout.config["architecture"], "amd64");
    assert_eq!(layout.config["os"], "linux");
    let run = &layout.config["config"];
    assert_eq!(run["Entrypoint"], serde_json::json!(["/bin/app", "--flag"]));
    assert_eq!(run["Cmd"], serde_json::json!(["arg"]));
    assert_eq!(
        run["Env"],
        serde_json::json!([format!("PATH={DEFAULT_PATH}"), "WEFT_X=2"])
    );
    assert_eq!(run["WorkingDir"], "/var/lib/weft");
    assert_eq!(run["User"], "2121:2121");
    assert!(layout.config.get("created").is_none(), "no timestamp");

    assert_eq!(
        layout.paths(),
        [
            "etc/",
            "etc/group",
            "etc/passwd",
            "etc/weft/",
            "etc/weft/greeting",
            "etc/weft/inline",
            "greeting",
            "tmp/",
            "var/",
            "var/lib/",
            "var/lib/weft/",
        ]
    );
    let greeting = layout.entry("etc/weft/greeting");
    assert_eq!(greeting.kind, tar::EntryType::Regular);
    assert_eq!(greeting.data, b"hello from disk\n");
    assert_eq!(greeting.mode, 0o640);
    assert_eq!(layout.entry("etc/weft/inline").mode, 0o600);
    let tmp = layout.entry("tmp/");
    assert_eq!((tmp.kind, tmp.mode), (tar::EntryType::Directory, 0o1777));
    let link = layout.entry("greeting");
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("etc/weft/greeting"));
    let implied = layout.entry("var/lib/");
    assert_eq!(
        (implied.kind, implied.mode),
        (tar::EntryType::Directory, 0o755)
    );
    let owned = layout.entry("var/lib/weft/");
    assert_eq!((owned.uid, owned.gid, owned.mode), (2121, 2121, 0o750));
    for (path, entry) in &layout.layer {
        assert_eq!(entry.mtime, 0, "{path} has mtime 0");
        if path != "var/lib/weft/" {
            assert_eq!((entry.uid, entry.gid), (0, 0), "{path} belongs to root");
        }
    }
    let passwd = String::from_utf8_lossy(&layout.entry("etc/passwd").data).into_owned();
    assert!(passwd.contains("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("weft:x:2121:2121:"), "{passwd}");
    let group = String::from_utf8_lossy(&layout.entry("etc/group").data).into_owned();
    assert!(group.contains("weft:x:2121:"), "{group}");
}

#[test]
fn two_writes_give_the_same_bytes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let image = sample(dir.path());
    let first = image.write_archive(&a).expect("first write");
    let second = image.write_archive(&b).expect("second write");
    assert_eq!(first, second);
    assert!(
        fs::read(&a).expect("a") == fs::read(&b).expect("b"),
        "the archives differ"
    );
    let other = sample(dir.path()).env("WEFT_X", "3");
    assert_ne!(other.write_archive(&a).expect("third write"), first);
}

#[test]
fn a_dynamic_binary_brings_its_loader_and_libraries() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("echo.tar");
    ImageBuilder::new("weft.local/echo:v1")
        .binary("/bin/echo", "/bin/echo")
        .write_archive(&archive)
        .expect("write");
    let layout = read_layout(&archive);
    let echo = layout.entry("bin/echo");
    assert_eq!((echo.kind, echo.mode), (tar::EntryType::Regular, 0o755));
    assert_eq!(echo.data, fs::read("/bin/echo").expect("/bin/echo"));

    let out = Command::new("ldd").arg("/bin/echo").output().expect("ldd");
    let needed = ldd::parse(&String::from_utf8_lossy(&out.stdout)).expect("ldd's output");
    assert!(
        needed
            .iter()
            .any(|p| p.to_string_lossy().contains("ld-linux"))
            && needed.iter().any(|p| p.ends_with("libc.so.6")),
        "ldd names the loader and libc: {needed:?}"
    );
    for path in &needed {
        let key = path.to_string_lossy().trim_start_matches('/').to_string();
        let entry = layout.entry(&key);
        // The loader's path is a symlink on Debian; the image holds the file it points at.
        assert_eq!(
            entry.kind,
            tar::EntryType::Regular,
            "{key} is a regular file"
        );
        assert_eq!(entry.data, fs::read(path).expect("the library"), "{key}");
    }
    let extra: Vec<&str> = layout
        .paths()
        .into_iter()
        .filter(|p| !p.ends_with('/') && !["bin/echo", "etc/passwd", "etc/group"].contains(p))
        .collect();
    assert_eq!(extra.len(), needed.len(), "only ldd's files: {extra:?}");
}

#[test]
fn a_static_binary_brings_nothing_else() {
    // Debian's ldconfig is static-pie (ldd: "statically linked", exit 0).
    let ldconfig = ["/usr/sbin/ldconfig", "/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("ldconfig (Debian's libc-bin)");
    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("static.tar");
    ImageBuilder::new("weft.local/static:v1")
        .binary("/ldconfig", ldconfig)
        .write_archive(&archive)
        .expect("write");
    let layout = read_layout(&archive);
    assert_eq!(
        layout.paths(),
        ["etc/", "etc/group", "etc/passwd", "ldconfig"]
    );
}

#[test]
fn ldd_output_is_read_for_paths_only() {
    let dynamic = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibseccomp.so.2 => /lib/x86_64-linux-gnu/libseccomp.so.2 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
    assert_eq!(
        ldd::parse(dynamic).expect("parse"),
        [
            PathBuf::from("/lib/x86_64-linux-gnu/libseccomp.so.2"),
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
        ]
    );
    assert!(ldd::parse("\tstatically linked\n")
        .expect("parse")
        .is_empty());
    // Older glibc prints the vDSO with an empty target.
    assert!(ldd::parse("\tlinux-vdso.so.1 =>  (0x00007ffd)\n")
        .expect("parse")
        .is_empty());
    let missing = ldd::parse("\tlibgone.so.1 => not found\n").expect_err("a missing library");
    assert!(missing.contains("libgone.so.1"), "{missing}");
}

#[test]
fn a_script_is_not_a_binary() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = dir.path().join("run.sh");
    fs::write(&script, "#!/bin/sh\necho hi\n").expect("write the script");
    let err = ImageBuilder::new("weft.local/script:v1")
        .binary("/run.sh", &script)
        .write_archive(&dir.path().join("x.tar"))
        .expect_err("a script is refused")
        .to_string();
    assert!(
        err.contains("/run.sh") && err.contains("not an ELF"),
        "{err}"
    );
}

#[test]
fn a_file_over_the_limit_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let big = dir.path().join("big.bin");
    fs::write(&big, [0u8; 11]).expect("write the big file");
    let archive = dir.path().join("big.tar");

    let err = ImageBuilder::new("weft.local/big:v1")
        .file("/data/big.bin", &big, 0o644)
        .max_file_size(10)
        .write_archive(&archive)
        .expect_err("an 11-byte file over a 10-byte limit")
        .to_string();
    assert!(
        err.contains("big.bin") && err.contains("/data/big.bin") && err.contains("limit"),
        "{err}"
    );
    let err = ImageBuilder::new("weft.local/big:v1")
        .bytes("/data/inline.bin", [0u8; 11], 0o644)
        .max_file_size(10)
        .write_archive(&archive)
        .expect_err("11 bytes over a 10-byte limit")
        .to_string();
    assert!(err.contains("/data/inline.bin"), "{err}");
    assert!(!archive.exists(), "nothing is written for a refused image");

    ImageBuilder::new("weft.local/big:v1")
        .file("/data/big.bin", &big, 0o644)
        .max_file_size(11)
        .write_archive(&archive)
        .expect("a file at the limit is fine");
}

#[test]
fn bad_references_are_refused_with_the_reason() {
    for (reference, why) in [
        ("pause:v1", "registry host"),
        ("pause", "registry host"),
        ("weft/pause:v1", "registry host"),
        ("weft.local/pause", "no tag"),
        ("weft.local/Pause:v1", "lowercase"),
        ("weft.local/pause:", "tag"),
        ("weft.local/pause@sha256:00", "digest"),
    ] {
        let err = Reference::parse(reference).expect_err(reference);
        assert!(err.contains(why), "{reference}: {err}");
    }
    for reference in [
        "weft.local/pause:v1",
        "localhost/weft/proxy:1.0.0-dev",
        "localhost:5000/a_b/c-d:latest",
    ] {
        Reference::parse(reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
    }
}

#[test]
fn bad_paths_and_conflicts_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("x.tar");
    let cases = [
        (
            ImageBuilder::new("weft.local/x:v1").bytes("etc/relative", "", 0o644),
            "etc/relative",
        ),
        (
            ImageBuilder::new("weft.local/x:v1").bytes("/etc/../passwd", "", 0o644),
            "/etc/../passwd",
        ),
        (ImageBuilder::new("weft.local/x:v1").dir("/", 0o755), "root"),
        (
            ImageBuilder::new("weft.local/x:v1")
                .symlink("/lib", "usr/lib")
                .bytes("/lib/libx.so", "", 0o644),
            "/lib/libx.so lies under /lib",
        ),
        (
            ImageBuilder::new("weft.local/x:v1").owner("/nowhere", 1, 1),
            "/nowhere",
        ),
        (
            ImageBuilder::new("weft.local/x:v1").file("/x", dir.path(), 0o644),
            "not a regular file",
        ),
        (
            ImageBuilder::new("weft.local/x:v1").bytes("/x", "", 0o10644),
            "0o10644",
        ),
    ];
    for (image, why) in cases {
        let err = image.write_archive(&archive).expect_err(why).to_string();
        assert!(err.contains(why), "expected {why:?} in: {err}");
    }
}

#[test]
fn the_callers_passwd_is_kept() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let archive = dir.path().join("x.tar");
    ImageBuilder::new("weft.local/x:v1")
        .bytes("/etc/passwd", "root:x:0:0::/:/bin/sh\n", 0o644)
        .write_archive(&archive)
        .expect("write");
    let layout = read_layout(&archive);
    assert_eq!(layout.entry("etc/passwd").data, b"root:x:0:0::/:/bin/sh\n");
    assert!(String::from_utf8_lossy(&layout.entry("etc/group").data).contains("weft"));
}

#[test]
fn a_file_that_changes_size_while_packed_is_an_error() {
    let mut short = Exact::new(&b"abc"[..], 4);
    let mut buf = Vec::new();
    let err = short.read_to_end(&mut buf).expect_err("shrank");
    assert!(err.to_string().contains("shrank"), "{err}");
    let mut long = Exact::new(&b"abcde"[..], 4);
    let mut buf = Vec::new();
    let err = long.read_to_end(&mut buf).expect_err("grew");
    assert!(err.to_string().contains("grew"), "{err}");
    let mut exact = Exact::new(&b"abcd"[..], 4);
    let mut buf = Vec::new();
    exact.read_to_end(&mut buf).expect("exact");
    assert_eq!(buf, b"abcd");
}
