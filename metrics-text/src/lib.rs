//! The Prometheus text exposition format (version 0.0.4, what `/metrics` serves), parsed into
//! samples with names, labels and values, and histograms read back from their series.
//!
//! Its own crate because tests (`weft-testkit`), the lab (`weft-lab`, and so `weftctl demo`) and,
//! next, `weftctl stat` all read `/metrics`: one parser, and none of them depends on another's
//! test plumbing for it.
//!
//! Our own small parser rather than a crate: the crates.io parsers either pull in regex, chrono
//! and itertools for what is a line format, or parse OpenMetrics with a grammar generator, and
//! none is kept closely enough to be worth the weight in every test build (and in
//! `weft-bench`). This one is strict where a test wants it: a line that is not a comment, a
//! blank or a well-formed sample is an error naming the line, and so is the same series twice.
//!
//! Series can be named the way they are printed, `name{label="value",...}`: the selector is
//! parsed too, so label order and escaping do not matter.

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, fmt};

/// One sample: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries one.
    pub timestamp: Option<i64>,
}

impl Sample {
    /// The value of label `key`, `""` when absent (as Prometheus treats a missing label).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Whether the labels are exactly `labels`, in any order.
    pub fn has_exactly(&self, labels: &[(&str, &str)]) -> bool {
        self.labels.len() == labels.len() && self.has_all(labels)
    }

    /// Whether every one of `labels` is among the labels (others may be there too).
    pub fn has_all(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    }
}

/// What a `# TYPE` line says a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// A page that is not well-formed Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics page: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// A series selector (`name` or `name{k="v",...}`) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("series selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// A parsed page, with its text for messages.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
    types: BTreeMap<String, MetricType>,
    help: BTreeMap<String, String>,
}

impl fmt::Display for Metrics {
    /// The page as it was served, for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Metrics {
    /// Parses a whole page.
    pub fn parse(text: &str) -> Result<Metrics, ParseError> {
        let mut metrics = Metrics {
            text: text.to_string(),
            samples: Vec::new(),
            types: BTreeMap::new(),
            help: BTreeMap::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let error = |reason: String| ParseError {
                line: i + 1,
                text: raw.to_string(),
                reason,
            };
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                metrics.comment(comment).map_err(error)?;
                continue;
            }
            let sample = parse_sample(line).map_err(error)?;
            if !seen.insert((sample.name.clone(), sample.labels.clone())) {
                return Err(error("the same series twice".into()));
            }
            metrics.samples.push(sample);
        }
        Ok(metrics)
    }

    /// The sample `name` with exactly `labels` (any order), if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.has_exactly(labels))
            .map(|s| s.value)
    }

    /// [`Metrics::get`], 0 when absent (as a labelled counter is before its first increment).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The sum over samples `name` whose labels include `labels` (others may be present too).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Samples `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has_all(labels))
    }

    /// The sample named by `selector` as it is printed, `name` or `name{k="v",...}` (labels in
    /// any order), with exactly those labels.
    ///
    /// # Panics
    /// If `selector` does not parse: it is a literal in a test, and a typo must fail the test
    /// rather than read as "absent". [`Selector::parse`] returns the error instead.
    pub fn series(&self, selector: &str) -> Option<f64> {
        match Selector::parse(selector) {
            Ok(s) => self.get(&s.name, &s.label_refs()),
            Err(e) => panic!("{e}"),
        }
    }

    /// What the `# TYPE` line of family `name` says, if there is one.
    pub fn metric_type(&self, name: &str) -> Option<MetricType> {
        self.types.get(name).copied()
    }

    /// The `# HELP` text of family `name`, unescaped, if there is one.
    pub fn help(&self, name: &str) -> Option<&str> {
        self.help.get(name).map(String::as_str)
    }

    /// Histogram `name` whose series carry exactly `labels` (besides `le` on the buckets):
    /// its buckets, `_count` and `_sum`. `None` when it has no bucket on the page.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.name == bucket && s.labels.len() == labels.len() + 1)
            .filter(|s| s.has_all(labels))
            .filter_map(|s| {
                let le = s.labels.iter().find(|(k, _)| k == "le")?;
                Some((parse_value(&le.1)?, s.value))
            })
            .collect();
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram {
            buckets,
            count: self.value(&format!("{name}_count"), labels),
            sum: self.value(&format!("{name}_sum"), labels),
        })
    }

    /// A `#` line: `HELP` and `TYPE` are recorded, other comments skipped.
    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let mut words = comment.trim_start().splitn(3, [' ', '\t']);
        match words.next() {
            Some("TYPE") => {
                let name = words.next().ok_or("# TYPE without a metric name")?;
                check_name(name)?;
                let kind = match words.next().map(str::trim) {
                    Some("counter") => MetricType::Counter,
                    Some("gauge") => MetricType::Gauge,
                    Some("histogram") => MetricType::Histogram,
                    Some("summary") => MetricType::Summary,
                    Some("untyped") => MetricType::Untyped,
                    other => return Err(format!("unknown metric type {other:?}")),
                };
                if self.types.insert(name.to_string(), kind).is_some() {
                    return Err(format!("a second # TYPE for {name}"));
                }
            }
            Some("HELP") => {
                let name = words.next().ok_or("# HELP without a metric name")?;
                check_name(name)?;
                let text = unescape(words.next().unwrap_or(""), false)?;
                self.help.insert(name.to_string(), text);
            }
            _ => {}
        }
        Ok(())
    }
}

