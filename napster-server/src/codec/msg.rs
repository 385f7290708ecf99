//! Typed client messages (notes §2, message table) and the message type numbers.
//!
//! [`ClientMsg::decode`] turns a [`Frame`] into a typed request; [`ClientMsg::to_frame`] is its inverse (used
//! by `napster-client` and by the round-trip property test). Server replies are built by the protocol layer
//! with [`Frame::text`] from the layouts in the table.

use super::fields::{quote, split_first, FieldError, Fields};
use super::Frame;

/// Message type numbers (OpenNap names in comments where they differ).
pub mod ty {
    #![allow(missing_docs)]
    pub const ERROR: u16 = 0;
    pub const LOGIN: u16 = 2;
    pub const LOGIN_ACK: u16 = 3;
    pub const VERSION: u16 = 4;
    pub const REGISTER: u16 = 6;
    pub const NICK_CHECK: u16 = 7;
    pub const NICK_FREE: u16 = 8;
    pub const NICK_TAKEN: u16 = 9;
    pub const NICK_INVALID: u16 = 10;
    pub const CHECK_PASS: u16 = 11;
    pub const SHARE: u16 = 100;
    pub const UNSHARE: u16 = 102;
    pub const UNSHARE_ALL: u16 = 110;
    pub const SEARCH: u16 = 200;
    pub const SEARCH_RESULT: u16 = 201;
    pub const SEARCH_END: u16 = 202;
    pub const DOWNLOAD: u16 = 203;
    pub const DOWNLOAD_ACK: u16 = 204;
    pub const PRIVMSG: u16 = 205;
    pub const DOWNLOAD_ERROR: u16 = 206;
    pub const HOTLIST_ADD: u16 = 207;
    pub const HOTLIST_INIT: u16 = 208;
    pub const HOTLIST_ON: u16 = 209;
    pub const HOTLIST_OFF: u16 = 210;
    pub const BROWSE: u16 = 211;
    pub const BROWSE_ENTRY: u16 = 212;
    pub const BROWSE_END: u16 = 213;
    pub const STATS: u16 = 214;
    pub const DOWNLOAD_START: u16 = 218;
    pub const DOWNLOAD_END: u16 = 219;
    pub const UPLOAD_START: u16 = 220;
    pub const UPLOAD_END: u16 = 221;
    pub const OPTIONS: u16 = 300;
    pub const HOTLIST_ACK: u16 = 301;
    pub const HOTLIST_ERROR: u16 = 302;
    pub const HOTLIST_REMOVE: u16 = 303;
    pub const DISCONNECTING: u16 = 316;
    pub const JOIN: u16 = 400;
    pub const PART: u16 = 401;
    pub const PUBLIC: u16 = 402;
    pub const PUBLIC_OUT: u16 = 403;
    pub const NOTICE: u16 = 404;
    pub const JOIN_ACK: u16 = 405;
    pub const CHAN_JOIN: u16 = 406;
    pub const CHAN_PART: u16 = 407;
    pub const CHAN_MEMBER: u16 = 408;
    pub const CHAN_MEMBERS_END: u16 = 409;
    pub const CHAN_TOPIC: u16 = 410;
    pub const PUSH_REQUEST: u16 = 500;
    pub const PUSH: u16 = 501;
    pub const LINK_SPEED: u16 = 600;
    pub const LINK_SPEED_REPLY: u16 = 601;
    pub const WHOIS: u16 = 603;
    pub const WHOIS_REPLY: u16 = 604;
    pub const WHOWAS: u16 = 605;
    pub const UPLOAD_REQUEST: u16 = 607;
    pub const UPLOAD_ACCEPT: u16 = 608;
    pub const LIST_CHANNELS: u16 = 617;
    pub const CHANNEL_ENTRY: u16 = 618;
    pub const MOTD: u16 = 621;
    pub const CHANGE_SPEED: u16 = 700;
    pub const CHANGE_DATA_PORT: u16 = 703;
    pub const GHOST: u16 = 748;
    pub const SERVER_PING: u16 = 750;
    pub const PING: u16 = 751;
    pub const PONG: u16 = 752;
    pub const SHARE_DIR: u16 = 870;
    pub const CONNECTION_TEST: u16 = 920;
    pub const SHARE_ANY: u16 = 10300;
}

/// Why a frame of a known type has a payload the message cannot be built from.
pub type MsgError = FieldError;

