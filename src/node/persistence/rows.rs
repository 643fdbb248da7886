//! How records and provider records are laid out in the database, both ways. Every decoder is
//! bounded and checks what it reads: a disk can rot like a network can lie.

use dht_behaviours::config::{MAX_ADDRS_PER_PEER, MAX_KEY_SIZE, MAX_VALUE_SIZE};
use dht_behaviours::kad_wire::{MAX_ADDR_LEN, MAX_PEER_ID_LEN};
use dht_behaviours::validation::validate_record;
use libp2p::kad::RecordKey;
use libp2p::{Multiaddr, PeerId};

/// Version byte leading every stored record row, so the layout can change later.
const ROW_VERSION: u8 = 1;
/// Record row header: version, expiry (unix ms, 0 = never), publisher length.
const ROW_HEADER: usize = 1 + 8 + 1;
/// Version byte leading every stored provider row.
const PROVIDER_ROW_VERSION: u8 = 1;
/// Provider row header: version, expiry (unix ms), address count.
const PROVIDER_ROW_HEADER: usize = 1 + 8 + 1;
/// Bytes before an address in a provider row: its length.
const ADDR_LENGTH_BYTES: usize = 2;
/// Bytes before the record key in a provider id: its length.
const KEY_LENGTH_BYTES: usize = 2;

// The lengths fit in the bytes they are written in.
const _: () = assert!(MAX_ADDRS_PER_PEER <= u8::MAX as usize);
const _: () = assert!(MAX_ADDR_LEN <= u16::MAX as usize && MAX_KEY_SIZE <= u16::MAX as usize);

/// A record as stored: its expiry (unix ms, 0 = never), publisher and value.
pub(super) struct Row {
    pub(super) expires_at: u64,
    pub(super) publisher: Option<PeerId>,
    pub(super) value: Vec<u8>,
}

pub(super) fn encode_row(expires_at: u64, publisher: Option<&PeerId>, value: &[u8]) -> Vec<u8> {
    let publisher = publisher
        .map(|p| p.to_bytes())
        .filter(|p| p.len() <= usize::from(u8::MAX))
        .unwrap_or_default();
    let mut row = Vec::with_capacity(ROW_HEADER + publisher.len() + value.len());
    row.push(ROW_VERSION);
    row.extend_from_slice(&expires_at.to_be_bytes());
    // The filter above keeps the length within a byte.
    row.push(u8::try_from(publisher.len()).unwrap_or(0));
    row.extend_from_slice(&publisher);
    row.extend_from_slice(value);
    row
}

/// Decodes a row; `None` for anything malformed, oversized or failing record validation.
pub(super) fn decode_row(key: &[u8], row: &[u8]) -> Option<Row> {
    if key.len() > MAX_KEY_SIZE || row.len() < ROW_HEADER || row[0] != ROW_VERSION {
        return None;
    }
    let expires_at = u64::from_be_bytes(row[1..9].try_into().ok()?);
    let publisher_len = usize::from(row[9]);
    let rest = &row[ROW_HEADER..];
    if rest.len() < publisher_len {
        return None;
    }
    let (publisher, value) = rest.split_at(publisher_len);
    let publisher = if publisher.is_empty() {
        None
    } else {
        Some(PeerId::from_bytes(publisher).ok()?)
    };
    if value.len() > MAX_VALUE_SIZE || validate_record(key, value).is_err() {
        return None;
    }
    Some(Row {
        expires_at,
        publisher,
        value: value.to_vec(),
    })
}

/// The database key of `provider`'s record of `key`: the key's length (two bytes), the key, then
/// the provider's id.
pub(super) fn provider_id(key: &RecordKey, provider: &PeerId) -> Vec<u8> {
    let key = key.as_ref();
    let peer = provider.to_bytes();
    let mut id = Vec::with_capacity(KEY_LENGTH_BYTES + key.len() + peer.len());
    // Keys held are at most MAX_KEY_SIZE long, which fits (asserted above).
    id.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_be_bytes());
    id.extend_from_slice(key);
    id.extend_from_slice(&peer);
    id
}

/// The key and provider a provider id names; `None` when malformed.
pub(super) fn decode_provider_id(id: &[u8]) -> Option<(RecordKey, PeerId)> {
    let (len, rest) = id.split_at_checked(KEY_LENGTH_BYTES)?;
    let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
    if len == 0 || len > MAX_KEY_SIZE {
        return None;
    }
    let (key, peer) = rest.split_at_checked(len)?;
    if peer.is_empty() || peer.len() > MAX_PEER_ID_LEN {
        return None;
    }
    let peer = PeerId::from_bytes(peer).ok()?;
    Some((RecordKey::from(key.to_vec()), peer))
}

/// A provider record as stored: its expiry (unix ms, never 0: provider records always expire)
/// and its addresses.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ProviderRow {
    pub(super) expires_at: u64,
    pub(super) addrs: Vec<Multiaddr>,
}

