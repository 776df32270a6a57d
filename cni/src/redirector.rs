//! Applying, removing and checking the rule set in the current network namespace, both families.
//!
//! Each family is one `iptables-restore` transaction. If IPv6 fails after IPv4 succeeded, IPv4
//! is put back as it was, so a pod never keeps half of a rule set.

use weft_cni_core::{
    plan::{self, Difference, NatTable},
    redirect::RedirectError,
    Family, Redirect,
};

use crate::iptables::{Iptables, IptablesError};

/// Whether to write IPv6 rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6 {
    /// When the kernel has IPv6 (`/proc/net/if_inet6` exists).
    #[default]
    Auto,
    On,
    Off,
}

/// Why the rule set could not be applied, removed or checked.
#[derive(Debug, thiserror::Error)]
pub enum RedirectorError {
    #[error(transparent)]
    Config(#[from] RedirectError),
    #[error("{family}: {source}")]
    Iptables {
        family: Family,
        source: IptablesError,
    },
    #[error("{family}: {source}; the {first} rules were put back as they were")]
    RolledBack {
        family: Family,
        first: Family,
        source: IptablesError,
    },
    #[error("{family}: {source}; putting the {first} rules back failed too: {undo}")]
    RollbackFailed {
        family: Family,
        first: Family,
        source: IptablesError,
        undo: Box<IptablesError>,
    },
}

/// The rules are not as they should be.
#[derive(Debug)]
pub struct Mismatch(pub Vec<(Family, Difference)>);

/// Drives one backend in the current network namespace.
#[derive(Clone, Copy, Debug)]
pub struct Redirector {
    pub iptables: Iptables,
    pub families: &'static [Family],
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (family, d)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{family}: {d}")?;
        }
        Ok(())
    }
}

impl Ipv6 {
    pub fn families(self) -> &'static [Family] {
        let on = match self {
            Ipv6::On => true,
            Ipv6::Off => false,
            Ipv6::Auto => std::path::Path::new("/proc/net/if_inet6").exists(),
        };
        if on {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        }
    }
}

impl Redirector {
    pub fn new(iptables: Iptables, ipv6: Ipv6) -> Self {
        Self {
            iptables,
            families: ipv6.families(),
        }
    }

    /// Installs `redirect`, replacing any earlier rule set of ours; a no-op when it is there.
    pub fn apply(&self, redirect: &Redirect) -> Result<(), RedirectorError> {
        let mut done: Vec<(Family, NatTable)> = Vec::new();
        for &family in self.families {
            let want = redirect.render(family)?;
            let step = self.iptables.save(family).and_then(|before| {
                self.iptables
                    .restore(family, &plan::apply(&want, &before))?;
                Ok(before)
            });
            match step {
                Ok(before) => done.push((family, before)),
                Err(source) => return Err(self.undo(family, source, &done)),
            }
        }
        Ok(())
    }

    fn undo(
        &self,
        family: Family,
        source: IptablesError,
        done: &[(Family, NatTable)],
    ) -> RedirectorError {
        let Some((first, before)) = done.first() else {
            return RedirectorError::Iptables { family, source };
        };
        let first = *first;
        let undo = self
            .iptables
            .save(first)
            .and_then(|now| self.iptables.restore(first, &plan::reinstate(before, &now)));
        match undo {
            Ok(()) => RedirectorError::RolledBack {
                family,
                first,
                source,
            },
            Err(undo) => RedirectorError::RollbackFailed {
                family,
                first,
                source,
                undo: Box::new(undo),
            },
        }
    }

    /// Takes every rule of ours away; nothing to remove is not an error.
    pub fn remove(&self) -> Result<(), RedirectorError> {
        for &family in self.families {
            let iptables_error = |source| RedirectorError::Iptables { family, source };
            let now = self.iptables.save(family).map_err(iptables_error)?;
            if let Some(input) = plan::remove(&now) {
                self.iptables
                    .restore(family, &input)
                    .map_err(iptables_error)?;
            }
        }
        Ok(())
    }

    /// Whether exactly `redirect` is installed.
    pub fn check(&self, redirect: &Redirect) -> Result<Result<(), Mismatch>, RedirectorError> {
        let mut differences = Vec::new();
        for &family in self.families {
            let want = redirect.render(family)?;
            let now = self
                .iptables
                .save(family)
                .map_err(|source| RedirectorError::Iptables { family, source })?;
            if let Err(d) = plan::check(&want, &now) {
                differences.extend(d.into_iter().map(|d| (family, d)));
            }
        }
        Ok(if differences.is_empty() {
            Ok(())
        } else {
            Err(Mismatch(differences))
        })
    }
}
