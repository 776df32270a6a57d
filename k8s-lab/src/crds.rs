//! The CRD cases: objects the API server must accept (`valid/`) or refuse (`invalid/`) once the
//! CRDs of `scripts/k8s-crds.sh` are applied, from `k8s-lab/tests/crd-cases/`.
//!
//! A case is one YAML file holding one document. An invalid case opens with the line
//! `# expect: <text>`, the text the API server's refusal must contain (a field path such as
//! `spec.abort.percent`, or a CEL rule's message), so a case refused for another reason than the
//! one it was written for fails. `scripts/check-crds.sh` runs the same folders against a
//! throwaway API server; the k8s tier's tests run them on the cluster.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// The most case files one folder may hold.
pub const MAX_CASES: usize = 256;
/// The largest case file read, in bytes.
pub const MAX_CASE_BYTES: u64 = 64 * 1024;
/// The line an invalid case starts with, followed by the text its refusal must contain.
pub const EXPECT_PREFIX: &str = "# expect:";

/// One object to submit to the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The case's file, as found in the folder read.
    pub file: PathBuf,
    /// The whole file, its comment lines included (the API server ignores them).
    pub yaml: String,
    /// For an invalid case, the text the API server's refusal must contain; `None` for a valid
    /// case, which the API server must accept.
    pub expect: Option<String>,
}

/// Which folder a case comes from, by the folder's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Valid,
    Invalid,
}

/// The cases of `dir`, a folder named `valid` or `invalid`: each `*.yaml` file in it (other files
/// and sub-folders are left alone), sorted by file name. Every case of `invalid/` must open with
/// `# expect: <text>` and no case of `valid/` may; a folder with no case, more than
/// [`MAX_CASES`] cases, a file over [`MAX_CASE_BYTES`], a file of several YAML documents or one
/// that is not UTF-8 is an error naming the file.
pub fn cases(dir: &Path) -> Result<Vec<Case>> {
    let kind = match dir.file_name().and_then(|n| n.to_str()) {
        Some("valid") => Kind::Valid,
        Some("invalid") => Kind::Invalid,
        _ => {
            return Err(Error::Case {
                file: dir.to_path_buf(),
                reason: "a folder of CRD cases is named valid or invalid, which says whether the \
                         API server must accept or refuse its objects"
                    .into(),
            })
        }
    };
    let read_dir = format!("reading the CRD case folder {}", dir.display());
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(&read_dir))? {
        let path = entry.map_err(Error::io(&read_dir))?.path();
        if path.extension().is_some_and(|e| e == "yaml") && path.is_file() {
            files.push(path);
            if files.len() > MAX_CASES {
                return Err(Error::Case {
                    file: dir.to_path_buf(),
                    reason: format!("more than {MAX_CASES} *.yaml files; split the folder"),
                });
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Case {
            file: dir.to_path_buf(),
            reason: "no *.yaml case in it (is it the right folder?)".into(),
        });
    }
    files.sort();
    files
        .into_iter()
        .map(|file| read_case(file, kind))
        .collect()
}

/// Reads and checks one case file.
fn read_case(file: PathBuf, kind: Kind) -> Result<Case> {
    let bad = |reason: String| Error::Case {
        file: file.clone(),
        reason,
    };
    let what = format!("reading the CRD case {}", file.display());
    let len = fs::metadata(&file).map_err(Error::io(&what))?.len();
    if len > MAX_CASE_BYTES {
        return Err(bad(format!(
            "{len} bytes, more than the {MAX_CASE_BYTES} a case may have"
        )));
    }
    let bytes = fs::read(&file).map_err(Error::io(&what))?;
    let yaml = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    if let Some(line) = second_document(&yaml) {
        return Err(bad(format!(
            "line {line} starts a second YAML document; a case is one object, one file"
        )));
    }
    let expect = expectation(&yaml).map_err(bad)?;
    match (kind, &expect) {
        (Kind::Invalid, None) => Err(bad(format!(
            "an invalid case opens with the line `{EXPECT_PREFIX} <text the API server's \
             refusal must contain>`, e.g. `{EXPECT_PREFIX} spec.abort.percent`"
        ))),
        (Kind::Valid, Some(_)) => Err(bad(format!(
            "a valid case has no `{EXPECT_PREFIX}` line (the API server must accept it); \
             move it to invalid/ or drop the line"
        ))),
        _ => Ok(Case { file, yaml, expect }),
    }
}

/// The text of the first line's `# expect:`, if the file opens with one.
fn expectation(yaml: &str) -> std::result::Result<Option<String>, String> {
    let first = yaml.lines().next().unwrap_or_default();
    let Some(text) = first.strip_prefix(EXPECT_PREFIX) else {
        return Ok(None);
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "`{EXPECT_PREFIX}` with no text after it: name what the refusal must contain"
        ));
    }
    Ok(Some(text.to_string()))
}

/// The 1-based line of a `---` separator that follows content, i.e. starts a second document.
fn second_document(yaml: &str) -> Option<usize> {
    let mut content = false;
    for (i, line) in yaml.lines().enumerate() {
        let line = line.trim_end();
        if line == "---" || line.starts_with("--- ") {
            if content {
                return Some(i + 1);
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            content = true;
        }
    }
    None
}

#[cfg(test)]
mod tests;
