//! The shared state of one torrent inside the node: the sans-I/O picker, choker, verification and peer
//! exchange (BEP 11) bookkeeping, plus each connection's outbox. Every method runs with the torrent lock held and never
//! awaits; the connection tasks in [`super::peer`] only move bytes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::BytesMut;
use common::ratelimit::RateLimiter;
use common::stats::Stats;
use rand::rngs::StdRng;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::codec::ext::{ExtHandshake, MetadataMsg, METADATA_PIECE, UT_METADATA_ID, UT_PEX_ID};
use crate::codec::peer::{BlockRef, Msg, BLOCK_LEN, MAX_BLOCK_LEN};
use crate::codec::pex::{flags as pex_flags, PexMsg};
use crate::metainfo::Metainfo;
use crate::protocol::bitfield::Bitfield;
use crate::protocol::choker::Choker;
use crate::protocol::pex::{Candidates, PexPeer};
use crate::protocol::picker::{PeerKey, Picker, Received};
use crate::protocol::pieces::{PieceHashers, Strikes};
use crate::storage::Storage;
use crate::types::PeerId;

/// Outstanding requests per peer: 256 blocks of 16 KiB = 4 MiB in flight, enough to fill a fast
/// loopback link while the picker keeps strict piece priority.
pub const PIPELINE: usize = 256;
/// Most queued upload requests we keep for one peer; more are rejected.
pub const MAX_QUEUED_UPLOADS: usize = 2048;
/// Most simultaneous connections.
pub const MAX_PEERS: usize = 80;
/// Most pieces of a peer's BEP 6 allowed-fast set we remember (BEP 6 suggests sets of 10).
pub const MAX_ALLOWED_FAST: usize = 64;

/// Why a connection is dropped: the peer broke the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// Bitfield after other messages, or of the wrong size.
    #[error("bad bitfield: {0}")]
    Bitfield(&'static str),
    /// Piece index out of range.
    #[error("piece index {0} out of range")]
    BadIndex(u32),
    /// A request or piece outside the torrent.
    #[error("bad block {0:?}")]
    BadBlock(BlockRef),
    /// Fast-extension message from a peer that did not negotiate it.
    #[error("fast extension message without negotiation")]
    NotFast,
    /// The peer was banned for sending bad data.
    #[error("banned for corrupt data")]
    Banned,
}

struct OutQ {
    ctrl: BytesMut,
    uploads: VecDeque<BlockRef>,
    /// The node's upload cap (`--upload-rate`), shared by every outbox.
    limit: Option<RateLimiter>,
    credit: Credit,
}

/// Bytes drawn from a shared [`RateLimiter`] without waiting, saved up until a whole block's worth is
/// there: a block is only handed out (sent, or requested) once it is paid for in full, so a node's
/// payload never runs ahead of its cap by more than the limiter's burst plus one block per connection.
#[derive(Debug, Default)]
struct Credit(u64);

impl Credit {
    /// Whether `len` bytes are paid for (and spends them).
    fn take(&mut self, limit: &RateLimiter, len: u64) -> bool {
        if self.0 < len {
            self.0 += limit.try_take(len - self.0);
        }
        if self.0 >= len {
            self.0 -= len;
            true
        } else {
            false
        }
    }
}

/// Bytes and upload requests waiting for a connection's writer task.
pub struct Outbox {
    q: Mutex<OutQ>,
    /// Wakes the writer.
    pub notify: Notify,
    /// Cancelled to close the connection (ban, shutdown, protocol error).
    pub cancel: CancellationToken,
}

impl Outbox {
    /// An empty outbox closing with `cancel`.
    pub fn new(cancel: CancellationToken) -> Outbox {
        Outbox {
            q: Mutex::new(OutQ {
                ctrl: BytesMut::with_capacity(4096),
                uploads: VecDeque::new(),
                limit: None,
                credit: Credit::default(),
            }),
            notify: Notify::new(),
            cancel,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutQ> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a control message.
    pub fn push(&self, m: &Msg<'_>) {
        m.encode(&mut self.lock().ctrl);
        self.notify.notify_one();
    }

    /// Takes queued control bytes and up to `max_bytes` of upload requests (with an upload cap, only
    /// the blocks already paid for: the rest wait for the node's rate tick to wake the writer).
    pub fn take(&self, max_bytes: usize, blocks: &mut Vec<BlockRef>) -> BytesMut {
        let mut q = self.lock();
        let OutQ {
            ctrl,
            uploads,
            limit,
            credit,
        } = &mut *q;
        let mut total = 0usize;
        while let Some(b) = uploads.front() {
            if total + b.len as usize > max_bytes && !blocks.is_empty() {
                break;
            }
            if let Some(l) = limit {
                if !credit.take(l, u64::from(b.len)) {
                    break;
                }
            }
            total += b.len as usize;
            blocks.push(uploads.pop_front().expect("front exists"));
        }
        ctrl.split()
    }

    /// Whether upload requests are waiting.
    fn has_uploads(&self) -> bool {
        !self.lock().uploads.is_empty()
    }
}

/// A received block the picker accepted, waiting in [`Torrent::write_accepted`] to be written next to
/// the other blocks of the same socket read, hashed and (if it completes its piece) verified.
pub struct Accepted<'a> {
    b: BlockRef,
    data: &'a [u8],
    cancel: Vec<PeerKey>,
    piece_complete: Option<Vec<PeerKey>>,
}

/// What the torrent knows about one connection.
pub struct PeerEntry {
    /// Remote address.
    pub addr: SocketAddr,
    /// Remote peer id.
    pub id: PeerId,
    fast: bool,
    /// The peer's id for ut_metadata (from its BEP 10 handshake).
    ut_metadata: Option<u8>,
    /// The peer's id for ut_pex (BEP 11), if it negotiated it.
    ut_pex: Option<u8>,
    /// The peer's listen port from its BEP 10 handshake (`p`).
    listen_port: Option<u16>,
    /// We dialled this peer (so `addr` is where it listens: PEX flag "reachable").
    outgoing: bool,
    pex: PexPeer,
    has: Bitfield,
    /// Pieces the peer lets us fetch while it chokes us (BEP 6 allowed fast), at most
    /// [`MAX_ALLOWED_FAST`].
    allowed_fast: Vec<u32>,
    /// Pieces the peer has that we do not (interest without rescanning the bitfield).
    wanted: u32,
    am_interested: bool,
    peer_choking: bool,
    outstanding: Vec<BlockRef>,
    /// Paid-for request bytes under the download cap.
    req_credit: Credit,
    /// Where messages for this peer go.
    pub outbox: Arc<Outbox>,
    down: u64,
    up: u64,
    blocks_from: u64,
}

/// Per-peer totals kept after the peer leaves, for the stats file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PeerRecord {
    /// Payload bytes received from the peer.
    pub bytes_down: u64,
    /// Payload bytes sent to it.
    pub bytes_up: u64,
    /// Blocks received from it.
    pub blocks_from: u64,
    /// Pieces it contributed to that passed verification.
    pub pieces_from: u64,
}

