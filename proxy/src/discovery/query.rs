//! The bytes of one query, built by hickory-proto.

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::error::DnsError;

/// A recursive query for `name`/`kind` with id `id`, announcing `payload` bytes of EDNS0
/// buffer (`accepted_payload_size`).
pub fn build(id: u16, name: &Name, kind: RecordType, payload: u16) -> Result<Vec<u8>, DnsError> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), kind));
    if payload > 512 {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        m.set_edns(edns);
    }
    m.to_vec()
        .map_err(|e| DnsError::Io(format!("cannot encode query: {e}")))
}

/// A name as written in the config, made absolute (our queries never use search domains).
pub fn name(fqdn: &str) -> Result<Name, DnsError> {
    let absolute = if fqdn.ends_with('.') {
        fqdn.to_string()
    } else {
        format!("{fqdn}.")
    };
    Name::from_ascii(&absolute).map_err(|e| DnsError::Io(format!("bad name '{fqdn}': {e}")))
}
