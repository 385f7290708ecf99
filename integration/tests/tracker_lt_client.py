#!/usr/bin/python3
"""libtorrent (python3-libtorrent) client for the tracker interop tests: leech until complete, or seed.

usage: lt_client.py TORRENT SAVE_DIR TIMEOUT_SECS [seed]
DHT, LSD, UPnP and NAT-PMP are off: peers can only find each other through the tracker.
"""
import sys, time, libtorrent as lt
torrent, save, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
seed = len(sys.argv) > 4 and sys.argv[4] == "seed"
s = lt.session({
    "listen_interfaces": "127.0.0.1:0",
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification | lt.alert.category_t.status_notification,
})
ti = lt.torrent_info(torrent)
h = s.add_torrent({"ti": ti, "save_path": save})
deadline = time.time() + timeout
announced = False
while time.time() < deadline:
    for a in s.pop_alerts():
        if isinstance(a, lt.tracker_reply_alert):
            announced = True
            print("tracker_reply", a.num_peers, flush=True)
        elif isinstance(a, (lt.tracker_error_alert, lt.tracker_warning_alert)):
            print("tracker_problem", a.message(), flush=True)
    st = h.status()
    if not seed and st.is_seeding and announced:
        print("done", st.total_wanted, flush=True)
        sys.exit(0)
    time.sleep(0.1)
print("timeout", h.status().state, h.status().progress, h.status().num_peers, flush=True)
sys.exit(0 if seed else 1)
