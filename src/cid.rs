//! CIDs as DHT keys: the IPFS DHT files content under the *multihash* a CID carries (its codec and
//! version aside), so `dht` accepts a CID wherever a key is typed and uses the same bytes.
//!
//! - CIDv0: 46 base58btc characters starting `Qm`, a bare sha2-256 multihash;
//! - CIDv1: a multibase string (`bafy...`, `bafk...` in base32, or any other multibase) of
//!   version 1, a codec and a multihash.
//!
//! Only a string that is a whole, well-formed CID is read as one; anything else stays text.

/// Length of a CIDv0 string.
pub const CIDV0_LEN: usize = 46;
/// Longest multihash digest accepted (SHA-512 and BLAKE2b-512 are 64 bytes; anything longer is
/// no hash a DHT key needs, and keys are bounded anyway).
pub const MAX_DIGEST_LEN: usize = 64;

/// The peer id `s` names: base58 (`12D3KooW...`, `Qm...`) or a CID of it (`k51...`, `bafz...`).
pub fn peer_id_of(s: &str) -> Option<libp2p::PeerId> {
    s.parse::<libp2p::PeerId>()
        .ok()
        .or_else(|| multihash_of(s).and_then(|mh| libp2p::PeerId::from_bytes(&mh).ok()))
}

/// The multihash bytes `s` names, if `s` is a CIDv0 or CIDv1.
pub fn multihash_of(s: &str) -> Option<Vec<u8>> {
    if s.len() == CIDV0_LEN && s.starts_with("Qm") {
        let bytes = bs58::decode(s).into_vec().ok()?;
        return is_multihash(&bytes).then_some(bytes);
    }
    // A CIDv1 is at least a multibase prefix and a few bytes; a short word is text.
    if s.len() < 8 {
        return None;
    }
    let (_, bytes) = multibase::decode(s).ok()?;
    let (version, rest) = unsigned_varint::decode::u64(&bytes).ok()?;
    if version != 1 {
        return None;
    }
    let (_codec, multihash) = unsigned_varint::decode::u64(rest).ok()?;
    is_multihash(multihash).then(|| multihash.to_vec())
}

/// Whether `bytes` are exactly one multihash: a code, a length and that many digest bytes.
fn is_multihash(bytes: &[u8]) -> bool {
    let Ok((_code, rest)) = unsigned_varint::decode::u64(bytes) else {
        return false;
    };
    let Ok((len, digest)) = unsigned_varint::decode::usize(rest) else {
        return false;
    };
    len <= MAX_DIGEST_LEN && digest.len() == len
}

#[cfg(test)]
mod tests {
    use super::*;

    // The CIDv0 and CIDv1 (dag-pb) of the same content: kubo's empty directory.
    const V0: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    const V1: &str = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";

    #[test]
    fn v0_and_v1_of_the_same_content_name_the_same_multihash() {
        let v0 = multihash_of(V0).expect("a CIDv0");
        assert_eq!(v0.len(), 34);
        assert_eq!(&v0[..2], &[0x12, 0x20], "sha2-256, 32 bytes");
        assert_eq!(multihash_of(V1), Some(v0));
    }

    #[test]
    fn raw_leaves_and_other_bases_are_cids_too() {
        // bafk...: CIDv1, raw codec, of the bytes "hello\n" (`ipfs add --raw-leaves`): its
        // digest is their SHA-256.
        let raw = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        let mh = multihash_of(raw).expect("a CID");
        assert_eq!(&mh[..2], &[0x12, 0x20]);
        assert_eq!(
            mh[2..],
            dht_behaviours::validation::content_key(b"hello\n")[..]
        );
        // The same CID in base58btc (multibase prefix z).
        let z = format!(
            "z{}",
            bs58::encode(multibase::decode(raw).expect("base32").1).into_string()
        );
        assert_eq!(multihash_of(&z), Some(mh));
    }

    #[test]
    fn text_that_only_looks_like_a_cid_stays_text() {
        for s in [
            "",
            "Qm",
            "bafy",
            "/v/name",
            "hello world",
            // One character short, one wrong, a bad base32 letter.
            &V0[..45],
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3N0",
            "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf351",
        ] {
            assert_eq!(multihash_of(s), None, "{s:?}");
        }
    }
}
