//! One FastTrack session over TCP (`shared/protocols/kazaa.md` §2 "Handshake" and "Framing"): the clear
//! 12 + 8 handshake bytes, the network-name exchange, then framed packets through the cipher seam.

use std::io;
use std::net::SocketAddrV4;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::codec::frame::{
    choose_enc_type, decode_network_name, encode_network_name, session_seeds, CLIENT_HELLO_LEN,
    DEFAULT_ENC_TYPE, HELLO_RAND, SERVER_REPLY_LEN,
};
use crate::codec::{
    ClientHello, Frame, FrameDecoder, FrameEncoder, Packet, PassThroughCipher, ServerReply,
    StreamCipher,
};

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The receiving half of a session.
pub struct SessionReader {
    /// Counts every frame read, when set (the SN's pump counts on its own and leaves it unset).
    pub stats: Option<common::stats::Stats>,
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    dec: FrameDecoder,
    cipher: Box<dyn StreamCipher>,
}

/// The sending half of a session.
pub struct SessionWriter {
    /// Counts every frame written, when set.
    pub stats: Option<common::stats::Stats>,
    wr: OwnedWriteHalf,
    enc: FrameEncoder,
    cipher: Box<dyn StreamCipher>,
}

/// What the far end said during the handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its network name.
    pub network: String,
    /// Its TCP address.
    pub addr: SocketAddrV4,
}

fn v4(s: std::net::SocketAddr) -> SocketAddrV4 {
    match s {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(a) => SocketAddrV4::new(
            a.ip()
                .to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            a.port(),
        ),
    }
}

async fn read_name(
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    cipher: &mut dyn StreamCipher,
) -> io::Result<String> {
    // The name is read byte by byte: what follows it belongs to the framed stream.
    loop {
        if let Some((name, n)) = decode_network_name(buf).map_err(bad)? {
            buf.drain(..n);
            return Ok(name);
        }
        let mut b = [0u8; 1];
        rd.read_exact(&mut b).await?;
        cipher.apply(&mut b);
        buf.push(b[0]);
    }
}

fn split(
    stream: TcpStream,
    rx: Box<dyn StreamCipher>,
    tx: Box<dyn StreamCipher>,
) -> (SessionReader, SessionWriter) {
    let (rd, wr) = stream.into_split();
    (
        SessionReader {
            stats: None,
            rd,
            buf: Vec::new(),
            dec: FrameDecoder::new(),
            cipher: rx,
        },
        SessionWriter {
            stats: None,
            wr,
            enc: FrameEncoder::new(),
            cipher: tx,
        },
    )
}

/// Client side: hello, reply, the SN's name, ours. Fails if the networks differ.
pub async fn connect(
    stream: TcpStream,
    seed: u32,
    network: &str,
) -> io::Result<(Peer, SessionReader, SessionWriter)> {
    let addr = v4(stream.peer_addr()?);
    let mut stream = stream;
    let hello = ClientHello {
        rand: HELLO_RAND,
        seed,
        encoded_enc_type: PassThroughCipher::encode_enc_type(seed, DEFAULT_ENC_TYPE),
    };
    stream.write_all(&hello.to_bytes()).await?;
    let mut r = [0u8; SERVER_REPLY_LEN];
    stream.read_exact(&mut r).await?;
    let reply = ServerReply::from_bytes(&r);
    let enc = PassThroughCipher::decode_enc_type(reply.seed, reply.encoded_enc_type);
    let (up, down) = session_seeds(seed, reply.seed);
    let (mut reader, mut writer) = split(
        stream,
        Box::new(PassThroughCipher::new(down, enc)),
        Box::new(PassThroughCipher::new(up, enc)),
    );
    let network_far = read_name(&mut reader.rd, &mut reader.buf, reader.cipher.as_mut()).await?;
    let mut name = encode_network_name(network);
    writer.cipher.apply(&mut name);
    writer.wr.write_all(&name).await?;
    if network_far != network {
        return Err(bad(format!("network mismatch: {network_far:?}")));
    }
    Ok((
        Peer {
            network: network_far,
            addr,
        },
        reader,
        writer,
    ))
}

/// Server side, after the first `CLIENT_HELLO_LEN` bytes were read (the caller peeked them to tell a
/// binary session from `GET `/`GIVE`).
pub async fn accept(
    stream: TcpStream,
    hello: [u8; CLIENT_HELLO_LEN],
    seed: u32,
    network: &str,
) -> io::Result<(Peer, SessionReader, SessionWriter)> {
    let addr = v4(stream.peer_addr()?);
    let mut stream = stream;
    let hello = ClientHello::from_bytes(&hello);
    let requested = PassThroughCipher::decode_enc_type(hello.seed, hello.encoded_enc_type);
    let enc = choose_enc_type(requested);
    let reply = ServerReply {
        seed,
        encoded_enc_type: PassThroughCipher::encode_enc_type(seed, enc),
    };
    stream.write_all(&reply.to_bytes()).await?;
    let (up, down) = session_seeds(hello.seed, seed);
    let (mut reader, mut writer) = split(
        stream,
        Box::new(PassThroughCipher::new(up, enc)),
        Box::new(PassThroughCipher::new(down, enc)),
    );
    let mut name = encode_network_name(network);
    writer.cipher.apply(&mut name);
    writer.wr.write_all(&name).await?;
    let network_far = read_name(&mut reader.rd, &mut reader.buf, reader.cipher.as_mut()).await?;
    if network_far != network {
        return Err(bad(format!("network mismatch: {network_far:?}")));
    }
    Ok((
        Peer {
            network: network_far,
            addr,
        },
        reader,
        writer,
    ))
}

/// The stats name of a frame: the message name, or `ping`/`pong`.
pub fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Ping => "ping",
        Frame::Pong => "pong",
        Frame::Message { msg_type, payload } => Packet::decode(*msg_type, payload)
            .map(|p| p.message.name())
            .unwrap_or("invalid"),
    }
}

impl SessionReader {
    /// The next frame; `None` at a clean end of stream.
    /// Cancel-safe: dropping the future loses no bytes.
    pub async fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some((f, n)) = self.dec.decode(&self.buf).map_err(bad)? {
                self.buf.drain(..n);
                if let Some(s) = &self.stats {
                    s.msg_in(frame_name(&f), n);
                }
                return Ok(Some(f));
            }
            // Read into a scratch buffer so that a cancelled read (the ON's `select!` against its
            // timers) leaves `buf` untouched: this method is cancel-safe.
            let mut chunk = [0u8; READ_CHUNK];
            let n = self.rd.read(&mut chunk).await?;
            let start = self.buf.len();
            self.buf.extend_from_slice(&chunk[..n]);
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            self.cipher.apply(&mut self.buf[start..]);
        }
    }
}

impl SessionWriter {
    /// Sends one frame.
    pub async fn send_frame(&mut self, f: &Frame) -> io::Result<usize> {
        let mut out = Vec::new();
        self.enc.encode(f, &mut out).map_err(bad)?;
        self.cipher.apply(&mut out);
        self.wr.write_all(&out).await?;
        if let Some(s) = &self.stats {
            s.msg_out(frame_name(f), out.len());
        }
        Ok(out.len())
    }

    /// Sends one packet; returns the bytes written.
    pub async fn send(&mut self, p: &Packet) -> io::Result<usize> {
        let (msg_type, payload) = p.encode();
        self.send_frame(&Frame::Message { msg_type, payload }).await
    }
}
