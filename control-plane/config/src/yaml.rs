//! The text of Kubernetes YAML files (several documents per file allowed), read into the same
//! typed objects the Kubernetes source watches.
//!
//! Every document that fails to parse or validate is refused with its file, document index,
//! field and reason, and any refusal refuses the whole read: the caller gets a snapshot or
//! every problem, never a half. Kinds this control plane does not use yet are skipped, not
//! refused; a kind it reads, written in a version it does not (`HTTPRoute` of
//! `gateway.networking.k8s.io/v1alpha2`), is refused rather than silently skipped.
//!
//! Kinds read: `v1` Service and Pod, `discovery.k8s.io/v1` EndpointSlice,
//! `gateway.networking.k8s.io/v1` and `v1beta1` HTTPRoute and ReferenceGrant,
//! `split.smi-spec.io/v1alpha4` and `v1alpha2` TrafficSplit, `weft.dev/v1alpha1` HTTPFault.
//!
//! Reading the files is the caller's (the control plane's local source); this module
//! only sees their text.
//!
//! YAML is read with serde_yaml (multi-document streams, the same serde path the Kubernetes
//! types use; upstream is in maintenance, which for a parser of a settled format is acceptable)
//! and every typed document through serde_path_to_error, so a type error names its field.
//!
//! A folder read again after an edit parses only what changed ([`Reader::read_cached`] with a
//! [`ParseCache`]): a file's text is cut at its document markers (a line starting `---`, which
//! YAML never allows inside a document), and each piece's typed objects are kept by its text,
//! so a one-Service edit in a file of a thousand parses one document. The snapshot itself is
//! rebuilt from the typed objects every time (they are shared, not copied), so the checks
//! across documents (duplicates, references) always see the whole folder.

use std::{
    collections::HashMap,
    fmt,
    ops::ControlFlow,
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde::de::DeserializeOwned;

use crate::{
    gateway::{HttpRoute, ReferenceGrant},
    model::{key, problem, Key, Problem, Snapshot},
    routes,
    smi::TrafficSplit,
};

/// Most documents one [`Reader`] reads, over all its files.
const MAX_DOCUMENTS: usize = 100_000;

/// One refused document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub file: PathBuf,
    /// Position of the document in its file, from 0.
    pub document: usize,
    /// The field at fault (`spec.ports[0].port`), empty when the document as a whole is.
    pub field: String,
    pub reason: String,
}

