//! Bitrate, sample rate and duration of an MP3, for the share messages (OpenNap `napster.txt` message 100:
//! `"<filename>" <md5> <size> <bitrate> <frequency> <time>`), read from the MPEG audio frame headers
//! (ISO 11172-3 §2.4.2.3, ISO 13818-3 for MPEG-2 and the unofficial MPEG-2.5) and the Xing/Info VBR header.
//!
//! The caller skips the ID3v2 tag (`common::hash::napster::id3v2_tag_len`) and hands in the first bytes of
//! the audio plus the file's size. The first frame header must be confirmed by a second one where its
//! length says the next frame starts, so stray `FF Fx` bytes in a non-MP3 are not taken for audio. With a
//! Xing/Info header the duration is its frame count times the samples per frame, and the bitrate the
//! audio's average; otherwise (constant bitrate) the duration is the audio bytes over the first frame's
//! bitrate. Anything else gives `None` and the caller falls back to its defaults.

use common::hash::napster::is_mpeg_frame_header;

/// How far into the audio we look for the first frame header.
pub const SYNC_SEARCH: usize = 64 * 1024;

/// Bytes of audio the caller should read (sync search plus two frames and a VBR header).
pub const READ_LEN: usize = SYNC_SEARCH + 4096;

/// What a share announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mp3Info {
    /// Kilobits per second (average for VBR).
    pub bitrate: u32,
    /// Sample rate in Hz.
    pub freq: u32,
    /// Duration in whole seconds.
    pub secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Mpeg1,
    Mpeg2,
    Mpeg25,
}

/// One decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    version: Version,
    /// 1, 2 or 3.
    layer: u8,
    kbps: u32,
    freq: u32,
    padding: bool,
    mono: bool,
}

const KBPS_V1: [[u32; 16]; 3] = [
    // Layer I
    [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 0,
    ],
    // Layer II
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 0,
    ],
    // Layer III
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0,
    ],
];

const KBPS_V2: [[u32; 16]; 2] = [
    // Layer I
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256, 0,
    ],
    // Layers II and III
    [
        0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0,
    ],
];

impl Header {
    fn parse(b: &[u8]) -> Option<Header> {
        if !is_mpeg_frame_header(b) {
            return None;
        }
        let version = match (b[1] >> 3) & 3 {
            0 => Version::Mpeg25,
            2 => Version::Mpeg2,
            3 => Version::Mpeg1,
            _ => return None,
        };
        let layer = 4 - ((b[1] >> 1) & 3);
        let bi = usize::from(b[2] >> 4);
        let kbps = match version {
            Version::Mpeg1 => KBPS_V1[usize::from(layer - 1)][bi],
            _ => KBPS_V2[usize::from(layer != 1)][bi],
        };
        // Index 0 is "free format": no fixed frame length, so no way to walk the frames.
        if kbps == 0 {
            return None;
        }
        let base = [44_100, 48_000, 32_000].get(usize::from((b[2] >> 2) & 3))?;
        let freq = match version {
            Version::Mpeg1 => *base,
            Version::Mpeg2 => base / 2,
            Version::Mpeg25 => base / 4,
        };
        Some(Header {
            version,
            layer,
            kbps,
            freq,
            padding: b[2] & 2 != 0,
            mono: b[3] >> 6 == 3,
        })
    }

    fn samples(&self) -> u32 {
        match (self.layer, self.version) {
            (1, _) => 384,
            (2, _) | (3, Version::Mpeg1) => 1152,
            _ => 576,
        }
    }

    /// Frame length in bytes, header included.
    fn len(&self) -> usize {
        let pad = u32::from(self.padding);
        let n = if self.layer == 1 {
            (12 * self.kbps * 1000 / self.freq + pad) * 4
        } else {
            self.samples() / 8 * self.kbps * 1000 / self.freq + pad
        };
        n as usize
    }

    /// Where a Xing/Info tag sits in the frame: after the 4-byte header and the side information.
    fn xing_offset(&self) -> usize {
        4 + match (self.version, self.mono) {
            (Version::Mpeg1, false) => 32,
            (Version::Mpeg1, true) | (_, false) => 17,
            (_, true) => 9,
        }
    }
}