/// A Prometheus histogram: cumulative counts by upper bound (the last is `+Inf`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// What was observed between `before` and `self`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|b| b.0 == le)
                    .map_or(0.0, |b| b.1);
                (le, n - was)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; a quantile in the `+Inf` bucket is the largest finite bound
    /// (so "at least"). `None` with no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank && n > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (n - below));
            }
            if le.is_finite() {
                lower = le;
            }
            below = n;
        }
        Some(lower)
    }
}

/// A series named as it is printed: `name` or `name{k="v",...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
}

impl Selector {
    pub fn parse(selector: &str) -> Result<Selector, SelectorError> {
        let error = |reason: String| SelectorError {
            selector: selector.to_string(),
            reason,
        };
        let s = selector.trim();
        let (name, rest) = split_name(s).map_err(error)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(inner) => parse_labels(inner).map_err(error)?,
            None => (Vec::new(), rest),
        };
        if !rest.trim().is_empty() {
            return Err(error(format!("unexpected {rest:?} after the series")));
        }
        Ok(Selector {
            name: name.to_string(),
            labels,
        })
    }

    fn label_refs(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Label pairs, sorted by name.
type Labels = Vec<(String, String)>;

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = split_name(line)?;
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), rest),
    };
    if !rest.starts_with([' ', '\t']) {
        return Err("no space before the value".into());
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value).ok_or_else(|| format!("value {value:?} is not a number"))?;
    let timestamp = match fields.next() {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("timestamp {t:?} is not an integer"))?,
        ),
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp,
    })
}

/// The metric name at the start of `s`, and what follows it.
fn split_name(s: &str) -> Result<(&str, &str), String> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let name = &s[..end];
    check_name(name)?;
    Ok((name, &s[end..]))
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// `k="v",k2="v2"}` (an optional trailing comma, blanks around the pairs) and what follows the
/// `}`. Labels come back sorted; a label twice is an error.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            labels.sort();
            return Ok((labels, rest));
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("labels not closed with }")?;
        let key = &s[..end];
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("{key:?} is not a label name"));
        }
        let rest = s[end..].trim_start();
        let rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("label {key} has no ="))?
            .trim_start();
        let rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key}'s value is not quoted"))?;
        let close = closing_quote(rest).ok_or_else(|| format!("label {key}'s value not closed"))?;
        let value = unescape(&rest[..close], true)?;
        if labels.iter().any(|(k, _)| k == key) {
            return Err(format!("label {key} twice"));
        }
        labels.push((key.to_string(), value));
        s = rest[close + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} after label {key}"));
        }
    }
}

/// The byte index of the first unescaped `"` in `s`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Undoes the format's escapes: `\\` and `\n` everywhere, `\"` in label values only.
fn unescape(s: &str, quoted: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quoted => out.push('"'),
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// A sample value or bucket bound: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
