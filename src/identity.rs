//! Node identity: an ed25519 key, kept in a key file so the peer id survives restarts.

use std::fs;
use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

use crate::error::{Error, Result};

/// Reads the key in `path`, or creates one there (readable by the owner only) when the file is missing.
pub fn load_or_create(path: &Path) -> Result<Keypair> {
    let err = |reason: String| Error::Identity {
        path: path.display().to_string(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| err(format!("not a libp2p private key: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A key derived from a seed: the same seed gives the same peer id (for tests and fixed bootstrap nodes).
pub fn from_seed(seed: u64) -> Keypair {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_be_bytes());
    bytes[8..16].copy_from_slice(b"dht-seed");
    // 32 bytes are always a valid ed25519 secret.
    Keypair::ed25519_from_bytes(bytes).unwrap_or_else(|_| Keypair::generate_ed25519())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_keeps_the_peer_id() {
        let dir = std::env::temp_dir().join(format!("dht-identity-{}", std::process::id()));
        let path = dir.join("node.key");
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create(&path).expect("create");
        let b = load_or_create(&path).expect("load");
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        fs::write(&path, b"garbage").expect("write");
        assert!(matches!(load_or_create(&path), Err(Error::Identity { .. })));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn seeds_are_deterministic() {
        assert_eq!(
            from_seed(7).public().to_peer_id(),
            from_seed(7).public().to_peer_id()
        );
        assert_ne!(
            from_seed(7).public().to_peer_id(),
            from_seed(8).public().to_peer_id()
        );
    }
}