/// One shared file as described in 100/870/201/212: `"<path>" <md5> <size> <bitrate> <freq> <secs>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareInfo {
    /// Path as the client names it (Windows style, `C:\mp3\x.mp3`).
    pub path: String,
    /// The client's MD5 text (OpenNap tolerates any token; all zeros when unknown).
    pub md5: String,
    /// Size in bytes.
    pub size: u64,
    /// Bitrate in kbit/s.
    pub bitrate: u32,
    /// Sample rate in Hz.
    pub freq: u32,
    /// Duration in seconds.
    pub secs: u32,
}

impl ShareInfo {
    fn read(f: &mut Fields<'_>) -> Result<Self, MsgError> {
        Ok(ShareInfo {
            path: f.str("path")?.to_owned(),
            md5: f.str("md5")?.to_owned(),
            size: f.num("size")?,
            bitrate: f.num("bitrate")?,
            freq: f.num("freq")?,
            secs: f.num("secs")?,
        })
    }

    /// The layout of a 100 payload (also the tail of 212).
    pub fn to_fields(&self) -> Result<String, MsgError> {
        Ok(format!(
            "{} {} {} {} {} {}",
            quote(&self.path)?,
            self.md5,
            self.size,
            self.bitrate,
            self.freq,
            self.secs
        ))
    }
}

/// The fields of a login (2) or registration (6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// Requested nick.
    pub nick: String,
    /// Password in clear (the protocol predates TLS).
    pub password: String,
    /// Data port; 0 means firewalled. Kept wide so the server can report a bad value.
    pub port: u32,
    /// Client name and version.
    pub client: String,
    /// Link-speed code, 0..=10 when valid.
    pub speed: u32,
}

/// A request from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// 2: log in.
    Login(Login),
    /// 6: register and log in.
    Register(Login, String),
    /// 4: version check.
    Version(String),
    /// 7: is this nick free?
    NickCheck(String),
    /// 11, 300, 920: accepted before login and ignored.
    Ignored(u16),
    /// 100: share one file.
    Share(ShareInfo),
    /// 102: stop sharing one file.
    Unshare(String),
    /// 110: stop sharing everything.
    UnshareAll,
    /// 870: share several files of one directory; each `path` is the bare file name.
    ShareDir {
        /// Directory, joined to each name with `\`.
        dir: String,
        /// The files.
        files: Vec<ShareInfo>,
    },
    /// 10300: share a file of any media type: `"<path>" <size> <md5> <type>`.
    ShareAny {
        /// Path.
        path: String,
        /// Size in bytes.
        size: u64,
        /// MD5 text.
        md5: String,
        /// `audio`, `video`, `application`, `image` or `text`.
        kind: String,
    },
    /// 200: search; the query syntax is parsed by the protocol layer.
    Search(String),
    /// 203: download request `<nick> "<path>"`.
    Download(String, String),
    /// 500: download from a firewalled user.
    PushRequest(String, String),
    /// 608: the uploader accepts an upload request.
    UploadAccept(String, String),
    /// 205: private message `<to> <text>`.
    PrivateMessage(String, String),
    /// 207: add to hotlist.
    HotlistAdd(String),
    /// 208: hotlist entry sent at login.
    HotlistInit(String),
    /// 303: remove from hotlist.
    HotlistRemove(String),
    /// 211: browse a user's files.
    Browse(String),
    /// 214: server stats.
    Stats,
    /// 218: a download started.
    DownloadStart,
    /// 219: a download finished.
    DownloadEnd,
    /// 220: an upload started.
    UploadStart,
    /// 221: an upload finished.
    UploadEnd,
    /// 400: join a channel.
    Join(String),
    /// 401: leave a channel.
    Part(String),
    /// 402: public message `<chan> <text>`.
    Public(String, String),
    /// 617: list channels.
    ListChannels,
    /// 600: link speed of a user.
    LinkSpeed(String),
    /// 603: whois.
    Whois(String),
    /// 750: server ping (payload echoed by some servers).
    ServerPing(String),
    /// 751: ping a user.
    Ping(String),
    /// 752: answer a ping.
    Pong(String),
    /// 700: change link speed.
    ChangeSpeed(u32),
    /// 703: change data port.
    ChangeDataPort(u32),
    /// Any other type: left to the server to refuse (`Unknown command code N`).
    Unknown(u16),
}

fn one(payload: &str, name: &'static str) -> Result<String, MsgError> {
    let mut f = Fields::new(payload)?;
    Ok(f.str(name)?.to_owned())
}

