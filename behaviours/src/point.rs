//! Points of the Kademlia key space and their XOR distances, as two integers.
//!
//! kad hashes a key or a peer id with SHA-256 and measures XOR distances between the hashes.
//! libp2p's `KBucketKey::from(PeerId)` serialises the id into a fresh `Vec` before hashing it, and
//! its `Distance` decodes a 256-bit big-endian integer on every comparison; together they were the
//! largest share of the simulator's profile (every answer names k peers, each hashed). Here a peer
//! id is written into a stack buffer and hashed once, and distances compare as a pair of `u128`s,
//! whose order is the big-endian order of the 256-bit value.

use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// A point of the key space: the SHA-256 of a key or peer id, high half first.
pub type Point = (u128, u128);

/// The largest multihash a peer id can be (code and length varints, 64 digest bytes), with room.
const MAX_PEER_ID_BYTES: usize = 96;

/// The point of 32 hashed bytes.
fn from_digest(bytes: &[u8]) -> Point {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    lo.copy_from_slice(&bytes[16..32]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// The point of a key (as kad hashes record keys and lookup targets).
pub fn of_key(key: &[u8]) -> Point {
    from_digest(&Sha256::digest(key))
}

/// The point of a peer id: the SHA-256 of its multihash bytes, as `KBucketKey::from` computes
/// it, without allocating.
pub fn of_peer(peer: &PeerId) -> Point {
    let mut buf = [0u8; MAX_PEER_ID_BYTES];
    let mut rest: &mut [u8] = &mut buf;
    match peer.as_ref().write(&mut rest) {
        Ok(n) => of_key(&buf[..n]),
        // Unreachable for a valid multihash of at most 64 digest bytes; hashed the slow way.
        Err(_) => of_key(&peer.to_bytes()),
    }
}

/// The XOR distance of two points.
pub fn distance(a: Point, b: Point) -> Point {
    (a.0 ^ b.0, a.1 ^ b.1)
}

/// `ilog2` of a distance: the index of its highest set bit (255 is the highest), `None` for zero.
pub fn ilog2(d: Point) -> Option<u32> {
    if d.0 != 0 {
        Some(255 - d.0.leading_zeros())
    } else if d.1 != 0 {
        Some(127 - d.1.leading_zeros())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use libp2p::kad::KBucketKey;

    use super::*;

    fn libp2p_point<T>(key: &KBucketKey<T>) -> Point {
        from_digest(key.hashed_bytes())
    }

    #[test]
    fn points_are_libp2p_s_hashes_and_distances_order_as_libp2p_s() {
        // Ed25519 ids (identity multihash) and RSA ids (SHA-256 multihash) both.
        let mut peers: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
        peers.push(Keypair::generate_secp256k1().public().to_peer_id());
        for p in &peers {
            assert_eq!(of_peer(p), libp2p_point(&KBucketKey::from(*p)));
        }
        let key = b"/v/some key".to_vec();
        assert_eq!(of_key(&key), libp2p_point(&KBucketKey::new(key.clone())));
        let target = KBucketKey::new(key.clone());
        let mut ours = peers.clone();
        ours.sort_by_key(|p| distance(of_key(&key), of_peer(p)));
        let mut theirs = peers.clone();
        theirs.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
        assert_eq!(ours, theirs);
        for p in &peers {
            let d = distance(of_key(&key), of_peer(p));
            assert_eq!(ilog2(d), target.distance(&KBucketKey::from(*p)).ilog2());
        }
        assert_eq!(ilog2((0, 0)), None);
    }
}
