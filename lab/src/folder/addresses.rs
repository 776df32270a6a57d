//! Pod and Service addresses: the ones the folder asks for when they lie in the lab's pools,
//! else the ones they had before, else the lowest free ones.
//!
//! The rules, in order (each object in folder order):
//! 1. An object that had an address before ([`Addresses`], from the last read) and does not ask
//!    for another keeps it: an edit never moves a running pod or a Service clients know.
//! 2. An object asking for an address in the pool gets it, unless another object holds it
//!    (from rule 1, or asked first): then it is refused, naming both, as the API server refuses
//!    a cluster IP that is already allocated. An address outside the pool is noted and replaced.
//! 3. Every other object gets the lowest free address, preferring one no object held before,
//!    so a pod removed in this edit does not hand its address straight to a new one while its
//!    old endpoints may still be in flight. An empty pool refuses the object.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
};

use super::{DocError, Key, Origin};
use crate::cluster::{FIRST_SERVICE_IP, GATEWAY, POD_SUBNET};

/// A range of addresses the lab hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The subnet the range lies in, for messages.
    pub subnet: &'static str,
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

/// Pod addresses: on the bridge's subnet, above the gateway ([`GATEWAY`], `.1`, the node) and
/// the addresses kept free for the lab (`.2` to `.9`), below the broadcast address.
pub const POD_POOL: Pool = Pool {
    subnet: POD_SUBNET,
    first: Ipv4Addr::new(198, 18, 0, 10),
    last: Ipv4Addr::new(198, 18, 0, 254),
};

/// Service cluster IPs: held by no interface, only by the control plane's config.
pub const SERVICE_POOL: Pool = Pool {
    subnet: "198.19.0.0/24",
    first: FIRST_SERVICE_IP,
    last: Ipv4Addr::new(198, 19, 0, 254),
};

// The node's address is never a pod's.
const _: () = assert!(GATEWAY.to_bits() < POD_POOL.first.to_bits());

/// The addresses in force after a read, to keep in the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    pub pods: BTreeMap<Key, Ipv4Addr>,
    pub services: BTreeMap<Key, Ipv4Addr>,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// The address if it is an IPv4 address of this pool.
    fn holds(&self, ip: IpAddr) -> Option<Ipv4Addr> {
        match ip.to_canonical() {
            IpAddr::V4(v4) if self.contains(v4) => Some(v4),
            _ => None,
        }
    }

    /// How many addresses it holds.
    pub fn size(&self) -> usize {
        (self.last.to_bits() - self.first.to_bits() + 1) as usize
    }

    fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (self.first.to_bits()..=self.last.to_bits()).map(Ipv4Addr::from_bits)
    }
}

/// One object wanting an address.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) key: Key,
    /// `pod shop/web`, `Service shop/api`: how messages name it.
    pub(crate) what: String,
    pub(crate) origin: Origin,
    /// The field that asks for an address (`status.podIP`), or where a refusal points.
    pub(crate) field: String,
    /// The address the document asks for, if any.
    pub(crate) requested: Option<IpAddr>,
}

/// What [`assign`] decided.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    pub(crate) addresses: BTreeMap<Key, Ipv4Addr>,
    /// Claims that got no address.
    pub(crate) refused: Vec<(Key, DocError)>,
    pub(crate) notes: Vec<DocError>,
}

/// Gives each claim an address from `pool`, keeping `previous` ones; see the module's rules.
pub(crate) fn assign(
    claims: &[Claim],
    previous: &BTreeMap<Key, Ipv4Addr>,
    pool: &Pool,
) -> Assignment {
    let mut out = Assignment::default();
    // Address -> (index of the claim holding it, whether it holds it from before).
    let mut held: HashMap<Ipv4Addr, (usize, bool)> = HashMap::new();
    let mut requested = Vec::with_capacity(claims.len());
    for claim in claims {
        let wanted = claim.requested.and_then(|ip| {
            let inside = pool.holds(ip);
            if inside.is_none() {
                out.notes.push(DocError {
                    file: claim.origin.file.clone(),
                    document: claim.origin.document,
                    field: claim.field.clone(),
                    reason: format!(
                        "{ip} is outside the lab's {} to {} ({}); {} gets an address from there",
                        pool.first, pool.last, pool.subnet, claim.what
                    ),
                });
            }
            inside
        });
        requested.push(wanted);
    }
    // Rule 1.
    for (i, claim) in claims.iter().enumerate() {
        let Some(ip) = previous.get(&claim.key).copied() else {
            continue;
        };
        if pool.contains(ip) && requested[i].is_none_or(|r| r == ip) {
            held.entry(ip).or_insert((i, true));
        }
    }
    // Rule 2.
    for (i, claim) in claims.iter().enumerate() {
        let Some(ip) = requested[i] else { continue };
        match held.get(&ip) {
            Some((j, _)) if *j == i => {}
            Some((j, before)) => {
                let holder = &claims[*j];
                let how = if *before {
                    "has had it since an earlier read"
                } else {
                    "asks for it first"
                };
                out.refused.push((
                    claim.key.clone(),
                    DocError {
                        file: claim.origin.file.clone(),
                        document: claim.origin.document,
                        field: claim.field.clone(),
                        reason: format!(
                            "{ip} is asked for twice: {} wants it, and {} ({} document {}) {how}; \
                             remove one or pick a free address in {}",
                            claim.what,
                            holder.what,
                            holder.origin.file.display(),
                            holder.origin.document,
                            pool.subnet
                        ),
                    },
                ));
            }
            None => {
                held.insert(ip, (i, false));
            }
        }
    }
    let refused: BTreeSet<Key> = out.refused.iter().map(|(k, _)| k.clone()).collect();
    // Rule 3, from the lowest address, those no object held before first.
    let before: BTreeSet<Ipv4Addr> = previous.values().copied().collect();
    let mut free = pool
        .iter()
        .filter(|ip| !held.contains_key(ip) && !before.contains(ip))
        .chain(
            pool.iter()
                .filter(|ip| !held.contains_key(ip) && before.contains(ip)),
        );
    let mut mine: HashMap<usize, Ipv4Addr> = held.iter().map(|(ip, (i, _))| (*i, *ip)).collect();
    for (i, claim) in claims.iter().enumerate() {
        if refused.contains(&claim.key) || mine.contains_key(&i) {
            continue;
        }
        match free.next() {
            Some(ip) => {
                mine.insert(i, ip);
            }
            None => out.refused.push((
                claim.key.clone(),
                DocError {
                    file: claim.origin.file.clone(),
                    document: claim.origin.document,
                    field: claim.field.clone(),
                    reason: format!(
                        "no free address left for {} in {} (the lab gives {} to {}, {} addresses)",
                        claim.what,
                        pool.subnet,
                        pool.first,
                        pool.last,
                        pool.size()
                    ),
                },
            )),
        }
    }
    out.addresses = mine
        .into_iter()
        .map(|(i, ip)| (claims[i].key.clone(), ip))
        .collect();
    out
}