/// 102's payload is the filename itself, unquoted and with its spaces, as OpenNap reads it
/// (`remove_file.c` looks the raw packet up) and TekNap sends it (`"%s"`). A payload wrapped in one pair of
/// quotes is also accepted with the quotes removed: a shared path can never contain `"` (100, 870 and 10300
/// quote the path with no escape), so `"x"` cannot be a real filename and the reading is unambiguous.
fn unshare_path(payload: &str) -> Result<String, MsgError> {
    if payload.is_empty() {
        return Err(FieldError::Missing("path"));
    }
    let inner = payload
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|r| !r.contains('"'));
    Ok(inner.unwrap_or(payload).to_owned())
}

fn two(payload: &str) -> Result<(String, String), MsgError> {
    let mut f = Fields::new(payload)?;
    Ok((f.str("nick")?.to_owned(), f.str("path")?.to_owned()))
}

fn login(f: &mut Fields<'_>) -> Result<Login, MsgError> {
    Ok(Login {
        nick: f.str("nick")?.to_owned(),
        password: f.str("password")?.to_owned(),
        port: f.num("port")?,
        client: f.str("client")?.to_owned(),
        speed: f.num("speed")?,
    })
}

impl ClientMsg {
    /// Decodes a frame received by the server.
    pub fn decode(frame: &Frame) -> Result<ClientMsg, MsgError> {
        use ty::*;
        let p = frame.text_payload();
        let p = p.as_str();
        Ok(match frame.ty {
            LOGIN => ClientMsg::Login(login(&mut Fields::new(p)?)?),
            REGISTER => {
                let mut f = Fields::new(p)?;
                let l = login(&mut f)?;
                ClientMsg::Register(l, f.opt_str().unwrap_or("").to_owned())
            }
            VERSION => ClientMsg::Version(p.to_owned()),
            NICK_CHECK => ClientMsg::NickCheck(one(p, "nick")?),
            CHECK_PASS | OPTIONS | CONNECTION_TEST => ClientMsg::Ignored(frame.ty),
            SHARE => ClientMsg::Share(ShareInfo::read(&mut Fields::new(p)?)?),
            UNSHARE => ClientMsg::Unshare(unshare_path(p)?),
            UNSHARE_ALL => ClientMsg::UnshareAll,
            SHARE_DIR => {
                let mut f = Fields::new(p)?;
                let dir = f.str("dir")?.to_owned();
                let mut files = Vec::with_capacity(f.remaining() / 6);
                while f.remaining() > 0 {
                    files.push(ShareInfo::read(&mut f)?);
                }
                ClientMsg::ShareDir { dir, files }
            }
            SHARE_ANY => {
                let mut f = Fields::new(p)?;
                ClientMsg::ShareAny {
                    path: f.str("path")?.to_owned(),
                    size: f.num("size")?,
                    md5: f.str("md5")?.to_owned(),
                    kind: f.str("type")?.to_owned(),
                }
            }
            SEARCH => ClientMsg::Search(p.to_owned()),
            DOWNLOAD => {
                let (n, f) = two(p)?;
                ClientMsg::Download(n, f)
            }
            PUSH_REQUEST => {
                let (n, f) = two(p)?;
                ClientMsg::PushRequest(n, f)
            }
            UPLOAD_ACCEPT => {
                let (n, f) = two(p)?;
                ClientMsg::UploadAccept(n, f)
            }
            PRIVMSG => {
                let (to, text) = split_first(p);
                if to.is_empty() {
                    return Err(FieldError::Missing("nick"));
                }
                ClientMsg::PrivateMessage(to.to_owned(), text.to_owned())
            }
            HOTLIST_ADD => ClientMsg::HotlistAdd(one(p, "nick")?),
            HOTLIST_INIT => ClientMsg::HotlistInit(one(p, "nick")?),
            HOTLIST_REMOVE => ClientMsg::HotlistRemove(one(p, "nick")?),
            BROWSE => ClientMsg::Browse(one(p, "nick")?),
            STATS => ClientMsg::Stats,
            DOWNLOAD_START => ClientMsg::DownloadStart,
            DOWNLOAD_END => ClientMsg::DownloadEnd,
            UPLOAD_START => ClientMsg::UploadStart,
            UPLOAD_END => ClientMsg::UploadEnd,
            JOIN => ClientMsg::Join(one(p, "channel")?),
            PART => ClientMsg::Part(one(p, "channel")?),
            PUBLIC => {
                let (chan, text) = split_first(p);
                if chan.is_empty() {
                    return Err(FieldError::Missing("channel"));
                }
                ClientMsg::Public(chan.to_owned(), text.to_owned())
            }
            LIST_CHANNELS => ClientMsg::ListChannels,
            LINK_SPEED => ClientMsg::LinkSpeed(one(p, "nick")?),
            WHOIS => ClientMsg::Whois(one(p, "nick")?),
            SERVER_PING => ClientMsg::ServerPing(p.to_owned()),
            PING => ClientMsg::Ping(one(p, "nick")?),
            PONG => ClientMsg::Pong(one(p, "nick")?),
            CHANGE_SPEED => ClientMsg::ChangeSpeed(Fields::new(p)?.num("speed")?),
            CHANGE_DATA_PORT => ClientMsg::ChangeDataPort(Fields::new(p)?.num("port")?),
            other => ClientMsg::Unknown(other),
        })
    }

