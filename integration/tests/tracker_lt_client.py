#!/usr/bin/python3
"""libtorrent (python3-libtorrent) client for the tracker interop tests: leech until complete, or seed.

usage: tracker_lt_client.py TORRENT SAVE_DIR TIMEOUT_SECS [seed] [--listen IP:PORT]
DHT, LSD, UPnP and NAT-PMP are off: peers can only find each other through the tracker. --listen (default
127.0.0.1:0) is also the address outgoing connections leave from, so a client that must reach a network
namespace listens on the host end of its veth pair.

A leecher exits 0 only once it has the whole file AND the tracker has answered its `event=completed`
announce, so the test can then check that the tracker counted the download.
"""
import argparse, sys, time, libtorrent as lt

ap = argparse.ArgumentParser()
ap.add_argument("torrent")
ap.add_argument("save")
ap.add_argument("timeout", type=float)
ap.add_argument("mode", nargs="?", default="leech", choices=["leech", "seed"])
ap.add_argument("--listen", default="127.0.0.1:0")
args = ap.parse_args()
seed = args.mode == "seed"
s = lt.session({
    "listen_interfaces": args.listen,
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification | lt.alert.category_t.status_notification,
})
ti = lt.torrent_info(args.torrent)
h = s.add_torrent({"ti": ti, "save_path": args.save})
deadline = time.time() + args.timeout
completed_sent = False
completed_acked = False
while time.time() < deadline:
    for a in s.pop_alerts():
        if isinstance(a, lt.tracker_announce_alert):
            print("tracker_announce", a.event, flush=True)
            if a.event == lt.event_t.completed:
                completed_sent = True
        elif isinstance(a, lt.tracker_reply_alert):
            print("tracker_reply", a.num_peers, flush=True)
            # Announces to one tracker go one at a time: the first reply after the completed announce
            # was sent is its answer.
            if completed_sent:
                completed_acked = True
        elif isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
            print("tracker_problem", a.message(), flush=True)
    st = h.status()
    if not seed and st.is_seeding and completed_acked:
        print("done", st.total_wanted, flush=True)
        sys.exit(0)
    time.sleep(0.1)
st = h.status()
print("timeout", st.state, st.progress, st.num_peers, "completed announce sent:", completed_sent, flush=True)
sys.exit(0 if seed else 1)