/// Reads the audio fields from `audio` (the bytes after any ID3v2 tag), of which the file holds
/// `audio_len` in total; `None` when no confirmed MPEG audio frame is found.
pub fn parse(audio: &[u8], audio_len: u64) -> Option<Mp3Info> {
    let limit = audio.len().min(SYNC_SEARCH);
    let (start, h) = (0..limit).find_map(|i| {
        let h = Header::parse(&audio[i..])?;
        let next = audio.get(i + h.len()..)?;
        Header::parse(next)
            .filter(|n| n.version == h.version && n.layer == h.layer && n.freq == h.freq)
            .map(|_| (i, h))
    })?;
    let audio_bytes = audio_len.saturating_sub(start as u64);
    let x = start + h.xing_offset();
    let frames = match audio.get(x..x + 12) {
        Some(t) if (&t[..4] == b"Xing" || &t[..4] == b"Info") && t[7] & 1 != 0 => {
            Some(u32::from_be_bytes([t[8], t[9], t[10], t[11]]))
        }
        _ => None,
    };
    let (bitrate, secs) = match frames.filter(|f| *f > 0) {
        Some(frames) => {
            let secs = f64::from(frames) * f64::from(h.samples()) / f64::from(h.freq);
            let kbps = (audio_bytes as f64 * 8.0 / secs / 1000.0).round();
            (kbps.min(f64::from(u32::MAX)) as u32, secs)
        }
        None => (
            h.kbps,
            audio_bytes as f64 * 8.0 / (f64::from(h.kbps) * 1000.0),
        ),
    };
    Some(Mp3Info {
        bitrate,
        freq: h.freq,
        secs: secs.min(f64::from(u32::MAX)) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A 4-byte header: MPEG-1 Layer III at `bi` (bitrate index) and `si` (sample-rate index), stereo.
    fn header(version_bits: u8, bi: u8, si: u8, mono: bool) -> [u8; 4] {
        [
            0xFF,
            0xE0 | version_bits << 3 | 0b01 << 1 | 1,
            bi << 4 | si << 2,
            if mono { 0xC0 } else { 0x00 },
        ]
    }

    /// `n` frames of the given header, padded with zeros to their length.
    fn stream(h: [u8; 4], n: usize) -> Vec<u8> {
        let len = Header::parse(&h).unwrap().len();
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend_from_slice(&h);
            v.resize(v.len() + len - 4, 0);
        }
        v
    }

    #[test]
    fn cbr_128k_44100() {
        let h = header(3, 9, 0, false);
        assert_eq!(Header::parse(&h).unwrap().len(), 417);
        // 240 s at 128 kbit/s.
        let size = 240 * 16_000;
        let v = stream(h, 20);
        assert_eq!(
            parse(&v, size),
            Some(Mp3Info {
                bitrate: 128,
                freq: 44_100,
                secs: 240
            })
        );
    }

    #[test]
    fn junk_before_the_first_frame_and_a_false_sync_are_skipped() {
        let mut v = b"junk\xFF\xFB\x90\x00more".to_vec();
        let at = v.len() as u64;
        v.extend(stream(header(2, 8, 1, true), 5));
        let info = parse(&v, 10_000 + at).unwrap();
        assert_eq!((info.bitrate, info.freq), (64, 24_000));
        assert_eq!(info.secs, 1, "10,000 bytes at 64 kbit/s");
    }

    #[test]
    fn xing_vbr_header_gives_duration_and_average_bitrate() {
        let h = header(3, 9, 0, false);
        let mut v = stream(h, 3);
        let x = Header::parse(&h).unwrap().xing_offset();
        v[x..x + 4].copy_from_slice(b"Xing");
        v[x + 7] = 1;
        // 38,281 frames of 1152 samples at 44.1 kHz is 1000 s.
        v[x + 8..x + 12].copy_from_slice(&38_281u32.to_be_bytes());
        let info = parse(&v, 24_000_000).unwrap();
        assert_eq!(info.secs, 999);
        assert_eq!(info.bitrate, 192);
        assert_eq!(info.freq, 44_100);
    }

    #[test]
    fn not_an_mp3() {
        assert_eq!(parse(b"", 0), None);
        assert_eq!(parse(b"%PDF-1.4 plain text", 100), None);
        // One lone frame header without a second one is not trusted.
        assert_eq!(parse(&header(3, 9, 0, false), 1000), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..4096), len in any::<u64>()) {
            let _ = parse(&v, len);
        }

        #[test]
        fn every_valid_cbr_header_round_trips(version in prop_oneof![Just(0u8), Just(2), Just(3)],
                                              bi in 1u8..15, si in 0u8..3, mono: bool, secs in 1u32..3600) {
            let h = header(version, bi, si, mono);
            let parsed = Header::parse(&h).unwrap();
            let bytes = u64::from(secs) * u64::from(parsed.kbps) * 125;
            let info = parse(&stream(h, 3), bytes).unwrap();
            prop_assert_eq!(info.bitrate, parsed.kbps);
            prop_assert_eq!(info.freq, parsed.freq);
            prop_assert!(info.secs == secs || info.secs + 1 == secs, "{} vs {}", info.secs, secs);
        }
    }
}
