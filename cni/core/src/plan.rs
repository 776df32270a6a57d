//! From what is installed to what is wanted, in one `iptables-restore --noflush` transaction.
//!
//! `iptables-restore` commits a whole table at once, so an apply or a removal either happens
//! completely or not at all; the rule set is never half-installed. What it cannot do is make a
//! command conditional: `-A OUTPUT ... -j WEFT_OUTPUT` twice installs the jump twice, and `-D` of a
//! rule that is not there fails the whole transaction. So each transaction is planned from the
//! table's current state, as `iptables-save -t nat` prints it:
//!
//! - [`apply`]: declaring our chains creates them or, under `--noflush`, empties them, then their
//!   rules are added afresh; a jump is added only if it is not already there exactly, and stale or
//!   duplicate jumps to our chains are deleted. Applying twice changes nothing.
//! - [`remove`]: deletes every jump to our chains, then empties and deletes them; `None` when
//!   nothing of ours is installed, so removing twice is not an error.
//! - [`check`]: compares line by line, naming each difference.
//! - [`reinstate`]: undoes an apply, back to what `iptables-save` printed before it.
//!
//! Only our own chains ([`CHAINS`]) and jumps to them are ever touched: other rules in the table
//! (another tool's, or the kubelet's) survive every transaction.

use std::fmt::Write as _;

use crate::redirect::{RuleSet, CHAINS};

/// The `nat` table as `iptables-save` printed it: chain names and rules (`-A CHAIN ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatTable {
    pub chains: Vec<String>,
    pub rules: Vec<Rule>,
}

/// One `-A` line, with the chain and target picked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub target: Option<String>,
    /// The whole line, `-A CHAIN ...`.
    pub line: String,
}

/// Why `iptables-save` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    #[error("line {line} of the iptables-save output is not a chain or a rule: {text:?}")]
    Unexpected { line: usize, text: String },
    #[error("the nat table in the iptables-save output has no COMMIT line")]
    Unterminated,
    #[error("line {line} of the iptables-save output has an unterminated quote")]
    Quote { line: usize },
}

/// One way the installed rules differ from the wanted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    MissingChain(&'static str),
    /// The chain's rules are not the wanted ones: both lists, as `iptables-save` prints them.
    Rules {
        chain: &'static str,
        want: Vec<String>,
        have: Vec<String>,
    },
    MissingJump(String),
    /// A jump to our chains that the rule set does not hold, or a second copy of one it does.
    ExtraJump(String),
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::MissingChain(c) => write!(f, "chain {c} is missing"),
            Difference::Rules { chain, want, have } => {
                write!(
                    f,
                    "chain {chain} holds {} rules, not the {} wanted; first difference: ",
                    have.len(),
                    want.len()
                )?;
                let i = want
                    .iter()
                    .zip(have)
                    .position(|(w, h)| w != h)
                    .unwrap_or_else(|| want.len().min(have.len()));
                match (want.get(i), have.get(i)) {
                    (Some(w), Some(h)) => write!(f, "want {w:?}, have {h:?}"),
                    (Some(w), None) => write!(f, "missing {w:?}"),
                    (None, Some(h)) => write!(f, "extra {h:?}"),
                    (None, None) => write!(f, "none"),
                }
            }
            Difference::MissingJump(j) => write!(f, "jump missing: {j:?}"),
            Difference::ExtraJump(j) => write!(f, "unexpected jump: {j:?}"),
        }
    }
}

impl NatTable {
    /// Reads the `*nat` section of `iptables-save` output; no such section is an empty table
    /// (the kernel loads the table on first use).
    pub fn parse(save: &str) -> Result<Self, SaveError> {
        let mut table = NatTable::default();
        let mut inside = false;
        for (i, raw) in save.lines().enumerate() {
            let line = raw.trim_end();
            let number = i + 1;
            if !inside {
                inside = line == "*nat";
                continue;
            }
            if line == "COMMIT" {
                return Ok(table);
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split(' ').next().unwrap_or_default();
                if name.is_empty() {
                    return Err(unexpected(number, line));
                }
                table.chains.push(name.to_owned());
            } else if line.starts_with("-A ") {
                let words = words(line).ok_or(SaveError::Quote { line: number })?;
                let chain = words
                    .get(1)
                    .cloned()
                    .ok_or_else(|| unexpected(number, line))?;
                let target = words
                    .iter()
                    .position(|w| w == "-j")
                    .and_then(|j| words.get(j + 1).cloned());
                table.rules.push(Rule {
                    chain,
                    target,
                    line: line.to_owned(),
                });
            } else {
                return Err(unexpected(number, line));
            }
        }
        if inside {
            Err(SaveError::Unterminated)
        } else {
            Ok(table)
        }
    }

    fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// Rules outside our chains that jump into them.
    fn jumps_to_ours(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| {
            !CHAINS.contains(&r.chain.as_str())
                && r.target.as_deref().is_some_and(|t| CHAINS.contains(&t))
        })
    }

    fn rules_of(&self, chain: &str) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| r.line.clone())
            .collect()
    }
}

/// `iptables-restore --noflush` input that takes `current` to `want`.
pub fn apply(want: &RuleSet, current: &NatTable) -> String {
    let mut text = String::from("*nat\n");
    for (chain, _) in &want.chains {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    let mut kept = Vec::new();
    for rule in current.jumps_to_ours() {
        if want.jumps.contains(&rule.line) && !kept.contains(&&rule.line) {
            kept.push(&rule.line);
        } else {
            let _ = writeln!(text, "{}", delete(&rule.line));
        }
    }
    for (_, rules) in &want.chains {
        for rule in rules {
            let _ = writeln!(text, "{rule}");
        }
    }
    for jump in want.jumps.iter().filter(|j| !kept.contains(j)) {
        let _ = writeln!(text, "{jump}");
    }
    text.push_str("COMMIT\n");
    text
}

/// `iptables-restore --noflush` input that takes everything of ours away, or `None` if there is
/// nothing of ours.
pub fn remove(current: &NatTable) -> Option<String> {
    let mut text = String::from("*nat\n");
    let mut any = false;
    for rule in current.jumps_to_ours() {
        let _ = writeln!(text, "{}", delete(&rule.line));
        any = true;
    }
    for chain in CHAINS.iter().filter(|c| current.has_chain(c)) {
        let _ = writeln!(text, "-F {chain}\n-X {chain}");
        any = true;
    }
    text.push_str("COMMIT\n");
    any.then_some(text)
}

/// `iptables-restore --noflush` input that takes `current` back to `before` as far as our chains
/// and jumps go: the undo of an apply, when the other family's apply failed after it.
pub fn reinstate(before: &NatTable, current: &NatTable) -> String {
    let mut text = String::from("*nat\n");
    for chain in CHAINS.iter().filter(|c| before.has_chain(c)) {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in current.jumps_to_ours() {
        let _ = writeln!(text, "{}", delete(&rule.line));
    }
    for chain in CHAINS
        .iter()
        .filter(|c| current.has_chain(c) && !before.has_chain(c))
    {
        let _ = writeln!(text, "-F {chain}\n-X {chain}");
    }
    for rule in before
        .rules
        .iter()
        .filter(|r| CHAINS.contains(&r.chain.as_str()))
    {
        let _ = writeln!(text, "{}", rule.line);
    }
    for rule in before.jumps_to_ours() {
        let _ = writeln!(text, "{}", rule.line);
    }
    text.push_str("COMMIT\n");
    text
}

/// Whether `current` holds exactly `want`: our chains with exactly their rules, in order, and
/// each jump once.
pub fn check(want: &RuleSet, current: &NatTable) -> Result<(), Vec<Difference>> {
    let mut differences = Vec::new();
    for (chain, rules) in &want.chains {
        if !current.has_chain(chain) {
            differences.push(Difference::MissingChain(chain));
            continue;
        }
        let have = current.rules_of(chain);
        if &have != rules {
            differences.push(Difference::Rules {
                chain,
                want: rules.clone(),
                have,
            });
        }
    }
    let mut seen: Vec<&String> = Vec::new();
    for rule in current.jumps_to_ours() {
        if want.jumps.contains(&rule.line) && !seen.contains(&&rule.line) {
            seen.push(&rule.line);
        } else {
            differences.push(Difference::ExtraJump(rule.line.clone()));
        }
    }
    for jump in want.jumps.iter().filter(|j| !seen.contains(j)) {
        differences.push(Difference::MissingJump(jump.clone()));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(differences)
    }
}

fn delete(line: &str) -> String {
    format!("-D{}", line.strip_prefix("-A").unwrap_or(line))
}

fn unexpected(line: usize, text: &str) -> SaveError {
    SaveError::Unexpected {
        line,
        text: text.chars().take(200).collect(),
    }
}

/// Splits a rule into words as iptables-save quotes them: `"..."` groups, `\"` and `\\` escape.
fn words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            '\\' if quoted => word.push(chars.next()?),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if started {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests;