/// A provider row: version, expiry, address count, then each address after its length. At most
/// [`MAX_ADDRS_PER_PEER`] addresses of at most [`MAX_ADDR_LEN`] bytes are written (the store
/// holds no more).
pub(super) fn encode_provider_row(expires_at: u64, addrs: &[Multiaddr]) -> Vec<u8> {
    let addrs: Vec<&Multiaddr> = addrs
        .iter()
        .filter(|a| a.len() <= MAX_ADDR_LEN)
        .take(MAX_ADDRS_PER_PEER)
        .collect();
    let bytes: usize = addrs.iter().map(|a| ADDR_LENGTH_BYTES + a.len()).sum();
    let mut row = Vec::with_capacity(PROVIDER_ROW_HEADER + bytes);
    row.push(PROVIDER_ROW_VERSION);
    row.extend_from_slice(&expires_at.to_be_bytes());
    // Both bounded by the filter and the take above (asserted to fit).
    row.push(u8::try_from(addrs.len()).unwrap_or(0));
    for addr in addrs {
        row.extend_from_slice(&u16::try_from(addr.len()).unwrap_or(0).to_be_bytes());
        row.extend_from_slice(addr.as_ref());
    }
    row
}

/// Decodes a provider row; `None` for anything malformed, oversized or trailing.
pub(super) fn decode_provider_row(row: &[u8]) -> Option<ProviderRow> {
    if row.len() < PROVIDER_ROW_HEADER || row[0] != PROVIDER_ROW_VERSION {
        return None;
    }
    let expires_at = u64::from_be_bytes(row[1..9].try_into().ok()?);
    let count = usize::from(row[9]);
    if expires_at == 0 || count > MAX_ADDRS_PER_PEER {
        return None;
    }
    let mut rest = &row[PROVIDER_ROW_HEADER..];
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, tail) = rest.split_at_checked(ADDR_LENGTH_BYTES)?;
        let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
        if len > MAX_ADDR_LEN {
            return None;
        }
        let (addr, tail) = tail.split_at_checked(len)?;
        addrs.push(Multiaddr::try_from(addr.to_vec()).ok()?);
        rest = tail;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(ProviderRow { expires_at, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::Record;
    use sha2::{Digest, Sha256};

    fn content(value: &[u8]) -> Record {
        Record::new(
            RecordKey::from(Sha256::digest(value).to_vec()),
            value.to_vec(),
        )
    }

    #[test]
    fn rows_round_trip_and_garbage_is_refused() {
        let peer = PeerId::random();
        let record = content(b"value");
        let row = encode_row(42, Some(&peer), &record.value);
        let back = decode_row(record.key.as_ref(), &row).expect("decode");
        assert_eq!(
            (back.expires_at, back.publisher, back.value),
            (42, Some(peer), b"value".to_vec())
        );
        assert!(decode_row(record.key.as_ref(), &row[..5]).is_none());
        assert!(decode_row(record.key.as_ref(), &[9; 20]).is_none());
        // A content key whose value was changed on disk.
        let tampered = encode_row(42, None, b"other");
        assert!(decode_row(record.key.as_ref(), &tampered).is_none());
        // A publisher length past the end of the row.
        let mut short = encode_row(0, None, b"");
        short[9] = 200;
        assert!(decode_row(b"free", &short).is_none());
    }

    #[test]
    fn provider_rows_round_trip_and_garbage_is_refused() {
        let (key, peer) = (RecordKey::new(&b"some key"), PeerId::random());
        let id = provider_id(&key, &peer);
        assert_eq!(decode_provider_id(&id), Some((key.clone(), peer)));
        assert!(decode_provider_id(&id[..id.len() - 1]).is_none());
        assert!(decode_provider_id(&id[..10]).is_none());
        assert!(decode_provider_id(&[0, 0, 1, 2, 3]).is_none());
        assert!(decode_provider_id(&[0xff, 0xff, 1]).is_none());

        let addrs: Vec<Multiaddr> = ["/ip4/192.0.2.1/tcp/4001", "/dns4/example.com/tcp/443/wss"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        let row = encode_provider_row(42, &addrs);
        let back = decode_provider_row(&row).expect("decode");
        assert_eq!(
            back,
            ProviderRow {
                expires_at: 42,
                addrs: addrs.clone()
            }
        );
        let none = encode_provider_row(7, &[]);
        assert_eq!(decode_provider_row(&none).map(|r| r.addrs.len()), Some(0));
        // Cut short, trailing bytes, a count past the limit, no expiry, an unknown version.
        assert!(decode_provider_row(&row[..row.len() - 1]).is_none());
        let mut long = row.clone();
        long.push(0);
        assert!(decode_provider_row(&long).is_none());
        let mut many = row.clone();
        many[9] = u8::try_from(MAX_ADDRS_PER_PEER + 1).expect("fits");
        assert!(decode_provider_row(&many).is_none());
        assert!(decode_provider_row(&encode_provider_row(0, &addrs)).is_none());
        let mut version = row;
        version[0] = 9;
        assert!(decode_provider_row(&version).is_none());
        // An address that is not one.
        let mut bad = encode_provider_row(42, &[]);
        bad[9] = 1;
        bad.extend_from_slice(&[0, 3, 0xff, 0xff, 0xff]);
        assert!(decode_provider_row(&bad).is_none());
    }
}