    /// Encodes the message as a client sends it.
    pub fn to_frame(&self) -> Result<Frame, MsgError> {
        use ty::*;
        let l = |l: &Login| -> Result<String, MsgError> {
            Ok(format!(
                "{} {} {} {} {}",
                l.nick,
                l.password,
                l.port,
                quote(&l.client)?,
                l.speed
            ))
        };
        let np =
            |n: &str, p: &str| -> Result<String, MsgError> { Ok(format!("{n} {}", quote(p)?)) };
        let (t, text) = match self {
            ClientMsg::Login(x) => (LOGIN, l(x)?),
            ClientMsg::Register(x, email) => (REGISTER, format!("{} {email}", l(x)?)),
            ClientMsg::Version(v) => (VERSION, v.clone()),
            ClientMsg::NickCheck(n) => (NICK_CHECK, n.clone()),
            ClientMsg::Ignored(t) => (*t, String::new()),
            ClientMsg::Share(s) => (SHARE, s.to_fields()?),
            // Raw, as OpenNap expects; a quote cannot be in a shared path, so refusing it loses nothing.
            ClientMsg::Unshare(p) if p.contains('"') => return Err(FieldError::QuoteInField),
            ClientMsg::Unshare(p) => (UNSHARE, p.clone()),
            ClientMsg::UnshareAll => (UNSHARE_ALL, String::new()),
            ClientMsg::ShareDir { dir, files } => {
                let mut s = quote(dir)?;
                for f in files {
                    s.push(' ');
                    s.push_str(&f.to_fields()?);
                }
                (SHARE_DIR, s)
            }
            ClientMsg::ShareAny {
                path,
                size,
                md5,
                kind,
            } => (SHARE_ANY, format!("{} {size} {md5} {kind}", quote(path)?)),
            ClientMsg::Search(q) => (SEARCH, q.clone()),
            ClientMsg::Download(n, p) => (DOWNLOAD, np(n, p)?),
            ClientMsg::PushRequest(n, p) => (PUSH_REQUEST, np(n, p)?),
            ClientMsg::UploadAccept(n, p) => (UPLOAD_ACCEPT, np(n, p)?),
            ClientMsg::PrivateMessage(n, t) => (PRIVMSG, format!("{n} {t}")),
            ClientMsg::HotlistAdd(n) => (HOTLIST_ADD, n.clone()),
            ClientMsg::HotlistInit(n) => (HOTLIST_INIT, n.clone()),
            ClientMsg::HotlistRemove(n) => (HOTLIST_REMOVE, n.clone()),
            ClientMsg::Browse(n) => (BROWSE, n.clone()),
            ClientMsg::Stats => (STATS, String::new()),
            ClientMsg::DownloadStart => (DOWNLOAD_START, String::new()),
            ClientMsg::DownloadEnd => (DOWNLOAD_END, String::new()),
            ClientMsg::UploadStart => (UPLOAD_START, String::new()),
            ClientMsg::UploadEnd => (UPLOAD_END, String::new()),
            ClientMsg::Join(c) => (JOIN, c.clone()),
            ClientMsg::Part(c) => (PART, c.clone()),
            ClientMsg::Public(c, t) => (PUBLIC, format!("{c} {t}")),
            ClientMsg::ListChannels => (LIST_CHANNELS, String::new()),
            ClientMsg::LinkSpeed(n) => (LINK_SPEED, n.clone()),
            ClientMsg::Whois(n) => (WHOIS, n.clone()),
            ClientMsg::ServerPing(p) => (SERVER_PING, p.clone()),
            ClientMsg::Ping(n) => (PING, n.clone()),
            ClientMsg::Pong(n) => (PONG, n.clone()),
            ClientMsg::ChangeSpeed(s) => (CHANGE_SPEED, s.to_string()),
            ClientMsg::ChangeDataPort(p) => (CHANGE_DATA_PORT, p.to_string()),
            ClientMsg::Unknown(t) => (*t, String::new()),
        };
        Ok(Frame::text(t, &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unshare_takes_the_raw_payload_and_a_quoted_form() {
        let d = |p: &str| ClientMsg::decode(&Frame::text(ty::UNSHARE, p));
        let raw = r"C:\mp3\hey jude.mp3";
        assert_eq!(d(raw), Ok(ClientMsg::Unshare(raw.into())));
        assert_eq!(d(&format!("\"{raw}\"")), Ok(ClientMsg::Unshare(raw.into())));
        assert_eq!(d(r#""a" "b""#), Ok(ClientMsg::Unshare(r#""a" "b""#.into())));
        assert_eq!(d(""), Err(FieldError::Missing("path")));
        let f = ClientMsg::Unshare(raw.into()).to_frame().unwrap();
        assert_eq!(f.text_payload(), raw);
        assert!(ClientMsg::Unshare("a\"b".into()).to_frame().is_err());
    }

    #[test]
    fn teknap_register_line_decodes() {
        let f = Frame::text(6, "teknap2 pw2 6699 \"TekNap\" 0 blah@opennap");
        let m = ClientMsg::decode(&f).unwrap();
        let ClientMsg::Register(l, email) = m else {
            panic!("not a register: {m:?}")
        };
        assert_eq!(
            (
                l.nick.as_str(),
                l.port,
                l.client.as_str(),
                l.speed,
                email.as_str()
            ),
            ("teknap2", 6699, "TekNap", 0, "blah@opennap")
        );
    }

    #[test]
    fn short_login_names_the_missing_field() {
        let f = Frame::text(2, "nick pass 6699");
        assert_eq!(ClientMsg::decode(&f), Err(FieldError::Missing("client")));
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_]{1,10}"
    }
    fn path() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 \\\\._-]{0,30}"
    }
    fn share() -> impl Strategy<Value = ShareInfo> {
        (
            path(),
            word(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(path, md5, size, bitrate, freq, secs)| ShareInfo {
                path,
                md5,
                size,
                bitrate,
                freq,
                secs,
            })
    }
    fn login_s() -> impl Strategy<Value = Login> {
        (word(), word(), any::<u32>(), path(), any::<u32>()).prop_map(
            |(nick, password, port, client, speed)| Login {
                nick,
                password,
                port,
                client,
                speed,
            },
        )
    }
    fn msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            login_s().prop_map(ClientMsg::Login),
            (login_s(), word()).prop_map(|(l, e)| ClientMsg::Register(l, e)),
            word().prop_map(ClientMsg::NickCheck),
            share().prop_map(ClientMsg::Share),
            "[a-zA-Z0-9 \\\\._-]{1,30}".prop_map(ClientMsg::Unshare),
            Just(ClientMsg::UnshareAll),
            (path(), proptest::collection::vec(share(), 0..5))
                .prop_map(|(dir, files)| ClientMsg::ShareDir { dir, files }),
            (path(), any::<u64>(), word(), word()).prop_map(|(path, size, md5, kind)| {
                ClientMsg::ShareAny {
                    path,
                    size,
                    md5,
                    kind,
                }
            }),
            (word(), path()).prop_map(|(n, p)| ClientMsg::Download(n, p)),
            (word(), path()).prop_map(|(n, p)| ClientMsg::PushRequest(n, p)),
            (word(), path()).prop_map(|(n, p)| ClientMsg::UploadAccept(n, p)),
            (word(), "[ -~]{0,40}").prop_map(|(n, t)| ClientMsg::PrivateMessage(n, t)),
            (word(), "[ -~]{0,40}").prop_map(|(n, t)| ClientMsg::Public(n, t)),
            word().prop_map(ClientMsg::Browse),
            word().prop_map(ClientMsg::Whois),
            word().prop_map(ClientMsg::Ping),
            word().prop_map(ClientMsg::Join),
            Just(ClientMsg::Stats),
            Just(ClientMsg::DownloadStart),
            Just(ClientMsg::UploadEnd),
            Just(ClientMsg::ListChannels),
            any::<u32>().prop_map(ClientMsg::ChangeSpeed),
        ]
    }

    proptest! {
        #[test]
        fn client_messages_round_trip(m in msg()) {
            let f = m.to_frame().unwrap();
            let wire = f.to_bytes().unwrap();
            let (back, _) = Frame::decode_with_limit(&wire, crate::codec::MAX_PAYLOAD).unwrap().unwrap();
            prop_assert_eq!(ClientMsg::decode(&back).unwrap(), m);
        }

        #[test]
        fn arbitrary_payloads_give_errors_not_panics(t in prop_oneof![0u16..1000, Just(10300u16)], payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClientMsg::decode(&Frame { ty: t, payload });
        }
    }
}
