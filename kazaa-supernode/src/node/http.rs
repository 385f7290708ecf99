//! The ON's HTTP side (`shared/protocols/kazaa.md` §4): `GET /.hash=<40 hex>` with `Range`, answered
//! through `common::http` (206/404/400, upload slots with `503` + `Retry-After`, `Connection: close`)
//! with `X-Kazaa-Username`, `X-Kazaa-Network`, `X-Kazaa-IP`, `X-Kazaa-SupernodeIP` and one
//! `X-KazaaTag` per tag — the hash as `3==<base64>`; the filename is never sent (giFT).

use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};

use common::hash::UuHash;
use common::http::{ExtraHeaders, FileReply, Reply, RequestInfo, Route, Router};
use common::library::Library;

use crate::codec::tag::code;

/// Routes `/.hash=` requests to the shared folder.
pub struct KazaaRouter {
    lib: Option<Arc<Library>>,
    user: String,
    network: String,
    me: SocketAddrV4,
    sn: Arc<Mutex<Option<SocketAddrV4>>>,
}

impl KazaaRouter {
    /// A router for `lib` (`None`: nothing shared), advertising `me` and (once known) the SN in `sn`.
    pub fn new(
        lib: Option<Arc<Library>>,
        user: &str,
        network: &str,
        me: SocketAddrV4,
        sn: Arc<Mutex<Option<SocketAddrV4>>>,
    ) -> Self {
        KazaaRouter {
            lib,
            user: user.to_owned(),
            network: network.to_owned(),
            me,
            sn,
        }
    }

    fn headers(&self) -> ExtraHeaders {
        let mut h = ExtraHeaders::new();
        h.push("X-Kazaa-Username", &self.user);
        h.push("X-Kazaa-Network", &self.network);
        h.push("X-Kazaa-IP", self.me.to_string());
        let sn = *self.sn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sn) = sn {
            h.push("X-Kazaa-SupernodeIP", sn.to_string());
        }
        h
    }
}

impl Router for KazaaRouter {
    fn route(&self, req: &RequestInfo) -> Route {
        let path = req.path();
        let Some(rest) = path.strip_prefix("/.hash=") else {
            let mut r = Reply::bad_request("Bad Request");
            r.headers = self.headers();
            r.close = true;
            return Route::Reply(r);
        };
        let lib = self.lib.as_deref();
        let found = UuHash::from_hex(rest).and_then(|h| lib?.by_uuhash(&h).map(|f| (h, f)));
        let (Some(lib), Some((hash, file))) = (lib, found) else {
            let mut r = Reply::not_found();
            r.headers = self.headers();
            r.close = true;
            return Route::Reply(r);
        };
        match lib.open_file(file) {
            Ok((fd, p)) => {
                let mut reply = FileReply::opened(fd, p);
                reply.size = Some(file.size);
                let mut h = self.headers();
                h.push(
                    "X-KazaaTag",
                    format!("{}={}", code::HASH, hash.to_sig2dat()),
                );
                reply.headers = h;
                reply.close = true;
                Route::File(reply)
            }
            Err(e) => {
                tracing::warn!(error = %e, "shared file not served");
                Route::Reply(Reply::not_found())
            }
        }
    }
}
