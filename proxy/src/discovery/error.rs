/// Why a DNS exchange gave no usable answer. Each maps to one of HAProxy's `hold` statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The bytes are not a DNS message hickory-proto can read.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The TC bit: the answer did not fit (`accepted_payload_size`); its records may be
    /// partial, so none is used (over UDP the question is asked again over TCP).
    #[error("truncated answer (TC bit set)")]
    Truncated,
    /// Not the reply to our query: another id, a query rather than a response, or another
    /// question.
    #[error("answer does not match the query ({0})")]
    Mismatch(&'static str),
    #[error("name does not exist (NXDOMAIN)")]
    NxDomain,
    #[error("query refused (REFUSED)")]
    Refused,
    #[error("server error ({0})")]
    Other(String),
    #[error("no answer in time")]
    Timeout,
    #[error("cannot query: {0}")]
    Io(String),
}

impl DnsError {
    /// Whether this is a packet that was read and thrown away (the exchange goes on waiting
    /// for the real answer), rather than the outcome of the exchange.
    pub fn is_dropped_packet(&self) -> bool {
        matches!(
            self,
            DnsError::Malformed(_) | DnsError::Truncated | DnsError::Mismatch(_)
        )
    }
}