/// One torrent's shared state.
pub struct Torrent {
    /// The metainfo.
    pub meta: Arc<Metainfo>,
    /// The files.
    pub storage: Arc<Storage>,
    /// Block picker.
    pub picker: Picker,
    /// Upload slots.
    pub choker: Choker,
    strikes: Strikes,
    hashers: PieceHashers,
    rng: StdRng,
    peers: HashMap<PeerKey, PeerEntry>,
    next_key: PeerKey,
    /// IPs never to talk to again, from any port (a peer there sent corrupt data).
    pub banned: HashSet<IpAddr>,
    banned_ids: HashSet<PeerId>,
    /// Our id.
    pub peer_id: PeerId,
    /// Counters for the stats file.
    pub stats: Stats,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    complete: watch::Sender<bool>,
    scratch: Vec<u8>,
    records: BTreeMap<String, PeerRecord>,
    chokes: u64,
    unchokes: u64,
    /// Addresses the node is dialling right now: a connection from one of them is outgoing.
    pub dialing: HashSet<SocketAddr>,
    /// Contacts learnt by PEX for the node to dial (bounded).
    pub pex_candidates: Candidates,
    /// Our TCP listen port, sent as `p` in the extension handshake so PEX can advertise us.
    pub listen_port: Option<u16>,
    /// Cap on the payload we send, shared by every connection (`--upload-rate`).
    pub upload_limit: Option<RateLimiter>,
    /// Cap on the payload we receive, shared by every connection (`--download-rate`).
    pub download_limit: Option<RateLimiter>,
    /// Where the next rate tick starts waking writers (see [`Torrent::rate_tick`]).
    rate_turn: usize,
    pex_sent: u64,
    pex_received: u64,
    pex_ignored: u64,
    pex_learned: u64,
}

/// The torrent behind a lock, shared by every task of the node.
pub type Shared = Arc<Mutex<Torrent>>;

