//! A `/metrics` page in the Prometheus text format, parsed into samples.

/// One sample: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, `""` when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A parsed page, with its text for messages.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses `text`; lines that are not samples are skipped.
    pub fn parse(text: &str) -> Metrics {
        Metrics {
            text: text.to_string(),
            samples: text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(parse_line)
                .collect(),
        }
    }

    /// The sample `name` with exactly `labels` (any order), if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(&str, &str)> = labels.to_vec();
        want.sort_unstable();
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == want.len()
                    && s.labels
                        .iter()
                        .zip(&want)
                        .all(|((k, v), (wk, wv))| k == wk && v == wv)
            })
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
            .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == *v))
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (mut labels, rest) = if let Some(rest) = rest.strip_prefix('{') {
        parse_labels(rest)?
    } else {
        (Vec::new(), rest)
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    labels.sort();
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` (escapes `\\`, `\"`, `\n`) and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    for _ in 0..1000 {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &rest[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\n\
             weft_requests_total{client_id=\"spiffe://cluster.local/ns/shop/sa/web\",direction=\"outbound\",tls=\"true\"} 7\n\
             weft_redirect_verified 1\n\
             weft_h_bucket{le=\"+Inf\"} 3 1700000000\n\
             odd{a=\"q\\\"uote,\"} 2\n",
        );
        let id = "spiffe://cluster.local/ns/shop/sa/web";
        assert_eq!(
            m.get(
                "weft_requests_total",
                &[
                    ("tls", "true"),
                    ("direction", "outbound"),
                    ("client_id", id)
                ]
            ),
            Some(7.0)
        );
        assert_eq!(m.get("weft_requests_total", &[("tls", "true")]), None);
        assert_eq!(m.sum("weft_requests_total", &[("tls", "true")]), 7.0);
        assert_eq!(m.get("weft_redirect_verified", &[]), Some(1.0));
        assert_eq!(m.value("weft_h_bucket", &[("le", "+Inf")]), 3.0);
        assert_eq!(m.value("odd", &[("a", "q\"uote,")]), 2.0);
        assert_eq!(m.value("absent", &[]), 0.0);
    }
}
