//! Chaining `weft-cni` into a node's CNI configuration, the way an installer (the chart's CNI
//! DaemonSet) does it: find the file the runtime reads, add Weft's plugin as the last of its
//! `plugins`, take it out again on uninstall, and leave everything else as it was.
//!
//! The runtime (libcni, as containerd and CRI-O use it) reads the first file of its config
//! directory by name that ends in `.conflist`, `.conf` or `.json`; a `.conf` holds one plugin,
//! which libcni turns into a list of one, and so does [`add`] before appending. Nothing here
//! reads or writes a file: the installer does, atomically, and only when [`Edit::changed`].

use serde_json::{Map, Value};
use thiserror::Error;

/// The `type` of Weft's plugin entry.
pub const PLUGIN_TYPE: &str = "weft-cni";

/// The largest configuration read: real ones are a few KiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// What is wrong with a node's CNI configuration or with Weft's entry.
#[derive(Debug, Error)]
pub enum ChainError {
    #[error("the CNI configuration is {0} bytes; at most {MAX_CONFIG_BYTES} are read")]
    TooLarge(usize),
    #[error("the CNI configuration is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the CNI configuration is not a JSON object")]
    NotObject,
    #[error("the CNI configuration's `plugins` is not an array of objects")]
    BadPlugins,
    #[error("the CNI configuration has neither `plugins` nor a plugin `type`: not a network configuration")]
    NotANetwork,
    #[error("Weft's entry must be a JSON object with \"type\": \"{PLUGIN_TYPE}\"")]
    BadEntry,
}

/// A configuration after an edit, and whether it differs from before (an installer rewrites the
/// file only then, so that the runtime and other watchers see no change that is not one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub config: String,
    pub changed: bool,
}

/// The file of a CNI config directory the runtime uses, by name: the first in byte order that
/// ends in `.conflist`, `.conf` or `.json` (libcni's rule).
pub fn pick<I, S>(names: I) -> Option<S>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    names
        .into_iter()
        .filter(|n| {
            let n = n.as_ref();
            !n.starts_with('.')
                && [".conflist", ".conf", ".json"]
                    .iter()
                    .any(|ext| n.len() > ext.len() && n.ends_with(ext))
        })
        .min_by(|a, b| a.as_ref().cmp(b.as_ref()))
}

/// `config` with `entry` as its last plugin, or in the place of a `weft-cni` entry already
/// there (so that adding twice changes nothing and a new entry replaces an old one).
pub fn add(config: &str, entry: &Value) -> Result<Edit, ChainError> {
    if entry.get("type").and_then(Value::as_str) != Some(PLUGIN_TYPE) || !entry.is_object() {
        return Err(ChainError::BadEntry);
    }
    let mut root = parse(config)?;
    let plugins = plugins_of(&mut root)?;
    match plugins.iter().position(is_weft) {
        Some(i) => {
            plugins[i] = entry.clone();
            // Only one: an earlier installer's duplicates go.
            let mut seen = false;
            plugins.retain(|p| !is_weft(p) || !std::mem::replace(&mut seen, true));
        }
        None => plugins.push(entry.clone()),
    }
    finish(config, root)
}

/// `config` without any `weft-cni` entry.
pub fn remove(config: &str) -> Result<Edit, ChainError> {
    let mut root = parse(config)?;
    let has_list = root.get("plugins").is_some();
    if !has_list {
        // A single plugin that is not Weft's: nothing to take out.
        return Ok(Edit {
            config: config.to_string(),
            changed: false,
        });
    }
    plugins_of(&mut root)?.retain(|p| !is_weft(p));
    finish(config, root)
}

/// Whether `config` has Weft's entry.
pub fn is_chained(config: &str) -> Result<bool, ChainError> {
    let mut root = parse(config)?;
    if root.get("plugins").is_none() {
        return Ok(root.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE));
    }
    Ok(plugins_of(&mut root)?.iter().any(is_weft))
}

fn parse(config: &str) -> Result<Map<String, Value>, ChainError> {
    if config.len() > MAX_CONFIG_BYTES {
        return Err(ChainError::TooLarge(config.len()));
    }
    match serde_json::from_str(config).map_err(ChainError::NotJson)? {
        Value::Object(map) => Ok(map),
        _ => Err(ChainError::NotObject),
    }
}

/// The `plugins` array, made from a single-plugin config first if need be (its `cniVersion` and
/// `name` stay at the top, the rest becomes the one plugin, as libcni's `ConfListFromConf`).
fn plugins_of(root: &mut Map<String, Value>) -> Result<&mut Vec<Value>, ChainError> {
    if !root.contains_key("plugins") {
        if root.get("type").and_then(Value::as_str).is_none() {
            return Err(ChainError::NotANetwork);
        }
        let mut plugin = std::mem::take(root);
        for key in ["cniVersion", "name"] {
            if let Some(v) = plugin.remove(key) {
                root.insert(key.to_string(), v);
            }
        }
        root.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    }
    match root.get_mut("plugins") {
        Some(Value::Array(plugins)) if plugins.iter().all(Value::is_object) => Ok(plugins),
        _ => Err(ChainError::BadPlugins),
    }
}