/// Files' texts read one after another into one snapshot, with one bound on their documents.
#[derive(Debug, Default)]
pub struct Reader {
    snapshot: Snapshot,
    errors: Vec<DocError>,
    documents: usize,
    /// Where each HTTPRoute was read, to name it if the folder as a whole refuses it.
    route_origins: HashMap<Key, (PathBuf, usize)>,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file.display(), self.document)?;
        if !self.field.is_empty() {
            write!(f, " field {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl Reader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the documents of `file`'s `text` to the snapshot, their problems to the errors.
    /// `Break` when the bound on documents was passed: reading stops there, refused.
    pub fn read(&mut self, file: &Path, text: &str) -> ControlFlow<()> {
        for (index, doc) in documents(text).enumerate() {
            self.documents += 1;
            if self.documents > MAX_DOCUMENTS {
                self.errors.push(doc_error(
                    file,
                    index,
                    "",
                    format!("more than {MAX_DOCUMENTS} documents in the folder"),
                ));
                return ControlFlow::Break(());
            }
            let value = match doc {
                Ok(v) => v,
                Err(reason) => {
                    self.errors.push(doc_error(file, index, "", reason));
                    continue; // the last item: `documents` ends at a syntax error
                }
            };
            let object = object(value);
            self.add_typed(file, index, object.as_ref());
        }
        ControlFlow::Continue(())
    }

    /// [`Reader::read`], with the typed objects of every piece of `text` that `cache` has seen
    /// before taken from it rather than parsed again. The same snapshot and the same errors:
    /// a file with a syntax error anywhere is read whole by [`Reader::read`], so the error's
    /// line is the file's.
    pub fn read_cached(
        &mut self,
        file: &Path,
        text: &str,
        cache: &mut ParseCache,
    ) -> ControlFlow<()> {
        let generation = cache.generation;
        let mut pieces: Vec<u64> = Vec::new();
        let mut documents = 0;
        let all: Vec<&str> = pieces_of(text).collect();
        // Up front and at most as many as the document bound lets this file read.
        let bound = all
            .len()
            .min(MAX_DOCUMENTS.saturating_sub(self.documents) + 1);
        cache.parse_new(&all[..bound], generation);
        for (i, piece) in all.iter().enumerate() {
            // Comments before the first marker belong to the first document, which the
            // marker opens; alone, they would read as an empty document of their own.
            if i == 0 && all.len() > 1 && only_comments(piece) {
                continue;
            }
            let id = cache.find_or_parse(piece, generation);
            let entry = &cache.pieces[&id].1;
            if entry.syntax_error {
                return self.read(file, text);
            }
            documents += entry.objects.len();
            pieces.push(id);
            if self.documents + documents > MAX_DOCUMENTS {
                // Past the bound: read it as it always was, refused at the same document.
                return self.read(file, text);
            }
        }
        let mut index = 0;
        for id in pieces {
            for object in &cache.pieces[&id].1.objects {
                self.documents += 1;
                self.add_typed(file, index, object.as_ref());
                index += 1;
            }
        }
        ControlFlow::Continue(())
    }

    /// Adds one document's typed object (or its problem) as document `index` of `file`.
    fn add_typed(&mut self, file: &Path, index: usize, object: Result<&Option<Object>, &Problem>) {
        let added = match object {
            Ok(None) => Ok(None),
            Ok(Some(o)) => o.add_to(&mut self.snapshot),
            Err(e) => Err(e.clone()),
        };
        match added {
            Ok(Some(route)) => {
                self.route_origins
                    .insert(route, (file.to_path_buf(), index));
            }
            Ok(None) => {}
            Err(e) => self.errors.push(DocError {
                file: file.to_path_buf(),
                document: index,
                field: e.field,
                reason: e.reason,
            }),
        }
    }

    /// Refuses `file` as a whole (it could not be read, or is not text), as its document 0.
    pub fn refuse(&mut self, file: &Path, reason: String) {
        self.errors.push(doc_error(file, 0, "", reason));
    }

    /// The snapshot, if nothing was refused; else every problem.
    ///
    /// Once every document is read, the references between them are checked too: an
    /// HTTPRoute whose backend the folder does not permit it to reference (another namespace
    /// without a ReferenceGrant, or not a Service) is refused here, by its file and document.
    /// The Kubernetes source takes such a route and marks its backend invalid instead
    /// ([`routes`]): a folder is one author's change, refused whole so the author sees the
    /// mistake at once; a cluster is many writers, where one route must not hold up others.
    pub fn finish(mut self) -> Result<Snapshot, Vec<DocError>> {
        if self.errors.is_empty() {
            for (route, field, reason) in routes::reference_problems(&self.snapshot) {
                let (file, document) = self
                    .route_origins
                    .remove(&route)
                    .unwrap_or_else(|| (PathBuf::new(), 0));
                self.errors.push(DocError {
                    file,
                    document,
                    field,
                    reason,
                });
            }
        }
        if self.errors.is_empty() {
            Ok(self.snapshot)
        } else {
            Err(self.errors)
        }
    }
}

/// Reads one file's text as a folder's files are read, alone: for tests and the fuzz target.
pub fn load_text(file: &Path, text: &str) -> Result<Snapshot, Vec<DocError>> {
    let mut reader = Reader::new();
    let _ = reader.read(file, text);
    reader.finish()
}

/// The documents of one file's text, in order, each as a YAML value or why it is not YAML
/// (`not YAML: ...`). A syntax error is the last item: nothing after it can be read reliably.
/// What the control plane's reader and the lab's folder reader (`weft-lab`) both read files
/// with, so they split and parse a file alike.
pub fn documents(text: &str) -> impl Iterator<Item = Result<serde_yaml::Value, String>> + '_ {
    let mut failed = false;
    serde_yaml::Deserializer::from_str(text).map_while(move |doc| {
        if failed {
            return None;
        }
        let value: Result<serde_yaml::Value, _> = serde::Deserialize::deserialize(doc);
        failed = value.is_err();
        Some(value.map_err(|e| format!("not YAML: {e}")))
    })
}

fn doc_error(file: &Path, document: usize, field: &str, reason: String) -> DocError {
    DocError {
        file: file.to_path_buf(),
        document,
        field: field.to_string(),
        reason,
    }
}

/// Adds one document's object; `Some` with its key when it is an HTTPRoute (tests build
/// snapshots document by document with it).
#[cfg(test)]
pub(crate) fn add(
    snapshot: &mut Snapshot,
    value: serde_yaml::Value,
) -> Result<Option<Key>, Problem> {
    match object(value)? {
        Some(o) => o.add_to(snapshot),
        None => Ok(None),
    }
}

