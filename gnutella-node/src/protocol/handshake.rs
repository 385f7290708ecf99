//! The connection handshake as consuming typed states (Gnutella 0.6 draft §2.2 "Connection"; notes §1).
//!
//! ```text
//! client                                   server
//! ClientAwaitResponse --GNUTELLA CONNECT/0.6 + headers-->  ServerAwaitConnect
//!                     <--GNUTELLA/0.6 200 OK + headers---  ServerAwaitAck      (or 503/403 + X-Try-Ultrapeers)
//! Link                ---GNUTELLA/0.6 200 OK + headers-->  Link
//! ```
//! Classic mode speaks 0.4 instead: `GNUTELLA CONNECT/0.4\n\n` → `GNUTELLA OK\n\n`, no headers.
//! Each `handle` consumes the state, so an out-of-order step does not compile.

use std::net::{IpAddr, SocketAddr};

use crate::codec::handshake::{Block, StartLine};
use crate::codec::Guid;

/// Our role in the 0.6 overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Routes queries between ultrapeers and shields leaves.
    Ultrapeer,
    /// Shielded: only talks to its ultrapeers, never relays.
    Leaf,
}

/// What the other end of a link is, from our point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// A 0.6 ultrapeer.
    Ultrapeer,
    /// A 0.6 leaf (our leaf, when we are an ultrapeer).
    Leaf,
    /// A 0.4 servent (classic flooding).
    Classic,
}

/// What we say about ourselves in a handshake.
#[derive(Clone, Debug)]
pub struct HandshakeConfig {
    /// `User-Agent`.
    pub user_agent: String,
    /// Speak 0.4 only.
    pub classic: bool,
    /// Our current role.
    pub role: Role,
    /// Our servent GUID (`GUID:` header).
    pub guid: Guid,
    /// Our listening address (`Listen-IP:`).
    pub listen: SocketAddr,
    /// We can inflate and will deflate (`Accept-Encoding`/`Content-Encoding: deflate`).
    pub deflate: bool,
    /// `X-Max-TTL`.
    pub max_ttl: u8,
    /// Refuse leaves that cannot inflate (gtk-gnutella's `prefer_compressed_gnet`), with 403.
    pub require_leaf_deflate: bool,
}

/// Room we have left, decided by the servent when a connection asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capacity {
    /// Another ultrapeer link fits.
    pub ultrapeer_slot: bool,
    /// Another leaf fits.
    pub leaf_slot: bool,
}

/// The negotiated link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The other end's kind.
    pub peer: PeerKind,
    /// We accepted leaf guidance on this link and must become a leaf.
    pub become_leaf: bool,
    /// The peer compresses what it sends (we inflate).
    pub deflate_in: bool,
    /// We compress what we send.
    pub deflate_out: bool,
    /// `User-Agent` of the peer.
    pub user_agent: Option<String>,
    /// The peer's listening address (`Listen-IP`/`X-My-Address`), if it said.
    pub listen_addr: Option<SocketAddr>,
    /// The peer's servent GUID, if it said.
    pub guid: Option<Guid>,
    /// Hosts it suggested (`X-Try-Ultrapeers`, `X-Try`).
    pub try_hosts: Vec<SocketAddr>,
    /// It said `GGEP:`: GGEP blocks may go in the pings and pongs we send it.
    pub ggep: bool,
    /// Its `X-Max-TTL`: the queries and pings we send it are trimmed to this TTL.
    pub max_ttl: Option<u8>,
    /// It said `Bye-Packet:`. Others are closed without a Bye message (as gtk-gnutella does); 0.4 links
    /// never get one (Bye came with 0.6).
    pub bye_packet: bool,
    /// Our IP as the peer sees it (`Remote-IP`, sent by a server); logged, not used to change what we
    /// advertise.
    pub remote_ip: Option<IpAddr>,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The other side answered with a non-200 code.
    #[error("rejected with {code} {reason}")]
    Rejected {
        /// Status code.
        code: u16,
        /// Reason text.
        reason: String,
        /// Hosts it suggested instead.
        try_hosts: Vec<SocketAddr>,
    },
    /// The other side broke the protocol (wrong line, wrong version).
    #[error("handshake protocol error: {0}")]
    Protocol(&'static str),
}