/// Locks the shared torrent (a panic elsewhere does not make the counters unusable).
pub fn lock(s: &Shared) -> MutexGuard<'_, Torrent> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Torrent {
    /// A torrent with the pieces in `have` already verified.
    pub fn new(
        meta: Arc<Metainfo>,
        storage: Arc<Storage>,
        have: Bitfield,
        peer_id: PeerId,
        stats: Stats,
        rng: StdRng,
    ) -> (Torrent, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(have.is_full());
        let picker = Picker::new(meta.info.piece_length as u32, meta.info.total_length, have);
        (
            Torrent {
                meta,
                storage,
                picker,
                choker: Choker::new(),
                strikes: Strikes::default(),
                hashers: PieceHashers::default(),
                rng,
                peers: HashMap::new(),
                next_key: 1,
                banned: HashSet::new(),
                banned_ids: HashSet::new(),
                peer_id,
                stats,
                downloaded: 0,
                uploaded: 0,
                complete: tx,
                scratch: Vec::new(),
                records: BTreeMap::new(),
                chokes: 0,
                unchokes: 0,
                dialing: HashSet::new(),
                pex_candidates: Candidates::default(),
                listen_port: None,
                upload_limit: None,
                download_limit: None,
                rate_turn: 0,
                pex_sent: 0,
                pex_received: 0,
                pex_ignored: 0,
                pex_learned: 0,
            },
            rx,
        )
    }

    /// Number of connections.
    pub fn num_peers(&self) -> usize {
        self.peers.len()
    }

    /// Whether a connection to `addr` exists.
    pub fn is_connected(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|p| p.addr == addr)
    }

    fn push(&self, key: PeerKey, m: &Msg<'_>) {
        if let Some(p) = self.peers.get(&key) {
            self.stats.msg_out(m.name(), m.wire_len());
            p.outbox.push(m);
        }
    }

    /// Registers a connection after the handshake; sends our pieces. `Err` says why it is refused.
    pub fn add_peer(
        &mut self,
        addr: SocketAddr,
        id: PeerId,
        fast: bool,
        extensions: bool,
        outbox: Arc<Outbox>,
        now: Instant,
    ) -> Result<PeerKey, &'static str> {
        if id == self.peer_id {
            return Err("connected to ourselves");
        }
        if self.banned.contains(&addr.ip()) || self.banned_ids.contains(&id) {
            return Err("banned peer");
        }
        if self.peers.values().any(|p| p.id == id) {
            return Err("already connected to this peer id");
        }
        if self.peers.len() >= MAX_PEERS {
            return Err("connection limit");
        }
        let key = self.next_key;
        self.next_key += 1;
        let n = self.meta.info.num_pieces();
        let outgoing = self.dialing.contains(&addr);
        self.peers.insert(
            key,
            PeerEntry {
                addr,
                id,
                fast,
                ut_metadata: None,
                ut_pex: None,
                listen_port: None,
                outgoing,
                pex: PexPeer::default(),
                has: Bitfield::new(n),
                allowed_fast: Vec::new(),
                wanted: 0,
                am_interested: false,
                peer_choking: true,
                outstanding: Vec::new(),
                req_credit: Credit::default(),
                outbox,
                down: 0,
                up: 0,
                blocks_from: 0,
            },
        );
        self.choker.add_peer(key, now);
        if let Some(l) = &self.upload_limit {
            self.peers[&key].outbox.lock().limit = Some(l.clone());
        }
        if extensions {
            let hs = ExtHandshake {
                ut_metadata: Some(UT_METADATA_ID),
                // BEP 27: no peer exchange for private torrents, so we do not offer it.
                ut_pex: self.pex_enabled().then_some(UT_PEX_ID),
                port: self.listen_port,
                metadata_size: Some(self.meta.info_bytes.len()),
                client: Some(concat!("p2p-lab ", env!("CARGO_PKG_VERSION")).into()),
            }
            .encode();
            self.push(
                key,
                &Msg::Extended {
                    ext_id: 0,
                    payload: &hs,
                },
            );
        }
        let have = self.picker.have();
        if fast && have.is_full() {
            self.push(key, &Msg::HaveAll);
        } else if fast && have.count() == 0 {
            self.push(key, &Msg::HaveNone);
        } else if have.count() > 0 {
            let bits = have.as_bytes().to_vec();
            self.push(key, &Msg::Bitfield(&bits));
        }
        self.stats.set_gauge("peers", self.peers.len() as i64);
        Ok(key)
    }

    /// Forgets a connection: its requests go back to the picker and its pieces leave the availability.
    pub fn remove_peer(&mut self, key: PeerKey) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        p.outbox.cancel.cancel();
        for b in &p.outstanding {
            self.picker.drop_request(key, *b);
        }
        self.picker.remove_peer_pieces(&p.has);
        self.choker.remove_peer(key);
        let r = self.records.entry(p.addr.to_string()).or_default();
        r.bytes_down += p.down;
        r.bytes_up += p.up;
        r.blocks_from += p.blocks_from;
        self.stats.set_gauge("peers", self.peers.len() as i64);
        // Freed blocks can go to the others now.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.fill_requests(k);
        }
    }

    fn merge_has(&mut self, key: PeerKey, b: &Bitfield) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        for i in b.iter_ones() {
            if p.has.set(i) {
                self.picker.add_peer_piece(i);
                if !self.picker.have().get(i) {
                    p.wanted += 1;
                }
            }
        }
        self.update_interest(key);
    }

    fn update_interest(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let want = p.wanted > 0;
        if want != p.am_interested {
            p.am_interested = want;
            // Anti-snubbing only counts silence from peers we want something from.
            self.choker.set_am_interested(key, want, Instant::now());
            let m = if want {
                Msg::Interested
            } else {
                Msg::NotInterested
            };
            self.push(key, &m);
        }
    }

    /// Handles one message from peer `key`.
    pub fn on_msg(&mut self, key: PeerKey, m: Msg<'_>, now: Instant) -> Result<(), ProtoError> {
        let mut accepted = Vec::new();
        let r = self.on_msg_batched(key, m, now, &mut accepted);
        self.write_accepted(&mut accepted);
        r
    }

    /// Like [`Torrent::on_msg`], but a new block is only accepted into `accepted` (the picker counts
    /// it received); [`Torrent::write_accepted`] then writes a whole socket read's blocks together and
    /// verifies completed pieces. Call it before releasing the lock, also after an error.
    pub fn on_msg_batched<'a>(
        &mut self,
        key: PeerKey,
        m: Msg<'a>,
        now: Instant,
        accepted: &mut Vec<Accepted<'a>>,
    ) -> Result<(), ProtoError> {
        let n = self.meta.info.num_pieces();
        let Some(p) = self.peers.get_mut(&key) else {
            return Err(ProtoError::Banned);
        };
        let fast = p.fast;
        if matches!(m, Msg::Piece { .. }) {
            self.stats.msg_in_data("piece", m.wire_len());
        } else {
            self.stats.msg_in(m.name(), m.wire_len());
        }
        match m {
            Msg::KeepAlive | Msg::Port(_) => {}
            Msg::Extended { ext_id: 0, payload } => {
                // A malformed extension handshake only disables extensions for this peer.
                let h = ExtHandshake::parse(payload).unwrap_or_default();
                p.ut_metadata = h.ut_metadata;
                p.ut_pex = h.ut_pex;
                p.listen_port = h.port;
            }
            Msg::Extended { ext_id, payload } if ext_id == UT_PEX_ID => {
                // Only peers that saw us offer ut_pex may send it; a private torrent never offers it.
                if self.meta.info.private || p.ut_pex.is_none() || !p.pex.accept(now) {
                    self.pex_ignored += 1;
                    return Ok(());
                }
                match PexMsg::parse(payload) {
                    Ok(m) => {
                        self.pex_received += 1;
                        let ours =
                            SocketAddr::new(p.addr.ip(), self.listen_port.unwrap_or_default());
                        let n = self.pex_candidates.learn(&m, ours);
                        self.pex_learned += n as u64;
                        tracing::debug!(
                            from = %p.addr,
                            added = m.added.len(),
                            dropped = m.dropped.len(),
                            queued = n,
                            "ut_pex received"
                        );
                    }
                    Err(e) => {
                        // PEX is advisory: a bad message is ignored, the connection stays.
                        tracing::debug!(from = %p.addr, cause = %e, "bad ut_pex message");
                        self.stats.error("pex_malformed");
                    }
                }
            }
            Msg::Extended { ext_id, payload } if ext_id == UT_METADATA_ID => {
                if let (Some(their), Ok(MetadataMsg::Request(piece))) =
                    (p.ut_metadata, MetadataMsg::parse(payload))
                {
                    let raw = &self.meta.info_bytes;
                    let start = piece as usize * METADATA_PIECE;
                    let reply = if start < raw.len() {
                        MetadataMsg::Data {
                            piece,
                            total_size: raw.len(),
                            data: &raw[start..(start + METADATA_PIECE).min(raw.len())],
                        }
                        .encode()
                    } else {
                        MetadataMsg::Reject(piece).encode()
                    };
                    self.push(
                        key,
                        &Msg::Extended {
                            ext_id: their,
                            payload: &reply,
                        },
                    );
                }
            }
            // Extensions we did not announce: ignored.
            Msg::Extended { .. } => {}
            Msg::Suggest(_) => {
                if !fast {
                    return Err(ProtoError::NotFast);
                }
            }
            Msg::AllowedFast(i) => {
                if !fast {
                    return Err(ProtoError::NotFast);
                }
                // BEP 6: these pieces may be requested while choked (once the peer has them). An
                // index out of range is ignored, and the set is bounded.
                if i < n && !p.allowed_fast.contains(&i) && p.allowed_fast.len() < MAX_ALLOWED_FAST
                {
                    p.allowed_fast.push(i);
                }
            }
            Msg::Choke => {
                p.peer_choking = true;
                // Without BEP 6 a choke silently discards our requests; with it, rejects will come.
                if !fast {
                    let dropped = std::mem::take(&mut p.outstanding);
                    for b in dropped {
                        self.picker.drop_request(key, b);
                    }
                }
                self.choker.set_unchoked_us(key, false, now);
            }
            Msg::Unchoke => {
                p.peer_choking = false;
                self.choker.set_unchoked_us(key, true, now);
            }
            Msg::Interested => {
                self.choker.set_interested(key, true);
                self.run_choker(now);
            }
            Msg::NotInterested => {
                self.choker.set_interested(key, false);
            }
            Msg::Have(i) => {
                if i >= n {
                    return Err(ProtoError::BadIndex(i));
                }
                if p.has.set(i) {
                    if !self.picker.have().get(i) {
                        p.wanted += 1;
                    }
                    self.picker.add_peer_piece(i);
                    self.update_interest(key);
                }
            }
            // BEP 3 wants the bitfield first, but real clients differ (aria2 sends have_none, then a
            // bitfield once it has pieces): any later set is taken as a batch of `have`s.
            Msg::Bitfield(bits) => {
                let b = Bitfield::from_wire(bits, n)
                    .map_err(|_| ProtoError::Bitfield("wrong size or spare bits"))?;
                self.merge_has(key, &b);
            }
            Msg::HaveAll | Msg::HaveNone => {
                if !fast {
                    return Err(ProtoError::NotFast);
                }
                if matches!(m, Msg::HaveAll) {
                    self.merge_has(key, &Bitfield::full(n));
                }
            }
            Msg::Request(b) => self.on_request(key, b)?,
            Msg::Cancel(b) => {
                let mut q = p.outbox.lock();
                q.uploads.retain(|x| *x != b);
            }
            Msg::Reject(b) => {
                if !fast {
                    return Err(ProtoError::NotFast);
                }
                if let Some(pos) = p.outstanding.iter().position(|x| *x == b) {
                    p.outstanding.swap_remove(pos);
                    self.picker.drop_request(key, b);
                }
                // A choking peer that rejects an allowed-fast piece does not serve it after all:
                // asking again would only bring another reject.
                if p.peer_choking {
                    p.allowed_fast.retain(|i| *i != b.index);
                }
            }
            Msg::Piece { index, begin, data } => {
                self.on_piece(key, index, begin, data, now, accepted)?
            }
        }
        Ok(())
    }

    fn on_request(&mut self, key: PeerKey, b: BlockRef) -> Result<(), ProtoError> {
        let n = self.meta.info.num_pieces();
        if b.index >= n {
            return Err(ProtoError::BadIndex(b.index));
        }
        let plen = self.meta.info.piece_len(b.index);
        if b.len == 0 || b.len > MAX_BLOCK_LEN || b.begin as u64 + b.len as u64 > plen as u64 {
            return Err(ProtoError::BadBlock(b));
        }
        let serve = self.picker.have().get(b.index) && self.choker.is_unchoked(key);
        let p = self.peers.get(&key).expect("caller checked");
        if serve {
            let mut q = p.outbox.lock();
            if q.uploads.len() < MAX_QUEUED_UPLOADS {
                q.uploads.push_back(b);
                drop(q);
                p.outbox.notify.notify_one();
                return Ok(());
            }
        }
        if p.fast {
            self.push(key, &Msg::Reject(b));
        }
        Ok(())
    }

    fn on_piece<'a>(
        &mut self,
        key: PeerKey,
        index: u32,
        begin: u32,
        data: &'a [u8],
        now: Instant,
        accepted: &mut Vec<Accepted<'a>>,
    ) -> Result<(), ProtoError> {
        let b = BlockRef {
            index,
            begin,
            len: data.len() as u32,
        };
        self.picker
            .check_block(b)
            .map_err(|_| ProtoError::BadBlock(b))?;
        let p = self.peers.get_mut(&key).expect("caller checked");
        if let Some(pos) = p.outstanding.iter().position(|x| *x == b) {
            p.outstanding.swap_remove(pos);
        }
        p.down += data.len() as u64;
        self.downloaded += data.len() as u64;
        self.stats
            .transfers(|t| t.download_bytes += data.len() as u64);
        self.choker.downloaded(key, data.len() as u64, now);
        let r = match self.picker.block_received(key, b) {
            Ok(r) => r,
            Err(_) => {
                // Arrived after we gave the piece up (cancelled, or already verified): not an offence.
                self.stats.error("unrequested_block");
                return Ok(());
            }
        };
        let Received::New {
            cancel,
            piece_complete,
        } = r
        else {
            self.stats.error("duplicate_block");
            return Ok(());
        };
        p.blocks_from += 1;
        accepted.push(Accepted {
            b,
            data,
            cancel,
            piece_complete,
        });
        Ok(())
    }

    /// Writes the accepted blocks (runs of neighbours in one vectored write), feeds the piece hashers in
    /// arrival order, sends endgame cancels and verifies the pieces they complete.
    pub fn write_accepted(&mut self, accepted: &mut Vec<Accepted<'_>>) {
        if accepted.is_empty() {
            return;
        }
        // Hashed first, while the socket read that brought them is still in the CPU cache (the
        // write then reads them from cache too, instead of SHA-1 reading what the copy into the
        // page cache pushed out).
        for a in accepted.iter() {
            self.hashers.feed(a.b.index, a.b.begin, a.data);
        }
        let blocks: Vec<(u32, u32, &[u8])> = accepted
            .iter()
            .map(|a| (a.b.index, a.b.begin, a.data))
            .collect();
        if let Err(e) = self.storage.write_blocks(&blocks) {
            // Disk full or EIO: the peers sent good data, so nobody is blamed. The blocks are wanted
            // again (a piece they completed goes back to partial), and endgame copies still
            // requested from other peers stay requested: their answers refill the gaps.
            tracing::error!(cause = %e, blocks = accepted.len(), "cannot write blocks, fetching them again");
            self.stats.error("storage");
            for a in accepted.iter_mut() {
                // The running hash saw bytes that are not on disk: these pieces are verified by
                // reading them back once complete, so what is checked is what was stored.
                self.hashers.forget(a.b.index);
                if let Some(contributors) = a.piece_complete.take() {
                    self.picker.reopen(a.b.index, contributors);
                }
            }
            for a in accepted.drain(..) {
                self.picker.give_back(a.b, &a.cancel);
            }
            return;
        }
        for a in accepted.drain(..) {
            let b = a.b;
            for other in a.cancel {
                if let Some(op) = self.peers.get_mut(&other) {
                    if let Some(pos) = op.outstanding.iter().position(|x| *x == b) {
                        op.outstanding.swap_remove(pos);
                        self.push(other, &Msg::Cancel(b));
                    }
                }
            }
            if let Some(contributors) = a.piece_complete {
                self.piece_done(b.index, contributors);
            }
        }
    }

    fn piece_done(&mut self, index: u32, contributors: Vec<PeerKey>) {
        let len = self.meta.info.piece_len(index);
        let digest = match self.hashers.finish(index, len) {
            Some(d) => Ok(d),
            None => self.storage.hash_piece(index, len, &mut self.scratch),
        };
        let ok = matches!(digest, Ok(d) if d == self.meta.info.pieces[index as usize]);
        if !ok {
            tracing::warn!(index, ?contributors, "piece failed its SHA-1 check");
            self.stats.error("hash_mismatch");
            self.picker.piece_failed(index);
            for bad in self.strikes.piece_failed(&contributors) {
                if let Some(p) = self.peers.get(&bad) {
                    tracing::warn!(addr = %p.addr, "banning peer for corrupt data");
                    let ip = p.addr.ip();
                    self.banned.insert(ip);
                    self.banned_ids.insert(p.id);
                    self.stats.error("banned_peer");
                    // Banned by IP: its other connections (other ports, other peer ids) close too.
                    for q in self.peers.values().filter(|q| q.addr.ip() == ip) {
                        q.outbox.cancel.cancel();
                    }
                }
            }
            return;
        }
        self.picker.piece_verified(index);
        for c in &contributors {
            if let Some(p) = self.peers.get(c) {
                self.records
                    .entry(p.addr.to_string())
                    .or_default()
                    .pieces_from += 1;
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.push(k, &Msg::Have(index));
            let p = self.peers.get_mut(&k).expect("key from map");
            if p.has.get(index) {
                p.wanted = p.wanted.saturating_sub(1);
            }
            self.update_interest(k);
        }
        if self.picker.is_complete() {
            tracing::info!(
                bytes = self.meta.info.total_length,
                "download complete, every piece verified"
            );
            self.stats.transfers(|t| t.downloads_completed += 1);
            self.stats.set_role("seeder");
            let _ = self.complete.send(true);
        }
    }

    /// Tops up the request pipeline of peer `key`.
    pub fn fill_requests(&mut self, key: PeerKey) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.am_interested || (p.peer_choking && p.allowed_fast.is_empty()) {
            return;
        }
        // Choked: only the pieces of its allowed-fast set that the peer has (BEP 6).
        let choked_to = p.peer_choking.then(|| {
            let mut m = Bitfield::new(p.has.len());
            for &i in p.allowed_fast.iter().filter(|i| p.has.get(**i)) {
                m.set(i);
            }
            m
        });
        let mut added = 0;
        while p.outstanding.len() < PIPELINE {
            // Under `--download-rate` a block is requested only once paid for: what we receive
            // is what we asked for, so the payload rate follows the cap.
            if let Some(l) = &self.download_limit {
                if !p.req_credit.take(l, u64::from(BLOCK_LEN)) {
                    break;
                }
            }
            let has = choked_to.as_ref().unwrap_or(&p.has);
            let Some(b) = self.picker.pick(key, has, &mut self.rng) else {
                if self.download_limit.is_some() {
                    p.req_credit.0 += u64::from(BLOCK_LEN);
                }
                break;
            };
            if self.download_limit.is_some() {
                // A short last block pays only for its length.
                p.req_credit.0 += u64::from(BLOCK_LEN.saturating_sub(b.len));
            }
            p.outstanding.push(b);
            let m = Msg::Request(b);
            self.stats.msg_out(m.name(), m.wire_len());
            m.encode(&mut p.outbox.lock().ctrl);
            added += 1;
        }
        if added > 0 {
            p.outbox.notify.notify_one();
        }
    }

    /// With a rate cap, called every few milliseconds: tops up request pipelines as the download cap
    /// allows and wakes writers whose uploads were waiting for the upload cap.
    pub fn rate_tick(&mut self) {
        let mut keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        // Writers share the upload cap in the order they are woken, the first taking what the refill
        // allows: start one connection further each tick, or the first in map order takes every
        // refill while its queue lasts and the others starve (a capped seeder fed one leecher only).
        keys.sort_unstable();
        if !keys.is_empty() {
            self.rate_turn = (self.rate_turn + 1) % keys.len();
            keys.rotate_left(self.rate_turn);
        }
        for k in keys {
            if self.download_limit.is_some() {
                self.fill_requests(k);
            }
            let p = &self.peers[&k];
            if self.upload_limit.is_some() && p.outbox.has_uploads() {
                p.outbox.notify.notify_one();
            }
        }
    }

    /// Runs the choker and sends its decisions.
    pub fn run_choker(&mut self, now: Instant) {
        let seeding = self.picker.is_complete();
        let decisions = self.choker.tick(now, seeding, &mut self.rng);
        for d in decisions {
            if d.unchoke {
                self.unchokes += 1;
                self.push(d.peer, &Msg::Unchoke);
            } else {
                self.chokes += 1;
                self.push(d.peer, &Msg::Choke);
                // Choking discards queued requests; fast peers are told which.
                if let Some(p) = self.peers.get(&d.peer) {
                    let dropped: Vec<BlockRef> = p.outbox.lock().uploads.drain(..).collect();
                    if p.fast {
                        for b in dropped {
                            self.push(d.peer, &Msg::Reject(b));
                        }
                    }
                }
            }
        }
    }

    /// The writer sent these blocks to peer `key`.
    pub fn on_uploaded(&mut self, key: PeerKey, blocks: &[BlockRef]) {
        let bytes: u64 = blocks.iter().map(|b| b.len as u64).sum();
        for b in blocks {
            self.stats.msg_out_data("piece", 13 + b.len as usize);
        }
        self.stats.transfers(|t| t.upload_bytes += bytes);
        self.uploaded += bytes;
        self.choker.uploaded(key, bytes);
        if let Some(p) = self.peers.get_mut(&key) {
            p.up += bytes;
        }
    }

    /// Whether peer exchange may be used: never for a private torrent (BEP 27).
    pub fn pex_enabled(&self) -> bool {
        !self.meta.info.private
    }

    /// Sends each peer that negotiated ut_pex the changes in our connection set since it was last told,
    /// at most once a minute per peer (BEP 11). Call about once a second.
    pub fn pex_tick(&mut self, now: Instant) {
        if !self.pex_enabled() {
            return;
        }
        // Where each connected peer can be reached: the address we dialled, or its IP with the
        // listen port from its extension handshake. Peers that dialled us without saying are left out.
        let contacts: Vec<(PeerKey, SocketAddr, u8)> = self
            .peers
            .iter()
            .filter_map(|(k, p)| {
                let seed = if p.has.is_full() { pex_flags::SEED } else { 0 };
                if p.outgoing {
                    Some((*k, p.addr, pex_flags::REACHABLE | seed))
                } else {
                    p.listen_port
                        .map(|port| (*k, SocketAddr::new(p.addr.ip(), port), seed))
                }
            })
            .collect();
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.ut_pex.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let others: Vec<(SocketAddr, u8)> = contacts
                .iter()
                .filter(|c| c.0 != key)
                .map(|c| (c.1, c.2))
                .collect();
            let p = self.peers.get_mut(&key).expect("key from map");
            let (Some(their), Some(m)) = (p.ut_pex, p.pex.poll(now, &others)) else {
                continue;
            };
            tracing::debug!(
                to = %p.addr,
                added = m.added.len(),
                dropped = m.dropped.len(),
                "ut_pex sent"
            );
            let payload = m.encode();
            self.pex_sent += 1;
            self.push(
                key,
                &Msg::Extended {
                    ext_id: their,
                    payload: &payload,
                },
            );
        }
    }

    /// Writes the protocol-specific figures into the stats record.
    pub fn publish_stats(&mut self) {
        let mut records = self.records.clone();
        for p in self.peers.values() {
            let r = records.entry(p.addr.to_string()).or_default();
            r.bytes_down += p.down;
            r.bytes_up += p.up;
            r.blocks_from += p.blocks_from;
        }
        let have = self.picker.have();
        self.stats.set_gauge("pieces_have", have.count() as i64);
        self.stats.set_gauge("pieces_total", have.len() as i64);
        self.stats
            .set_extra("info_hash", self.meta.info_hash.to_hex().into());
        self.stats
            .set_extra("peers", serde_json::to_value(records).unwrap_or_default());
        self.stats.set_extra(
            "choke",
            serde_json::json!({
                "rounds": self.choker.rounds,
                "unchokes": self.unchokes,
                "chokes": self.chokes,
            }),
        );
        self.stats
            .set_extra("hash_failures", self.strikes.failed_pieces.into());
        self.stats.set_extra(
            "pex",
            serde_json::json!({
                "enabled": self.pex_enabled(),
                "sent": self.pex_sent,
                "received": self.pex_received,
                "ignored": self.pex_ignored,
                "learned": self.pex_learned,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{create, CreateOptions};
    use crate::storage::OpenMode;
    use rand::SeedableRng;

    const PIECE: usize = 2 * BLOCK_LEN as usize;

    /// A torrent of two 32 KiB pieces (two blocks each), an empty download folder and a peer that
    /// has everything and unchoked us.
    fn leecher(
        out: &std::path::Path,
        src: &std::path::Path,
    ) -> (Torrent, PeerKey, Vec<u8>, watch::Receiver<bool>) {
        let data: Vec<u8> = (0..2 * PIECE).map(|i| (i * 31 % 251) as u8).collect();
        let file = src.join("f.bin");
        std::fs::write(&file, &data).unwrap();
        let meta = create(
            &file,
            &CreateOptions {
                piece_length: Some(PIECE as u64),
                ..Default::default()
            },
        )
        .unwrap();
        let storage = Storage::open(&meta.info, out, OpenMode::Create).unwrap();
        let n = meta.info.num_pieces();
        let (mut t, done) = Torrent::new(
            Arc::new(meta),
            Arc::new(storage),
            Bitfield::new(n),
            PeerId([1; 20]),
            Stats::new("bittorrent", "leecher", "test"),
            StdRng::seed_from_u64(9),
        );
        let now = Instant::now();
        let outbox = Arc::new(Outbox::new(CancellationToken::new()));
        let key = t
            .add_peer(
                "127.0.0.1:7000".parse().unwrap(),
                PeerId([2; 20]),
                true,
                false,
                outbox,
                now,
            )
            .unwrap();
        t.on_msg(key, Msg::HaveAll, now).unwrap();
        t.on_msg(key, Msg::Unchoke, now).unwrap();
        t.fill_requests(key);
        (t, key, data, done)
    }

    fn piece_msg(data: &[u8], b: BlockRef) -> Msg<'_> {
        let at = b.index as usize * PIECE + b.begin as usize;
        Msg::Piece {
            index: b.index,
            begin: b.begin,
            data: &data[at..at + b.len as usize],
        }
    }

    #[test]
    fn choked_we_fetch_only_allowed_fast_pieces_until_one_is_rejected() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut t, key, data, _done) = leecher(out.path(), src.path());
        let now = Instant::now();
        // The peer chokes us and, being a BEP 6 peer, rejects what we had asked.
        let asked = t.peers[&key].outstanding.clone();
        t.on_msg(key, Msg::Choke, now).unwrap();
        for b in &asked {
            t.on_msg(key, Msg::Reject(*b), now).unwrap();
        }
        t.fill_requests(key);
        assert!(
            t.peers[&key].outstanding.is_empty(),
            "choked: nothing asked"
        );
        // Piece 1 is allowed fast (an index out of range is ignored): only its blocks are asked.
        t.on_msg(key, Msg::AllowedFast(99), now).unwrap();
        t.on_msg(key, Msg::AllowedFast(1), now).unwrap();
        t.fill_requests(key);
        let got = t.peers[&key].outstanding.clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|b| b.index == 1), "{got:?}");
        for b in &got {
            t.on_msg(key, piece_msg(&data, *b), now).unwrap();
        }
        assert!(t.picker.have().get(1) && !t.picker.have().get(0));
        // Piece 0 allowed too, but the peer rejects it: it is not asked again while choked.
        t.on_msg(key, Msg::AllowedFast(0), now).unwrap();
        t.fill_requests(key);
        let got = t.peers[&key].outstanding.clone();
        assert_eq!(got.len(), 2, "{got:?}");
        t.on_msg(key, Msg::Reject(got[0]), now).unwrap();
        t.on_msg(key, Msg::Reject(got[1]), now).unwrap();
        t.fill_requests(key);
        assert!(t.peers[&key].outstanding.is_empty());
        // Unchoked, it is asked for again.
        t.on_msg(key, Msg::Unchoke, now).unwrap();
        t.fill_requests(key);
        assert_eq!(t.peers[&key].outstanding.len(), 2);
    }

    #[test]
    fn a_failed_write_gives_the_blocks_back_without_blaming_the_peer() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut t, key, data, done) = leecher(out.path(), src.path());
        let asked = t.peers[&key].outstanding.clone();
        assert_eq!(asked.len(), 4, "every block requested");
        let piece0: Vec<BlockRef> = asked.iter().copied().filter(|b| b.index == 0).collect();
        assert_eq!(piece0.len(), 2);

        // Both blocks of piece 0 arrive in one socket read; the disk refuses the write.
        t.storage.fail_next_writes(1);
        let now = Instant::now();
        let mut accepted = Vec::new();
        for b in &piece0 {
            t.on_msg_batched(key, piece_msg(&data, *b), now, &mut accepted)
                .unwrap();
        }
        t.write_accepted(&mut accepted);
        let s = t.stats.snapshot();
        assert_eq!(s.errors.get("storage"), Some(&1));
        assert_eq!(s.errors.get("hash_mismatch"), None);
        assert!(!t.picker.have().get(0));
        assert_eq!(
            t.picker.started_pieces(),
            vec![0, 1],
            "piece 0 is partial again"
        );
        assert!(t.banned.is_empty());

        // The lost blocks are requested again and, once written, the piece verifies.
        t.fill_requests(key);
        let again: Vec<BlockRef> = t.peers[&key]
            .outstanding
            .iter()
            .copied()
            .filter(|b| b.index == 0)
            .collect();
        assert_eq!(again.len(), 2, "both lost blocks are asked for again");
        for b in again.iter().chain(asked.iter().filter(|b| b.index == 1)) {
            t.on_msg(key, piece_msg(&data, *b), now).unwrap();
        }
        assert!(t.picker.is_complete());
        assert!(*done.borrow());
        let s = t.stats.snapshot();
        assert_eq!(s.errors.get("hash_mismatch"), None);
        assert_eq!(s.errors.get("banned_peer"), None);
        assert_eq!(std::fs::read(out.path().join("f.bin")).unwrap(), data);
    }

    /// Block 0 of piece 0 is stored; block 1, which completes the piece, reaches the running hash but
    /// the disk refuses it. Returns the torrent, the peer, the data and the first requests, sorted.
    fn second_write_refused(
        out: &std::path::Path,
        src: &std::path::Path,
    ) -> (Torrent, PeerKey, Vec<u8>, Vec<BlockRef>) {
        let (mut t, key, data, _done) = leecher(out, src);
        let mut asked = t.peers[&key].outstanding.clone();
        asked.sort();
        let now = Instant::now();
        t.on_msg(key, piece_msg(&data, asked[0]), now).unwrap();
        t.storage.fail_next_writes(1);
        t.on_msg(key, piece_msg(&data, asked[1]), now).unwrap();
        assert!(!t.picker.have().get(0));
        t.fill_requests(key);
        (t, key, data, asked)
    }

    #[test]
    fn a_block_hashed_but_not_stored_is_verified_from_disk() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut t, key, _data, asked) = second_write_refused(out.path(), src.path());
        // The copy sent again is corrupt: what is on disk must be what gets checked.
        let bad = vec![0xeeu8; asked[1].len as usize];
        let m = Msg::Piece {
            index: asked[1].index,
            begin: asked[1].begin,
            data: &bad,
        };
        t.on_msg(key, m, Instant::now()).unwrap();
        assert!(
            !t.picker.have().get(0),
            "corrupt bytes on disk are not verified"
        );
        assert_eq!(t.stats.snapshot().errors.get("hash_mismatch"), Some(&1));
    }

    #[test]
    fn a_failed_write_of_one_block_leaves_the_pieces_written_before() {
        let (src, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (mut t, key, data, asked) = second_write_refused(out.path(), src.path());
        let mut out = t.peers[&key].outstanding.clone();
        out.sort();
        assert_eq!(
            out,
            vec![asked[1], asked[2], asked[3]],
            "only the lost block again"
        );
        t.on_msg(key, piece_msg(&data, asked[1]), Instant::now())
            .unwrap();
        assert!(t.picker.have().get(0));
        assert_eq!(t.stats.snapshot().errors.get("hash_mismatch"), None);
    }
}