/// One document's object, typed: what a snapshot is built from.
#[derive(Debug, Clone)]
pub enum Object {
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Pod(Arc<Pod>),
    HttpRoute(Arc<HttpRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
    HttpFault(Arc<crate::fault::HttpFault>),
    TrafficSplit(Arc<TrafficSplit>),
}

impl Object {
    /// Adds it to `snapshot` (checked there, duplicates refused); `Some` with its key when it
    /// is an HTTPRoute.
    fn add_to(&self, snapshot: &mut Snapshot) -> Result<Option<Key>, Problem> {
        match self {
            Object::Service(o) => snapshot.add_service(o.clone())?,
            Object::EndpointSlice(o) => snapshot.add_endpoint_slice(o.clone())?,
            Object::Pod(o) => snapshot.add_pod(o.clone())?,
            Object::HttpRoute(o) => {
                let route_key = key(&o.metadata)?;
                snapshot.add_http_route(o.clone())?;
                return Ok(Some(route_key));
            }
            Object::ReferenceGrant(o) => snapshot.add_reference_grant(o.clone())?,
            Object::HttpFault(o) => snapshot.add_http_fault(o.clone())?,
            Object::TrafficSplit(o) => snapshot.add_traffic_split(o.clone())?,
        }
        Ok(None)
    }
}

/// One document's typed object; `None` for an empty document or a kind not read.
fn object(value: serde_yaml::Value) -> Result<Option<Object>, Problem> {
    if value.is_null() {
        return Ok(None); // an empty document (a trailing `---`)
    }
    let text = |field: &str| {
        value
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let api_version = text("apiVersion").ok_or_else(|| problem("apiVersion", "missing"))?;
    let kind = text("kind").ok_or_else(|| problem("kind", "missing"))?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let refuse_version = |versions: &str| {
        Err(problem(
            "apiVersion",
            format!("{api_version}: {kind} is read as {group}/{versions}"),
        ))
    };
    Ok(Some(match (group, kind.as_str()) {
        ("", "Service") if version == "v1" => Object::Service(Arc::new(typed(value)?)),
        ("discovery.k8s.io", "EndpointSlice") if version == "v1" => {
            Object::EndpointSlice(Arc::new(typed(value)?))
        }
        ("", "Pod") if version == "v1" => Object::Pod(Arc::new(typed(value)?)),
        (crate::gateway::GROUP, "HTTPRoute") => {
            if !matches!(version, "v1" | "v1beta1") {
                return refuse_version("v1 or v1beta1");
            }
            Object::HttpRoute(Arc::new(typed(value)?))
        }
        (crate::gateway::GROUP, "ReferenceGrant") => {
            if !matches!(version, "v1" | "v1beta1") {
                return refuse_version("v1beta1 or v1");
            }
            Object::ReferenceGrant(Arc::new(typed(value)?))
        }
        (crate::fault::GROUP, "HTTPFault") => {
            if version != "v1alpha1" {
                return refuse_version("v1alpha1");
            }
            Object::HttpFault(Arc::new(typed(value)?))
        }
        (crate::smi::GROUP, "TrafficSplit") => {
            if !matches!(version, "v1alpha4" | "v1alpha2") {
                return refuse_version("v1alpha4 or v1alpha2");
            }
            Object::TrafficSplit(Arc::new(typed(value)?))
        }
        _ => return Ok(None),
    }))
}

/// The typed objects of pieces of files' texts, kept by their text between reads of a folder,
/// so a read after an edit parses only the pieces that changed; many new pieces (an edit of
/// every Service) are parsed on two threads, the reader's and one scoped helper. What a read
/// did not use goes at the next [`ParseCache::sweep`]: the cache holds one folder's pieces at
/// most.
#[derive(Debug, Default)]
pub struct ParseCache {
    /// By the piece's hash: its text and what it holds.
    pieces: HashMap<u64, (Box<str>, Piece)>,
    generation: u64,
    parsed: u64,
    reused: u64,
}

#[derive(Debug)]
struct Piece {
    objects: Vec<Result<Option<Object>, Problem>>,
    /// It is not YAML (from some document on): its file is read whole instead.
    syntax_error: bool,
    /// The last read that used it.
    used: u64,
    /// The read that parsed it: using it then is not a reuse.
    parsed_in: u64,
}

impl ParseCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pieces parsed and pieces reused, since the cache was made.
    pub fn counts(&self) -> (u64, u64) {
        (self.parsed, self.reused)
    }

    /// Pieces held.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Ends a read: the pieces it did not use are dropped.
    pub fn sweep(&mut self) {
        let generation = self.generation;
        self.pieces.retain(|_, (_, p)| p.used == generation);
        self.generation += 1;
    }

    /// Where `text`'s piece is, or the free id it would take.
    fn slot(&self, text: &str) -> (u64, bool) {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let mut id: u64 =
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(text);
        // A different text under the same hash (never seen, but cheap to rule out): probe on.
        loop {
            match self.pieces.get(&id) {
                Some((held, _)) if **held == *text => return (id, true),
                Some(_) => id = id.wrapping_add(1),
                None => return (id, false),
            }
        }
    }

    /// The id of `text`'s piece, parsed now if it is new.
    fn find_or_parse(&mut self, text: &str, generation: u64) -> u64 {
        let (id, held) = self.slot(text);
        if held {
            if let Some((_, piece)) = self.pieces.get_mut(&id) {
                if piece.parsed_in != generation {
                    self.reused += 1;
                }
                piece.used = generation;
            }
            return id;
        }
        self.insert(id, text, parse_piece(text), generation);
        id
    }

    fn insert(&mut self, id: u64, text: &str, piece: ParsedPiece, generation: u64) {
        self.parsed += 1;
        self.pieces.insert(
            id,
            (
                text.into(),
                Piece {
                    objects: piece.objects,
                    syntax_error: piece.syntax_error,
                    used: generation,
                    parsed_in: generation,
                },
            ),
        );
    }

    /// Parses the pieces of `texts` the cache does not hold, on two threads when there are at
    /// least [`PARALLEL_PIECES`] (an edit of every Service parses a thousand slices, and
    /// nothing else runs until they are read). Pieces it leaves (few, or the helper thread
    /// failed) are parsed one by one as they are met.
    fn parse_new(&mut self, texts: &[&str], generation: u64) {
        let mut new: Vec<&str> = texts.iter().copied().filter(|t| !self.slot(t).1).collect();
        new.sort_unstable();
        new.dedup();
        if new.len() < PARALLEL_PIECES {
            return;
        }
        let (first, second) = new.split_at(new.len() / 2);
        let parse_all =
            |texts: &[&str]| -> Vec<ParsedPiece> { texts.iter().map(|t| parse_piece(t)).collect() };
        let (mine, theirs) = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("weft-config-parse".into())
                .spawn_scoped(scope, || parse_all(second));
            let mine = parse_all(first);
            (mine, helper.ok().and_then(|h| h.join().ok()))
        });
        for (text, piece) in first.iter().zip(mine) {
            let (id, _) = self.slot(text);
            self.insert(id, text, piece, generation);
        }
        if let Some(theirs) = theirs {
            for (text, piece) in second.iter().zip(theirs) {
                let (id, _) = self.slot(text);
                self.insert(id, text, piece, generation);
            }
        }
    }
}

