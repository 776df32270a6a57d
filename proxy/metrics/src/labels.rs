//! The closed label sets: each label value the proxy can export is a variant here, so a caller
//! cannot invent one and the number of series stays bounded by construction.

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Into the pod: a peer (or an unmeshed client) calling the app.
    Inbound = 0,
    /// Out of the pod: the app calling something.
    Outbound = 1,
}

impl Direction {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Which way bytes flowed on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the client (the connection's opener) toward the server.
    ToServer,
    /// From the server back to the client.
    ToClient,
}

impl Flow {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Flow::ToServer => "to_server",
            Flow::ToClient => "to_client",
        }
    }
}

/// An IP address family: the `family` label of the redirect check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// Both families.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The outcome of one redirect check probe: the `result` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedirectResult {
    /// The proxy's own outbound listener answered with the process's token.
    Verified,
    /// Nothing listens on the check port: the connection was not redirected.
    Refused,
    /// No connection, or no answer, within the probe timeout.
    Timeout,
    /// Something answered, but not with the token: another listener.
    WrongAnswer,
    /// Any other socket error.
    Error,
}

impl RedirectResult {
    /// Every result, so each series exists from the first check.
    pub const ALL: [RedirectResult; 5] = [
        RedirectResult::Verified,
        RedirectResult::Refused,
        RedirectResult::Timeout,
        RedirectResult::WrongAnswer,
        RedirectResult::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedirectResult::Verified => "verified",
            RedirectResult::Refused => "refused",
            RedirectResult::Timeout => "timeout",
            RedirectResult::WrongAnswer => "wrong_answer",
            RedirectResult::Error => "error",
        }
    }
}

/// The outcome of a mesh TLS handshake: the `result` label, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Both sides verified.
    Ok,
    /// The peer's chain does not lead to a trusted anchor (or its signature is bad).
    Untrusted,
    /// A trusted chain, but not the identity expected.
    WrongIdentity,
    /// The peer's certificate has expired or is not yet valid.
    Expired,
    /// The peer presented no certificate.
    NoCertificate,
    /// The handshake did not finish in time.
    Timeout,
    /// Anything else (protocol errors, resets).
    Error,
}

impl Handshake {
    /// Every result, so each series exists from the start.
    pub const ALL: [Handshake; 7] = [
        Handshake::Ok,
        Handshake::Untrusted,
        Handshake::WrongIdentity,
        Handshake::Expired,
        Handshake::NoCertificate,
        Handshake::Timeout,
        Handshake::Error,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Untrusted => "untrusted",
            Handshake::WrongIdentity => "wrong_identity",
            Handshake::Expired => "expired",
            Handshake::NoCertificate => "no_certificate",
            Handshake::Timeout => "timeout",
            Handshake::Error => "error",
        }
    }
}
