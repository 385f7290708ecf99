//! Magnet links: fetching the `info` dictionary from peers (BEP 9 ut_metadata over the BEP 10 extension
//! protocol) before the normal download starts. Peers come from the link (`x.pe`), the command line and
//! the link's trackers; they are tried one after the other.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::ext::{
    ExtHandshake, MetadataMsg, MAX_METADATA_SIZE, METADATA_PIECE, UT_METADATA_ID,
};
use crate::codec::peer::{reserved, Handshake, Msg, HANDSHAKE_LEN};
use crate::codec::tracker::{AnnounceRequest, Event};
use crate::metainfo::{sha1, Magnet, Metainfo};
use crate::node::tracker::announce_tiers;
use crate::types::{InfoHash, PeerId};

/// Time allowed per peer to deliver the whole metadata.
pub const PER_PEER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no peer gave us the metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Every peer failed; the last reason.
    #[error("no peer delivered the metadata (last error: {0})")]
    NoPeer(String),
}

async fn from_peer(
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(&Handshake::new(info_hash, our_id).to_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut hb = [0u8; HANDSHAKE_LEN];
    s.read_exact(&mut hb).await.map_err(|e| e.to_string())?;
    let theirs = match Handshake::decode(&hb) {
        Ok(Some((h, _))) => h,
        _ => return Err("bad handshake".into()),
    };
    if theirs.info_hash != info_hash {
        return Err("different info_hash".into());
    }
    if !theirs.has(reserved::EXTENSION) {
        return Err("peer does not support the extension protocol".into());
    }
    let mut out = BytesMut::new();
    let hs = ExtHandshake {
        ut_metadata: Some(UT_METADATA_ID),
        ..ExtHandshake::default()
    }
    .encode();
    Msg::Extended {
        ext_id: 0,
        payload: &hs,
    }
    .encode(&mut out);
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut meta: Vec<u8> = Vec::new();
    let mut got: Vec<bool> = Vec::new();
    loop {
        if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("peer closed".into());
        }
        let mut used = 0;
        let mut reply = BytesMut::new();
        while let Some((m, len)) = Msg::decode(&buf[used..]).map_err(|e| e.to_string())? {
            used += len;
            let Msg::Extended { ext_id, payload } = m else {
                continue;
            };
            if ext_id == 0 {
                let h = ExtHandshake::parse(payload).map_err(|e| e.to_string())?;
                let (Some(their), Some(size)) = (h.ut_metadata, h.metadata_size) else {
                    return Err("peer has no ut_metadata or no metadata_size".into());
                };
                if size > MAX_METADATA_SIZE {
                    return Err("metadata too large".into());
                }
                meta = vec![0; size];
                got = vec![false; size.div_ceil(METADATA_PIECE)];
                for p in 0..got.len() {
                    let r = MetadataMsg::Request(p as u32).encode();
                    Msg::Extended {
                        ext_id: their,
                        payload: &r,
                    }
                    .encode(&mut reply);
                }
            } else if ext_id == UT_METADATA_ID {
                match MetadataMsg::parse(payload).map_err(|e| e.to_string())? {
                    MetadataMsg::Data {
                        piece,
                        total_size,
                        data,
                    } => {
                        let start = piece as usize * METADATA_PIECE;
                        let end = (start + METADATA_PIECE).min(meta.len());
                        if total_size != meta.len()
                            || start >= meta.len()
                            || data.len() != end - start
                        {
                            return Err("metadata piece does not fit".into());
                        }
                        meta[start..end].copy_from_slice(data);
                        got[piece as usize] = true;
                        if got.iter().all(|g| *g) {
                            if sha1(&meta).0 != info_hash.0 {
                                return Err("metadata does not match the info_hash".into());
                            }
                            return Ok(meta);
                        }
                    }
                    MetadataMsg::Reject(_) => return Err("peer rejected a metadata request".into()),
                    MetadataMsg::Request(_) => {}
                }
            }
        }
        buf.advance(used);
        if !reply.is_empty() {
            s.write_all(&reply).await.map_err(|e| e.to_string())?;
        }
    }
}

/// Gets the metadata of `magnet` from its peers, `extra` peers, or peers its trackers return.
pub async fn fetch(
    magnet: &Magnet,
    extra: &[SocketAddr],
    port: u16,
    use_trackers: bool,
) -> Result<Metainfo, MetadataError> {
    let mut rng = rand::thread_rng();
    let our_id = PeerId::generate(&mut rng);
    let mut peers: Vec<SocketAddr> = magnet.peers.iter().filter_map(|p| p.parse().ok()).collect();
    peers.extend_from_slice(extra);
    let mut tiers: Vec<Vec<String>> = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    let mut last = String::from("no peers known");
    for round in 0..3 {
        if use_trackers && !tiers.is_empty() {
            let req = AnnounceRequest {
                info_hash: magnet.info_hash,
                peer_id: our_id,
                port,
                uploaded: 0,
                downloaded: 0,
                // The size is unknown until we have the metadata; a non-zero `left` marks us a leecher.
                left: 1,
                event: Event::Started,
                numwant: 50,
                key: 0,
                ip: None,
            };
            match announce_tiers(&mut tiers, &req).await {
                Ok(r) => peers.extend(r.peers),
                Err(e) => last = e.to_string(),
            }
        }
        peers.dedup();
        for &p in &peers {
            match tokio::time::timeout(PER_PEER_TIMEOUT, from_peer(p, magnet.info_hash, our_id))
                .await
            {
                Ok(Ok(raw)) => {
                    tracing::info!(peer = %p, bytes = raw.len(), "metadata fetched (BEP 9)");
                    let tiers = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
                    return Metainfo::from_info_bytes(&raw, tiers)
                        .map_err(|e| MetadataError::NoPeer(e.to_string()));
                }
                Ok(Err(e)) => last = format!("{p}: {e}"),
                Err(_) => last = format!("{p}: timeout"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1 + round)).await;
    }
    Err(MetadataError::NoPeer(last))
}
