//! The names Kubernetes controllers generate, made deterministic: the same folder always gives
//! the same names, so a reload keeps every pod (and its address, and its running namespace).
//!
//! - A Deployment's pod is `<deployment>-<pod-template-hash>-<5 chars>`, as the ReplicaSet
//!   controller names it (`generateName: <replicaset>-`, the base cut to 58 characters so the
//!   name stays within 63). The hash here is of the namespace and the Deployment's name, not of
//!   its template: editing the template changes the pods in place rather than replacing them.
//! - A derived EndpointSlice is `<service>-<5 chars>`, as the EndpointSlice controller names it.
//!
//! The characters are those of Kubernetes' `rand.String`: consonants and digits that cannot
//! spell words or be confused (`bcdfghjklmnpqrstvwxz2456789`). The hash is 64-bit FNV-1a, fixed
//! here (not `std`'s hasher, whose output may change between Rust releases).

/// Kubernetes' `rand.String` alphabet.
pub const ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `generateName` keeps at most this much of the base (63 less the 5 characters).
pub const MAX_GENERATED_BASE: usize = 58;

/// A Deployment's pod-template-hash: 10 characters of [`ALPHABET`].
pub fn template_hash(namespace: &str, deployment: &str) -> String {
    encode(fnv1a(&[namespace, deployment]), 10)
}

/// The ReplicaSet's name: `<deployment>-<template_hash>`.
pub fn replica_set(namespace: &str, deployment: &str) -> String {
    format!("{deployment}-{}", template_hash(namespace, deployment))
}

/// `base` (cut to [`MAX_GENERATED_BASE`]) followed by 5 characters drawn from `seed` and
/// `attempt`: a caller that finds the name taken asks again with the next attempt.
pub fn generate(base: &str, seed: &[&str], attempt: u32) -> String {
    let attempt = attempt.to_string();
    let mut parts: Vec<&str> = seed.to_vec();
    parts.push(&attempt);
    // Names are ASCII (DNS characters), so a byte cut is a character cut.
    let base = base.get(..MAX_GENERATED_BASE).unwrap_or(base);
    format!("{base}{}", encode(fnv1a(&parts), 5))
}

/// 64-bit FNV-1a over the parts, each followed by a 0 byte (so `("ab", "c")` and `("a", "bc")`
/// differ).
fn fnv1a(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// `n` characters of [`ALPHABET`] from `h` (27^10 < 2^64, so 10 characters use distinct
/// digits of `h`).
fn encode(mut h: u64, n: usize) -> String {
    let base = ALPHABET.len() as u64;
    (0..n)
        .map(|_| {
            let c = ALPHABET[(h % base) as usize];
            h /= base;
            char::from(c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_look_like_the_controllers_and_do_not_change() {
        let hash = template_hash("shop", "web");
        assert_eq!(hash.len(), 10);
        assert!(hash.bytes().all(|b| ALPHABET.contains(&b)), "{hash}");
        assert_eq!(hash, template_hash("shop", "web"), "deterministic");
        assert_ne!(hash, template_hash("shop", "api"));
        assert_ne!(hash, template_hash("shop2", "web"));
        // Fixed values: a change here renames every lab pod of every user's folder.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&["a"]), fnv1a(&["a"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        let pod = generate(&format!("{}-", replica_set("shop", "web")), &["x"], 0);
        assert!(pod.starts_with(&format!("web-{hash}-")), "{pod}");
        assert_eq!(pod.len(), "web-".len() + 10 + 1 + 5);
        assert_ne!(pod, generate(&format!("web-{hash}-"), &["x"], 1));
    }

    #[test]
    fn a_long_base_is_cut_so_the_name_fits_a_label() {
        let base = format!("{}-", "a".repeat(70));
        let name = generate(&base, &["s"], 0);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"a".repeat(58)));
    }
}