/// Cap on hosts taken from one `X-Try*` header.
pub const MAX_TRY_HOSTS: usize = 20;

/// Parses an `X-Try-Ultrapeers`/`X-Try` value (`ip:port,ip:port`); bad entries are skipped.
pub fn parse_try(v: &str) -> Vec<SocketAddr> {
    v.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .take(MAX_TRY_HOSTS)
        .collect()
}

fn try_hosts(b: &Block) -> Vec<SocketAddr> {
    let mut v = b.get("X-Try-Ultrapeers").map(parse_try).unwrap_or_default();
    v.extend(b.get("X-Try").map(parse_try).unwrap_or_default());
    v.truncate(MAX_TRY_HOSTS);
    v
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn common_headers(cfg: &HandshakeConfig, b: Block) -> Block {
    let mut b = b
        .header("User-Agent", cfg.user_agent.clone())
        .header("X-Ultrapeer", bool_str(cfg.role == Role::Ultrapeer))
        .header("X-Query-Routing", "0.1")
        .header("X-Ultrapeer-Query-Routing", "0.1")
        .header("GGEP", "0.5")
        .header("Pong-Caching", "0.1")
        .header("Bye-Packet", "0.1")
        .header("X-Max-TTL", cfg.max_ttl.to_string())
        .header("Listen-IP", cfg.listen.to_string())
        .header("GUID", cfg.guid.to_hex());
    if cfg.deflate {
        b = b.header("Accept-Encoding", "deflate");
    }
    b
}

/// `X-Max-TTL` (clamped to 1..=15, nonsense ignored) and `Bye-Packet` of a peer's block.
fn peer_caps(b: &Block) -> (Option<u8>, bool) {
    let max_ttl = b
        .get("X-Max-TTL")
        .and_then(|v| v.trim().parse::<u8>().ok())
        .map(|t| t.clamp(1, crate::codec::HARD_TTL_LIMIT));
    (max_ttl, b.get("Bye-Packet").is_some())
}

fn peer_fields(b: &Block) -> (Option<String>, Option<SocketAddr>, Option<Guid>) {
    let ua = b.get("User-Agent").map(str::to_owned);
    let listen = b
        .get("Listen-IP")
        .or_else(|| b.get("X-My-Address"))
        .and_then(|v| v.trim().parse().ok());
    let guid = b.get("GUID").and_then(|g| Guid::from_hex(g.trim()));
    (ua, listen, guid)
}

/// Client side, before anything is sent.
#[derive(Debug)]
pub struct ClientStart;

/// Client side, waiting for the server's answer.
#[derive(Debug)]
pub struct ClientAwaitResponse {
    cfg: HandshakeConfig,
}

impl ClientStart {
    /// Begins an outgoing handshake: returns the next state and the block to send.
    pub fn begin(cfg: HandshakeConfig) -> (ClientAwaitResponse, Block) {
        let b = if cfg.classic {
            Block::new(StartLine::Connect04)
        } else {
            common_headers(&cfg, Block::new(StartLine::Connect { major: 0, minor: 6 }))
        };
        (ClientAwaitResponse { cfg }, b)
    }
}

impl ClientAwaitResponse {
    /// Handles the server's answer. Returns the block to send as step 3 (`None` for 0.4) and the link.
    /// `may_become_leaf`: accept leaf guidance (`X-Ultrapeer-Needed: False`) if offered.
    pub fn handle(
        self,
        resp: &Block,
        may_become_leaf: bool,
    ) -> Result<(Option<Block>, Link), HandshakeError> {
        let cfg = self.cfg;
        if cfg.classic {
            return match resp.start {
                StartLine::Ok04 => Ok((
                    None,
                    Link {
                        peer: PeerKind::Classic,
                        become_leaf: false,
                        deflate_in: false,
                        deflate_out: false,
                        user_agent: None,
                        listen_addr: None,
                        guid: None,
                        try_hosts: Vec::new(),
                        ggep: false,
                        max_ttl: None,
                        bye_packet: false,
                        remote_ip: None,
                    },
                )),
                _ => Err(HandshakeError::Protocol("expected GNUTELLA OK")),
            };
        }
        let (code, reason) = match &resp.start {
            StartLine::Response { code, reason } => (*code, reason.clone()),
            StartLine::Ok04 => {
                return Err(HandshakeError::Protocol(
                    "bare GNUTELLA OK is not a 0.6 answer",
                ))
            }
            _ => {
                return Err(HandshakeError::Protocol(
                    "expected a GNUTELLA/0.6 status line",
                ))
            }
        };
        if code != 200 {
            return Err(HandshakeError::Rejected {
                code,
                reason,
                try_hosts: try_hosts(resp),
            });
        }
        let server_up = !resp.is_false("X-Ultrapeer");
        let guided = cfg.role == Role::Ultrapeer
            && server_up
            && resp.is_false("X-Ultrapeer-Needed")
            && may_become_leaf;
        let deflate_out = cfg.deflate && resp.lists("Accept-Encoding", "deflate");
        let mut ack = Block::new(StartLine::Response {
            code: 200,
            reason: "OK".into(),
        });
        if deflate_out {
            ack = ack.header("Content-Encoding", "deflate");
        }
        if guided {
            ack = ack.header("X-Ultrapeer", "False");
        }
        let (user_agent, listen_addr, guid) = peer_fields(resp);
        let peer = if server_up {
            PeerKind::Ultrapeer
        } else {
            PeerKind::Leaf
        };
        if cfg.role == Role::Leaf && peer == PeerKind::Leaf {
            return Err(HandshakeError::Protocol("leaf to leaf"));
        }
        Ok((
            Some(ack),
            Link {
                peer,
                become_leaf: guided,
                deflate_in: cfg.deflate && resp.lists("Content-Encoding", "deflate"),
                deflate_out,
                user_agent,
                listen_addr,
                guid,
                try_hosts: try_hosts(resp),
                ggep: resp.get("GGEP").is_some(),
                max_ttl: peer_caps(resp).0,
                bye_packet: peer_caps(resp).1,
                remote_ip: resp.get("Remote-IP").and_then(|v| v.trim().parse().ok()),
            },
        ))
    }
}

/// Server side, waiting for `GNUTELLA CONNECT`.
#[derive(Debug)]
pub struct ServerAwaitConnect {
    cfg: HandshakeConfig,
}

/// Server side, 200 sent, waiting for the client's step 3.
#[derive(Debug)]
pub struct ServerAwaitAck {
    cfg: HandshakeConfig,
    connect: Block,
    guided: bool,
    peer: PeerKind,
}

/// What the server does after the client's first block.
#[derive(Debug)]
pub enum ServerReply {
    /// Send the block (200) and wait for the client's acknowledgement.
    Accept(ServerAwaitAck, Block),
    /// 0.4: send the block (`GNUTELLA OK`); the link is up.
    Done(Block, Link),
    /// Send the block (503/403) and close.
    Reject(Block, HandshakeError),
}

impl ServerAwaitConnect {
    /// A new incoming handshake.
    pub fn new(cfg: HandshakeConfig) -> ServerAwaitConnect {
        ServerAwaitConnect { cfg }
    }

    /// Handles the client's `CONNECT` block. `cap` is the room we have; `try_hosts` go in any answer;
    /// `remote` is the client's address as we see it (`Remote-IP`).
    pub fn handle(
        self,
        req: &Block,
        cap: Capacity,
        try_hosts_out: &[SocketAddr],
        remote: Option<IpAddr>,
    ) -> Result<ServerReply, HandshakeError> {
        let cfg = self.cfg;
        match (&req.start, cfg.classic) {
            (StartLine::Connect04, true) => {
                return Ok(ServerReply::Done(
                    Block::new(StartLine::Ok04),
                    Link {
                        peer: PeerKind::Classic,
                        become_leaf: false,
                        deflate_in: false,
                        deflate_out: false,
                        user_agent: None,
                        listen_addr: None,
                        guid: None,
                        try_hosts: Vec::new(),
                        ggep: false,
                        max_ttl: None,
                        bye_packet: false,
                        remote_ip: None,
                    },
                ))
            }
            // Like gtk-gnutella, a 0.6 servent closes a 0.4 connect without a word, and vice versa.
            (StartLine::Connect04, false) => {
                return Err(HandshakeError::Protocol("0.4 connect to a 0.6 servent"))
            }
            (StartLine::Connect { .. }, true) => {
                return Err(HandshakeError::Protocol("0.6 connect to a classic servent"))
            }
            (StartLine::Connect { major, minor }, false) if (*major, *minor) >= (0, 6) => {}
            _ => return Err(HandshakeError::Protocol("expected GNUTELLA CONNECT/0.6")),
        }
        let tries = try_hosts_out
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let reject = |code: u16, reason: &str| {
            let mut b = Block::new(StartLine::Response {
                code,
                reason: reason.into(),
            })
            .header("User-Agent", cfg.user_agent.clone());
            if !tries.is_empty() {
                b = b.header("X-Try-Ultrapeers", tries.clone());
            }
            ServerReply::Reject(
                b,
                HandshakeError::Rejected {
                    code,
                    reason: reason.into(),
                    try_hosts: Vec::new(),
                },
            )
        };
        let peer_up = !req.is_false("X-Ultrapeer");
        if cfg.role == Role::Leaf {
            return Ok(reject(503, "Shielded leaf node"));
        }
        let mut guided = false;
        let peer = if peer_up {
            if cap.ultrapeer_slot {
                PeerKind::Ultrapeer
            } else if cap.leaf_slot {
                guided = true;
                PeerKind::Leaf
            } else {
                return Ok(reject(503, "Too many connections"));
            }
        } else {
            if !cap.leaf_slot {
                return Ok(reject(503, "Too many leaves"));
            }
            PeerKind::Leaf
        };
        if peer == PeerKind::Leaf
            && cfg.require_leaf_deflate
            && !req.lists("Accept-Encoding", "deflate")
        {
            return Ok(reject(403, "Gnet connection not compressed"));
        }
        let mut b = common_headers(
            &cfg,
            Block::new(StartLine::Response {
                code: 200,
                reason: "OK".into(),
            }),
        );
        if guided {
            b = b.header("X-Ultrapeer-Needed", "False");
        }
        if cfg.deflate && req.lists("Accept-Encoding", "deflate") {
            b = b.header("Content-Encoding", "deflate");
        }
        if let Some(ip) = remote {
            b = b.header("Remote-IP", ip.to_string());
        }
        if !tries.is_empty() {
            b = b.header("X-Try-Ultrapeers", tries);
        }
        Ok(ServerReply::Accept(
            ServerAwaitAck {
                cfg,
                connect: req.clone(),
                guided,
                peer,
            },
            b,
        ))
    }
}

impl ServerAwaitAck {
    /// Handles the client's step 3; returns the link.
    pub fn handle(self, ack: &Block) -> Result<Link, HandshakeError> {
        match &ack.start {
            StartLine::Response { code: 200, .. } => {}
            StartLine::Response { code, reason } => {
                return Err(HandshakeError::Rejected {
                    code: *code,
                    reason: reason.clone(),
                    try_hosts: Vec::new(),
                })
            }
            _ => return Err(HandshakeError::Protocol("expected GNUTELLA/0.6 200")),
        }
        if self.guided && !ack.is_false("X-Ultrapeer") {
            // We offered guidance because we had no ultrapeer slot: the client refused it.
            return Err(HandshakeError::Protocol("leaf guidance refused while full"));
        }
        let (user_agent, listen_addr, guid) = peer_fields(&self.connect);
        Ok(Link {
            peer: self.peer,
            become_leaf: false,
            deflate_in: self.cfg.deflate && ack.lists("Content-Encoding", "deflate"),
            deflate_out: self.cfg.deflate && self.connect.lists("Accept-Encoding", "deflate"),
            user_agent,
            listen_addr,
            guid,
            try_hosts: try_hosts(&self.connect),
            ggep: self.connect.get("GGEP").is_some(),
            max_ttl: peer_caps(&self.connect).0,
            bye_packet: peer_caps(&self.connect).1,
            remote_ip: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(role: Role) -> HandshakeConfig {
        HandshakeConfig {
            user_agent: "p2p-lab/0.1".into(),
            classic: false,
            role,
            guid: Guid([1; 16]),
            listen: "127.0.0.1:6346".parse().unwrap(),
            deflate: true,
            max_ttl: 4,
            require_leaf_deflate: true,
        }
    }

    fn wire(b: &Block) -> Block {
        Block::decode(&b.encode()).unwrap().unwrap().0
    }

    const ROOM: Capacity = Capacity {
        ultrapeer_slot: true,
        leaf_slot: true,
    };

    fn run(
        client: HandshakeConfig,
        server: HandshakeConfig,
        cap: Capacity,
        may_become_leaf: bool,
    ) -> Result<(Link, Link), HandshakeError> {
        let (c, b1) = ClientStart::begin(client);
        let s = ServerAwaitConnect::new(server);
        match s.handle(&wire(&b1), cap, &["10.0.0.9:6346".parse().unwrap()], None)? {
            ServerReply::Accept(s, b2) => {
                let (b3, cl) = c.handle(&wire(&b2), may_become_leaf)?;
                let sl = s.handle(&wire(&b3.unwrap()))?;
                Ok((cl, sl))
            }
            ServerReply::Done(b2, sl) => {
                let (b3, cl) = c.handle(&wire(&b2), may_become_leaf)?;
                assert!(b3.is_none());
                Ok((cl, sl))
            }
            ServerReply::Reject(b2, _) => c
                .handle(&wire(&b2), may_become_leaf)
                .map(|_| unreachable!()),
        }
    }

    #[test]
    fn case1_up_to_up_200_with_deflate_both_ways() {
        let (c, s) = run(cfg(Role::Ultrapeer), cfg(Role::Ultrapeer), ROOM, false).unwrap();
        assert_eq!(c.peer, PeerKind::Ultrapeer);
        assert_eq!(s.peer, PeerKind::Ultrapeer);
        assert!(c.deflate_in && c.deflate_out && s.deflate_in && s.deflate_out);
        assert_eq!(s.listen_addr, Some("127.0.0.1:6346".parse().unwrap()));
        assert_eq!(c.guid, Some(Guid([1; 16])));
        // Both said X-Max-TTL: 4 and Bye-Packet.
        assert_eq!((c.max_ttl, s.max_ttl), (Some(4), Some(4)));
        assert!(c.bye_packet && s.bye_packet);
    }

    #[test]
    fn peer_capabilities_remote_ip_and_odd_values() {
        let (c, _) = ClientStart::begin(cfg(Role::Ultrapeer));
        let resp = wire(
            &Block::new(StartLine::Response {
                code: 200,
                reason: "OK".into(),
            })
            .header("x-max-ttl", "200")
            .header("remote-ip", "10.1.2.3"),
        );
        let (_, l) = c.handle(&resp, false).unwrap();
        assert_eq!(l.max_ttl, Some(crate::codec::HARD_TTL_LIMIT));
        assert!(!l.bye_packet, "no Bye-Packet header");
        assert_eq!(l.remote_ip, Some("10.1.2.3".parse().unwrap()));
        let (c, _) = ClientStart::begin(cfg(Role::Ultrapeer));
        let resp = wire(
            &Block::new(StartLine::Response {
                code: 200,
                reason: "OK".into(),
            })
            .header("X-Max-TTL", "lots")
            .header("Remote-IP", "not an ip"),
        );
        let (_, l) = c.handle(&resp, false).unwrap();
        assert_eq!((l.max_ttl, l.remote_ip), (None, None));
    }

    #[test]
    fn case1_full_server_answers_503_with_x_try() {
        let e = run(
            cfg(Role::Ultrapeer),
            cfg(Role::Ultrapeer),
            Capacity::default(),
            false,
        )
        .unwrap_err();
        assert_eq!(
            e,
            HandshakeError::Rejected {
                code: 503,
                reason: "Too many connections".into(),
                try_hosts: vec!["10.0.0.9:6346".parse().unwrap()]
            }
        );
        // A shielded leaf turns everyone away.
        let e = run(cfg(Role::Ultrapeer), cfg(Role::Leaf), ROOM, false).unwrap_err();
        assert!(matches!(e, HandshakeError::Rejected { code: 503, .. }));
    }

    #[test]
    fn case1_any_header_case_and_version_07_answered_as_06() {
        let req = b"GNUTELLA CONNECT/0.7\r\nuser-agent: x\r\nx-ultrapeer: FALSE\r\naccept-encoding: DEFLATE\r\n\r\n";
        let (req, _) = Block::decode(req).unwrap().unwrap();
        let ServerReply::Accept(s, resp) = ServerAwaitConnect::new(cfg(Role::Ultrapeer))
            .handle(&req, ROOM, &[], Some("127.0.0.2".parse().unwrap()))
            .unwrap()
        else {
            panic!("should accept")
        };
        assert!(resp.encode().starts_with(b"GNUTELLA/0.6 200 OK\r\n"));
        assert_eq!(resp.get("remote-ip"), Some("127.0.0.2"));
        let ack = Block::decode(b"GNUTELLA/0.6 200 OK\r\n\r\n")
            .unwrap()
            .unwrap()
            .0;
        let link = s.handle(&ack).unwrap();
        assert_eq!(link.peer, PeerKind::Leaf);
        assert!(link.deflate_out && !link.deflate_in);
    }

    #[test]
    fn case1_bare_ok_is_not_an_answer_to_06() {
        let (c, _) = ClientStart::begin(cfg(Role::Leaf));
        let ok = Block::new(StartLine::Ok04);
        assert!(matches!(
            c.handle(&ok, false),
            Err(HandshakeError::Protocol(_))
        ));
    }

    #[test]
    fn case2_leaf_guidance() {
        let full_of_ups = Capacity {
            ultrapeer_slot: false,
            leaf_slot: true,
        };
        let (c, s) = run(
            cfg(Role::Ultrapeer),
            cfg(Role::Ultrapeer),
            full_of_ups,
            true,
        )
        .unwrap();
        assert!(c.become_leaf);
        assert_eq!(c.peer, PeerKind::Ultrapeer);
        assert_eq!(s.peer, PeerKind::Leaf);
        // A client that may not change role refuses, and the full server closes.
        assert!(run(
            cfg(Role::Ultrapeer),
            cfg(Role::Ultrapeer),
            full_of_ups,
            false
        )
        .is_err());
    }

    #[test]
    fn case2_leaf_without_deflate_gets_403() {
        let mut leaf = cfg(Role::Leaf);
        leaf.deflate = false;
        let e = run(leaf.clone(), cfg(Role::Ultrapeer), ROOM, false).unwrap_err();
        assert!(matches!(e, HandshakeError::Rejected { code: 403, .. }));
        let mut lenient = cfg(Role::Ultrapeer);
        lenient.require_leaf_deflate = false;
        let (c, s) = run(leaf, lenient, ROOM, false).unwrap();
        assert!(!c.deflate_in && !c.deflate_out && !s.deflate_in && !s.deflate_out);
    }

    #[test]
    fn deflate_is_negotiated_per_direction() {
        // Server can deflate, client cannot: nothing is compressed in either direction.
        let mut leaf = cfg(Role::Leaf);
        leaf.deflate = false;
        let mut up = cfg(Role::Ultrapeer);
        up.require_leaf_deflate = false;
        let (c, s) = run(leaf, up, ROOM, false).unwrap();
        assert_eq!(
            (c.deflate_in, c.deflate_out, s.deflate_in, s.deflate_out),
            (false, false, false, false)
        );
        // Client accepts deflate but the server does not: the server still inflates nothing, sends plain.
        let mut up = cfg(Role::Ultrapeer);
        up.deflate = false;
        let (c, s) = run(cfg(Role::Leaf), up, ROOM, false).unwrap();
        assert!(!c.deflate_out && !c.deflate_in && !s.deflate_out && !s.deflate_in);
    }

    #[test]
    fn classic_04_handshake_and_cross_version_refusals() {
        let mut classic = cfg(Role::Ultrapeer);
        classic.classic = true;
        let (c, s) = run(classic.clone(), classic.clone(), ROOM, false).unwrap();
        assert_eq!((c.peer, s.peer), (PeerKind::Classic, PeerKind::Classic));
        assert!(run(classic.clone(), cfg(Role::Ultrapeer), ROOM, false).is_err());
        assert!(run(cfg(Role::Ultrapeer), classic, ROOM, false).is_err());
    }
}
