//! File transfer over HTTP (Gnutella 0.6 draft §3 "File transfer"; notes §5), plugged into
//! `common::http`: `GET /get/<index>/<name>` (served by index, name checked) and
//! `GET /uri-res/N2R?urn:sha1:<base32>`, with `X-Gnutella-Content-URN` naming the whole file on every reply.
//!
//! Alternate locations (notes §5): every reply for a file with a known SHA-1 (200, 206, 416 and the 503 of a
//! busy server alike) carries `X-Alt` with up to ten other hosts of the download mesh. A downloader's own
//! `X-Alt` / `X-Gnutella-Alternate-Location` request headers feed the mesh (and `X-Nalt` prunes it), but only
//! when the request names the same content URN (`X-Gnutella-Content-URN`, or the `/uri-res/` URN itself).

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::http::{ExtraHeaders, FileReply, Reply, RequestInfo, Route, Router};
use common::library::Library;
use http::{StatusCode, Version};

use crate::codec::altloc::{format_x_alt, parse_alt_locs, MAX_ALTS_SENT};
use crate::codec::message::{parse_sha1_urn, sha1_urn};
use crate::protocol::mesh::Mesh;

/// The Gnutella URL space over a shared-folder library.
#[derive(Clone)]
pub struct GnutellaRouter {
    library: Arc<Library>,
    mesh: Arc<Mutex<Mesh>>,
    /// Our own address, never handed out as an alternate location of ourselves.
    local: SocketAddrV4,
}

impl std::fmt::Debug for GnutellaRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GnutellaRouter")
            .field("files", &self.library.len())
            .finish()
    }
}

impl GnutellaRouter {
    /// A router serving `library` from `local`, handing out and learning alternate locations in `mesh`.
    pub fn new(
        library: Arc<Library>,
        mesh: Arc<Mutex<Mesh>>,
        local: SocketAddrV4,
    ) -> GnutellaRouter {
        GnutellaRouter {
            library,
            mesh,
            local,
        }
    }

    fn mesh(&self) -> std::sync::MutexGuard<'_, Mesh> {
        self.mesh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the downloader's alternate locations for `sha1` if its request is about that content.
    fn learn(&self, req: &RequestInfo, sha1: &[u8; 20], by_urn: bool) {
        let same = by_urn
            || req
                .headers
                .get_all("x-gnutella-content-urn")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|u| parse_sha1_urn(u.trim()) == Some(*sha1));
        if !same {
            return;
        }
        let now = Instant::now();
        let mut mesh = self.mesh();
        for name in ["x-alt", "x-gnutella-alternate-location"] {
            for v in req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                for a in parse_alt_locs(v) {
                    if a != self.local {
                        mesh.add(now, *sha1, a);
                    }
                }
            }
        }
        for v in req
            .headers
            .get_all("x-nalt")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for a in parse_alt_locs(v) {
                mesh.remove(sha1, &a);
            }
        }
    }

    fn serve(&self, req: &RequestInfo, f: &common::library::SharedFile, by_urn: bool) -> Route {
        let mut h = ExtraHeaders::new();
        if let Some(s) = &f.hashes.sha1 {
            h.push("X-Gnutella-Content-URN", sha1_urn(&s.0));
            self.learn(req, &s.0, by_urn);
            let alts = self
                .mesh()
                .get(Instant::now(), &s.0, &[self.local], MAX_ALTS_SENT);
            if !alts.is_empty() {
                h.push("X-Alt", format_x_alt(&alts));
            }
        }
        match self.library.open_file(f) {
            Ok((file, path)) => {
                let mut r = FileReply::opened(file, path);
                r.size = Some(f.size);
                r.headers = h;
                Route::File(r)
            }
            Err(_) => Route::Reply(Reply::not_found()),
        }
    }
}

/// Decodes `%XX` escapes exactly once (`common::safe_path`): `None` on a bad escape, invalid UTF-8, or a
/// result that still holds an escape (double encoding, a classic way to smuggle `../` past one decode).
fn percent_decode_once(s: &str) -> Option<String> {
    common::safe_path::percent_decode_once(s).ok()
}

impl Router for GnutellaRouter {
    fn route(&self, req: &RequestInfo) -> Route {
        if req.version == Version::HTTP_11 && req.header("host").is_none() {
            return Route::Reply(Reply::bad_request("Missing Host Header"));
        }
        let path = req.path();
        if let Some(rest) = path.strip_prefix("/get/") {
            let Some((idx, name)) = rest.split_once('/') else {
                return Route::Reply(Reply::bad_request("Bad Path"));
            };
            let Some(name) = percent_decode_once(name) else {
                return Route::Reply(Reply::bad_request("Bad Path"));
            };
            // Served by index from the in-memory table; the name is only compared, never joined to a path.
            if name.contains("..")
                || name.contains('/')
                || name.contains('\\')
                || name.contains('\0')
            {
                return Route::Reply(Reply::bad_request("Bad Path"));
            }
            let Ok(idx) = idx.parse::<u32>() else {
                return Route::Reply(Reply::bad_request("Bad Path"));
            };
            return match self.library.get(idx) {
                Some(f) if f.name() == name => self.serve(req, f, false),
                _ => Route::Reply(Reply::not_found()),
            };
        }
        if path == "/uri-res/N2R" {
            let Some(urn) = req.query().and_then(percent_decode_once) else {
                return Route::Reply(Reply::bad_request("Bad Request"));
            };
            let Some(sha) = parse_sha1_urn(&urn) else {
                return Route::Reply(Reply::bad_request("Malformed URN"));
            };
            return match self.library.by_sha1(&common::hash::Sha1Digest(sha)) {
                Some(f) => self.serve(req, f, true),
                None => Route::Reply(Reply::not_found()),
            };
        }
        Route::Reply(Reply::with_reason(StatusCode::NOT_FOUND, "Not Found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_single_pass() {
        assert_eq!(percent_decode_once("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode_once("%252e%252e"), None, "double encoding");
        assert_eq!(percent_decode_once("%zz"), None);
        assert_eq!(percent_decode_once("%2"), None);
    }
}