fn is_weft(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn finish(before: &str, root: Map<String, Value>) -> Result<Edit, ChainError> {
    let after = Value::Object(root);
    // Compared as JSON, not text: a file that only differs in layout is not rewritten.
    let same = serde_json::from_str::<Value>(before).is_ok_and(|b| b == after);
    if same {
        return Ok(Edit {
            config: before.to_string(),
            changed: false,
        });
    }
    let mut config = serde_json::to_string_pretty(&after).map_err(ChainError::NotJson)?;
    config.push('\n');
    Ok(Edit {
        config,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Value {
        json!({"type": "weft-cni", "kubeconfig": "/etc/cni/net.d/weft-cni.kubeconfig"})
    }

    const BRIDGE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "198.18.0.0/24"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

    fn types(config: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(config).expect("json");
        v["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| p["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn the_runtime_reads_the_first_config_by_name() {
        let names = [
            "99-other.conflist",
            "10-calico.conflist",
            "05-x.conf",
            "README",
            ".10-a.conf",
        ];
        assert_eq!(pick(names), Some("05-x.conf"));
        assert_eq!(pick(["a.txt", ".conf"]), None);
        assert_eq!(pick(["20-b.json", "30-a.conflist"]), Some("20-b.json"));
    }

    #[test]
    fn weft_goes_last_once_and_comes_out_again() {
        let added = add(BRIDGE, &entry()).expect("add");
        assert!(added.changed);
        assert_eq!(types(&added.config), ["bridge", "portmap", "weft-cni"]);
        assert!(is_chained(&added.config).expect("json"));

        let again = add(&added.config, &entry()).expect("add again");
        assert!(!again.changed, "adding twice changes nothing");
        assert_eq!(again.config, added.config);

        let newer = json!({"type": "weft-cni", "kubeconfig": "/new"});
        let replaced = add(&added.config, &newer).expect("replace");
        assert!(replaced.changed);
        assert_eq!(types(&replaced.config), ["bridge", "portmap", "weft-cni"]);
        assert!(replaced.config.contains("/new"));

        let removed = remove(&replaced.config).expect("remove");
        assert!(removed.changed);
        let original: Value = serde_json::from_str(BRIDGE).expect("json");
        let after: Value = serde_json::from_str(&removed.config).expect("json");
        assert_eq!(after, original, "everything else as it was");
        assert!(!remove(&removed.config).expect("remove").changed);
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_list() {
        let conf = r#"{"cniVersion": "0.4.0", "name": "net", "type": "bridge", "bridge": "br0"}"#;
        let added = add(conf, &entry()).expect("add");
        let v: Value = serde_json::from_str(&added.config).expect("json");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["name"], "net");
        assert_eq!(types(&added.config), ["bridge", "weft-cni"]);
        assert_eq!(v["plugins"][0]["bridge"], "br0");
        assert!(v["plugins"][0].get("name").is_none());
        // Nothing of Weft's in a plain single plugin: nothing to remove.
        assert!(!remove(conf).expect("remove").changed);
    }

    #[test]
    fn duplicates_of_an_earlier_install_are_folded_into_one() {
        let twice = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"weft-cni","a":1},{"type":"weft-cni","a":2}]}"#;
        let added = add(twice, &entry()).expect("add");
        assert_eq!(types(&added.config), ["bridge", "weft-cni"]);
    }

    #[test]
    fn bad_configs_and_entries_are_named() {
        let e = entry();
        assert!(matches!(add("{", &e), Err(ChainError::NotJson(_))));
        assert!(matches!(add("[]", &e), Err(ChainError::NotObject)));
        assert!(matches!(
            add(r#"{"name":"x"}"#, &e),
            Err(ChainError::NotANetwork)
        ));
        assert!(matches!(
            add(r#"{"plugins":{}}"#, &e),
            Err(ChainError::BadPlugins)
        ));
        assert!(matches!(
            add(r#"{"plugins":[1]}"#, &e),
            Err(ChainError::BadPlugins)
        ));
        assert!(matches!(
            add(BRIDGE, &json!({"type": "other"})),
            Err(ChainError::BadEntry)
        ));
        let huge = " ".repeat(MAX_CONFIG_BYTES + 1);
        assert!(matches!(add(&huge, &e), Err(ChainError::TooLarge(_))));
        let text = add(r#"{"plugins":{}}"#, &e).expect_err("bad").to_string();
        assert!(text.contains("`plugins`"), "{text}");
    }
}