/// New pieces at least this many are parsed on two threads.
const PARALLEL_PIECES: usize = 64;

/// One piece's documents, typed.
struct ParsedPiece {
    objects: Vec<Result<Option<Object>, Problem>>,
    syntax_error: bool,
}

fn parse_piece(text: &str) -> ParsedPiece {
    let mut objects = Vec::new();
    let mut syntax_error = false;
    for doc in documents(text).take(MAX_DOCUMENTS + 1) {
        match doc {
            Ok(value) => objects.push(object(value)),
            Err(_) => syntax_error = true,
        }
    }
    ParsedPiece {
        objects,
        syntax_error,
    }
}

/// Whether `text` holds nothing but blank lines and comments.
fn only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// `text` cut before each document marker: a line that is `---` alone or followed by a space
/// or tab (YAML forbids such a line inside a document, block scalars included). The first piece
/// is what precedes the first marker (often nothing); each other starts with its marker.
fn pieces_of(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        // The next marker after the start of `rest` (a marker at 0 begins this piece).
        let mut search = 0;
        let cut = loop {
            let Some(found) = rest[search..].find("\n---") else {
                break None;
            };
            let at = search + found + 1;
            let after = rest.as_bytes().get(at + 3).copied();
            if matches!(after, None | Some(b'\n' | b'\r' | b' ' | b'\t')) {
                break Some(at);
            }
            search = at;
        };
        match cut {
            Some(at) => {
                let piece = &rest[..at];
                rest = &rest[at..];
                Some(piece)
            }
            None => {
                done = true;
                Some(rest)
            }
        }
    })
}

/// `value` as the typed object `T`, a type error naming its field (`spec.ports[0].port`).
pub fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        Problem {
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests;
