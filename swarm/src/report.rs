//! Output: the terminal comparison table and `report.html`, one self-contained file with hand-written SVG.
//!
//! Each chart has a short text under it: what the tutorial (`shared/tutorial/p2p-tutorial.txt`) predicts
//! and what this run measured, computed from the results so the verdict can say "did not happen".

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::figures;
use crate::results::{Results, Summary, SystemResult};

const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

fn kib(b: u64) -> String {
    format!("{:.0} KiB", b as f64 / 1024.0)
}

/// The rows of the comparison: `(label, value per system)`.
fn rows(res: &Results) -> Vec<(String, Vec<String>)> {
    let sums: Vec<(&SystemResult, Summary)> =
        res.systems.iter().map(|s| (s, s.summary())).collect();
    let row = |label: &str, f: &dyn Fn(&SystemResult, &Summary) -> String| {
        (
            label.to_owned(),
            sums.iter()
                .map(|(s, m)| {
                    if s.unavailable.is_some() {
                        "n/a".into()
                    } else {
                        f(s, m)
                    }
                })
                .collect(),
        )
    };
    let mut rows = vec![
        row("standing peers (sharing, seeding)", &|s, _| {
            s.peers.to_string()
        }),
        row("rate caps applied", &|_, m| m.caps.clone()),
        row("time to first result, median (s)", &|s, m| {
            if s.searches.is_empty() {
                "no search".into()
            } else {
                opt(m.first_hit_median_s, 3)
            }
        }),
        row("search client wall time, median (s)", &|s, m| {
            if s.searches.is_empty() {
                "no search".into()
            } else {
                opt(m.search_median_s, 3)
            }
        }),
        row("search success (rare+popular)", &|_, m| {
            pct(m.search_success)
        }),
        row("control msgs per search", &|_, m| {
            opt(m.ctl_msgs_per_search, 1)
        }),
        row("control bytes per search", &|_, m| {
            opt(m.ctl_bytes_per_search, 0)
        }),
        row("flash crowd done (verified)", &|_, m| {
            format!("{}/{}", m.flash_done.0, m.flash_done.1)
        }),
        row("flash completion median (s)", &|_, m| {
            opt(m.flash_median_s, 3)
        }),
        row("flash completion worst (s)", &|_, m| {
            opt(m.flash_worst_s, 3)
        }),
        row("upload: busiest peer", &|_, m| kib(m.busiest_upload)),
        row("upload: median peer", &|_, m| kib(m.median_upload)),
        row("server/tracker/ultrapeer ctl msgs", &|_, m| {
            m.infra_msgs.to_string()
        }),
        row("server/tracker/ultrapeer ctl bytes", &|_, m| {
            m.infra_bytes.to_string()
        }),
        row("source left: done before/after/failed", &|_, m| {
            m.churn
                .map_or("-".into(), |(a, b, c)| format!("{a}/{b}/{c}"))
        }),
    ];
    if res.scenario.pollution_downloads > 0 {
        let frac =
            |v: Option<(usize, usize)>| v.map_or("-".into(), |(a, b)| format!("{a}/{b} decoys"));
        rows.push(row("pollution, picked by name", &|_, m| {
            frac(m.polluted_by_name)
        }));
        rows.push(row("pollution, picked by content hash", &|_, m| {
            frac(m.polluted_by_hash)
        }));
    }
    rows.push(row("stats files read", &|s, _| {
        s.stats_files_read.to_string()
    }));
    rows
}

/// The terminal comparison table, followed by what is not available and why.
pub fn table(res: &Results) -> String {
    let mut out = String::new();
    let rows = rows(res);
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let ws: Vec<usize> = res
        .systems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            rows.iter()
                .map(|r| r.1[i].len())
                .chain([s.system.len()])
                .max()
                .unwrap_or(4)
        })
        .collect();
    let _ = write!(out, "{:w0$}", "");
    for (s, w) in res.systems.iter().zip(&ws) {
        let _ = write!(out, "  {:>w$}", s.system);
    }
    out.push('\n');
    for (label, vals) in &rows {
        let _ = write!(out, "{label:w0$}");
        for (v, w) in vals.iter().zip(&ws) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    for s in &res.systems {
        if let Some(r) = &s.unavailable {
            let _ = writeln!(out, "{}: not available yet: {r}", s.system);
        }
        if let Some(n) = &s.search_note {
            let _ = writeln!(out, "{}: {n}", s.system);
        }
        for p in s.problems.iter().take(5) {
            let _ = writeln!(out, "{}: problem: {p}", s.system);
        }
        for c in s.rate_caps.iter().filter(|c| c.contains("has no")) {
            let _ = writeln!(out, "{}: {c}", s.system);
        }
    }
    out
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 560.0;
const H: f64 = 300.0;
const PAD: f64 = 50.0;

/// SVG line chart of step CDFs: one series per `(label, points)`.
pub fn svg_cdf(series: &[(String, Vec<(f64, f64)>)], xlabel: &str) -> String {
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let x = |v: f64| PAD + v / xmax * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v * (H - 2.0 * PAD);
    let mut s = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#
    );
    axes(&mut s, xlabel, "fraction done", &format!("{xmax:.2}"), "1");
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut d = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        let mut prev = 0.0;
        for &(vx, vy) in pts {
            let _ = write!(
                d,
                " L{:.1},{:.1} L{:.1},{:.1}",
                x(vx),
                y(prev),
                x(vx),
                y(vy)
            );
            prev = vy;
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/><text x="{:.0}" y="{:.0}" fill="{c}" font-size="12">{}</text>"#,
            W - PAD - 120.0,
            PAD + 15.0 * i as f64,
            esc(label)
        );
    }
    s.push_str("</svg>");
    s
}

fn axes(s: &mut String, xlabel: &str, ylabel: &str, xmax: &str, ymax: &str) {
    let _ = write!(
        s,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#333"/><text x="{cx}" y="{ly}" font-size="12" text-anchor="middle">{xl}</text><text x="12" y="{yl_y}" font-size="12">{yl}</text><text x="{r}" y="{ty}" font-size="11" text-anchor="end">{xmax}</text><text x="{tx}" y="{yt}" font-size="11" text-anchor="end">{ymax}</text><text x="{tx}" y="{b}" font-size="11" text-anchor="end">0</text>"##,
        b = H - PAD,
        r = W - PAD,
        cx = W / 2.0,
        ly = H - 12.0,
        xl = esc(xlabel),
        yl = esc(ylabel),
        yl_y = PAD - 16.0,
        ty = H - PAD + 14.0,
        tx = PAD - 4.0,
        yt = PAD + 4.0,
    );
}

/// `(crowd size, worst verified completion)` of a system's sweep and of its main flash crowd (when it
/// swept), by size, crowds with a failure left out.
fn sweep_points(s: &SystemResult) -> Vec<(f64, f64)> {
    let main = (!s.flash_sweep.is_empty()).then(|| (s.flash.len(), s.flash.clone()));
    let mut pts: Vec<(f64, f64)> = s
        .flash_sweep
        .iter()
        .cloned()
        .chain(main)
        .filter(|(_, recs)| !recs.is_empty() && recs.iter().all(|d| d.verified))
        .filter_map(|(n, recs)| {
            let t: Vec<f64> = recs.iter().map(|d| d.seconds).collect();
            figures::max(&t).map(|w| (n as f64, w))
        })
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// How many times the worst completion grew from the smallest to the largest crowd of a sweep.
fn growth(pts: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let (first, last) = (pts.first()?, pts.last()?);
    (last.0 > first.0 && first.1 > 0.0).then(|| (first.0, last.0, last.1 / first.1))
}

/// SVG line chart with markers: one series per `(label, points)`.
pub fn svg_lines(series: &[(String, Vec<(f64, f64)>)], xlabel: &str, ylabel: &str) -> String {
    svg_lines_marked(series, xlabel, ylabel, &[])
}

/// [`svg_lines`] with dashed vertical lines at the `marks` (x, label), e.g. when a source left.
pub fn svg_lines_marked(
    series: &[(String, Vec<(f64, f64)>)],
    xlabel: &str,
    ylabel: &str,
    marks: &[(f64, String)],
) -> String {
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (xmax, ymax) = all.fold((1e-9f64, 1e-9f64), |m, p| (m.0.max(p.0), m.1.max(p.1)));
    let xmax = marks.iter().map(|m| m.0).fold(xmax, f64::max);
    let x = |v: f64| PAD + v / (xmax * 1.05) * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v / (ymax * 1.05) * (H - 2.0 * PAD);
    let mut s = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#
    );
    axes(
        &mut s,
        xlabel,
        ylabel,
        &format!("{xmax:.0}"),
        &format!("{ymax:.2}"),
    );
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let d: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
            .collect();
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                d.join(" ")
            );
        }
        // Dots only where they are few enough to read (a sampled progress line has hundreds).
        for p in pts.iter().filter(|_| pts.len() <= 40) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                x(p.0),
                y(p.1)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.0}" y="{:.0}" fill="{c}" font-size="12">{}</text>"#,
            W - PAD - 120.0,
            PAD + 15.0 * i as f64,
            esc(label)
        );
    }
    for (i, (mx, label)) in marks.iter().enumerate() {
        // Labels step down so that close marks stay readable.
        let _ = write!(
            s,
            r##"<line class="mark" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{b}" stroke="#000" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="10">{}</text>"##,
            esc(label),
            x = x(*mx),
            tx = x(*mx) + 3.0,
            top = PAD,
            b = H - PAD,
            ty = PAD + 12.0 * (i as f64 + 1.0),
        );
    }
    s.push_str("</svg>");
    s
}

/// SVG bar chart: `(label, value)` bars.
pub fn svg_bars(bars: &[(String, f64)], ylabel: &str) -> String {
    let ymax = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9);
    let mut s = format!(
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#
    );
    axes(&mut s, "", ylabel, "", &format!("{ymax:.0}"));
    let n = bars.len().max(1) as f64;
    let bw = (W - 2.0 * PAD) / n;
    for (i, (label, v)) in bars.iter().enumerate() {
        let h = v / ymax * (H - 2.0 * PAD);
        let x = PAD + bw * i as f64 + bw * 0.1;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.0}</title></rect>"#,
            H - PAD - h,
            bw * 0.8,
            COLORS[i % COLORS.len()],
            esc(label)
        );
        if bars.len() <= 12 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                x + bw * 0.4,
                H - PAD + 14.0,
                esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// The explanation under a chart: the tutorial's claim and what this run measured.
pub(crate) fn verdict(text: &mut String, claim: &str, seen: &str) {
    let _ = write!(
        text,
        "<p class=\"why\"><b>Tutorial:</b> {}<br><b>This run:</b> {}</p>",
        esc(claim),
        esc(seen)
    );
}

/// "yes" or "NO", the computed answer every chart's explanation gives.
pub(crate) fn held(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "NO"
    }
}

/// Did the central index answer a search with fewer control messages than the flood? Rests on the
/// control messages per search of Napster and Gnutella (`None`: that system gave no figure).
pub fn control_verdict(napster: Option<f64>, gnutella: Option<f64>) -> String {
    match (napster, gnutella) {
        (Some(n), Some(g)) => format!(
            "prediction held: {} (Napster {n:.1} vs Gnutella {g:.1} control messages per search)",
            held(n < g)
        ),
        _ => "prediction not checked: it needs both Napster's and Gnutella's figures".into(),
    }
}

/// The busiest peer's share of all peer uploads (0 when nothing was uploaded).
pub fn busiest_share(uploads: &[u64]) -> f64 {
    let total: u64 = uploads.iter().sum();
    match total {
        0 => 0.0,
        t => *uploads.iter().max().unwrap_or(&0) as f64 / t as f64,
    }
}

/// Did BitTorrent spread the upload load while Napster's busiest peer carried most of it? Rests on the
/// busiest peer's share of all uploads in each system.
pub fn upload_verdict(napster_share: Option<f64>, bittorrent_share: Option<f64>) -> String {
    match (napster_share, bittorrent_share) {
        (Some(n), Some(b)) => format!(
            "prediction held: {} (busiest peer's share of all uploads: Napster {:.0}%, BitTorrent {:.0}%)",
            held(b < n && n > 0.5),
            100.0 * n,
            100.0 * b
        ),
        _ => "prediction not checked: it needs both Napster's and BitTorrent's uploads".into(),
    }
}

/// Did every multi-source download (Gnutella, KaZaA, BitTorrent) survive its source leaving? Rests on
/// (system, finished, failed) of the churn downloads of those systems.
pub fn churn_verdict(multi: &[(&str, usize, usize)]) -> String {
    if multi.is_empty() {
        return "prediction not checked: no multi-source system ran the churn phase".into();
    }
    let failed: usize = multi.iter().map(|m| m.2).sum();
    let figures: Vec<String> = multi
        .iter()
        .map(|(s, done, f)| format!("{s} {done} finished, {f} failed"))
        .collect();
    format!(
        "prediction held for the multi-source systems: {} ({})",
        held(failed == 0),
        figures.join(", ")
    )
}

/// Did the flood cost follow the tree formula? Yes when the cost grows with TTL (from the first TTL to
/// the last) and every measured point is within a factor of 2 of the formula capped by the full flood.
pub fn flood_verdict(points: &[crate::results::FloodPoint]) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "prediction not checked: no TTL ran".into();
    };
    let worst = points
        .iter()
        .map(|p| {
            let f = p.tree_formula.min(p.full_flood).max(1.0);
            (p.measured.max(1e-9) / f).max(f / p.measured.max(1e-9))
        })
        .fold(1.0_f64, f64::max);
    let grows = points.len() < 2 || last.measured > first.measured;
    format!(
        "prediction held: {} (cost {:.1} at TTL {} to {:.1} at TTL {}; farthest point {worst:.2}x from the capped formula, 2x allowed)",
        held(grows && worst <= 2.0),
        first.measured,
        first.ttl,
        last.measured,
        last.ttl
    )
}

/// Did the content hash defeat the decoys while a name pick fell for them? Rests on the decoys fetched
/// by name and by hash, summed over the systems: (decoys, downloads).
pub fn pollution_verdict(by_name: (usize, usize), by_hash: (usize, usize)) -> String {
    if by_name.1 == 0 && by_hash.1 == 0 {
        return "prediction not checked: no pollution download ran".into();
    }
    format!(
        "prediction held: {} (by name {}/{} decoys, by content hash {}/{})",
        held(by_hash.0 == 0 && (by_name.1 == 0 || by_name.0 > 0)),
        by_name.0,
        by_name.1,
        by_hash.0,
        by_hash.1
    )
}

/// The whole `report.html`.
/// The classic flood against the ultrapeer search: whether flooding every node cost more per search.
fn classic_contrast(ultrapeer: Option<f64>, classic: Option<f64>) -> String {
    match (ultrapeer, classic) {
        (Some(u), Some(c)) if c > u => format!(
            " Classic flood over the same peers: {c:.1} messages per search against {u:.1} with ultrapeers ({:.1}x): the flood costs more, as predicted.",
            c / u.max(f64::MIN_POSITIVE)
        ),
        (Some(u), Some(c)) => format!(
            " Classic flood over the same peers: {c:.1} messages per search against {u:.1} with ultrapeers: the flood did NOT cost more."
        ),
        _ => String::new(),
    }
}

pub fn html(res: &Results) -> String {
    let ran: Vec<&SystemResult> = res
        .systems
        .iter()
        .filter(|s| s.unavailable.is_none())
        .collect();
    let sums: BTreeMap<&str, Summary> = ran
        .iter()
        .map(|s| (s.system.as_str(), s.summary()))
        .collect();
    // Systems that downloaded anything: the classic-flood contrast runs searches only.
    let moved: Vec<&SystemResult> = ran
        .iter()
        .copied()
        .filter(|s| !s.flash.is_empty() || s.churn.is_some())
        .collect();
    let mut h = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>p2p-lab swarm report</title><style>body{font-family:sans-serif;max-width:960px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}.why{background:#f6f6f6;padding:6px}.na{color:#a00}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>p2p-lab: the same work through each system</h1><p>Seed {}, {} peers per system, {} corpus files, flash crowd of {}, {} downloads whose source leaves. Run took {:.1} s. Every figure below was measured in this run: times are wall times of the real client processes, successes are files whose bytes equal the corpus, message counts come from the nodes' own stats files.</p>",
        res.scenario.seed,
        res.scenario.peers,
        res.scenario.files,
        res.scenario.flash_crowd,
        res.scenario.churn_downloads,
        res.seconds
    );
    h.push_str("<h2>Comparison</h2><table><tr><th></th>");
    for s in &res.systems {
        let _ = write!(h, "<th>{}</th>", esc(&s.system));
    }
    h.push_str("</tr>");
    for (label, vals) in rows(res) {
        let _ = write!(h, "<tr><td>{}</td>", esc(&label));
        for v in vals {
            let _ = write!(h, "<td>{}</td>", esc(&v));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    for s in &res.systems {
        if let Some(r) = &s.unavailable {
            let _ = write!(
                h,
                "<p class=\"na\">{}: not available yet: {}</p>",
                esc(&s.system),
                esc(r)
            );
        }
    }

    // Completion-time CDFs.
    h.push_str("<h2>Flash crowd: completion-time CDF</h2>");
    let series: Vec<(String, Vec<(f64, f64)>)> = moved
        .iter()
        .map(|s| {
            let t: Vec<f64> = s
                .flash
                .iter()
                .filter(|d| d.verified)
                .map(|d| d.seconds)
                .collect();
            (s.system.clone(), figures::cdf(&t, s.flash.len()))
        })
        .collect();
    h.push_str(&svg_cdf(&series, "seconds since the download started"));
    let seen = moved
        .iter()
        .map(|s| {
            let m = &sums[s.system.as_str()];
            format!(
                "{}: median {} s, worst {} s, {}/{} verified",
                s.system,
                opt(m.flash_median_s, 2),
                opt(m.flash_worst_s, 2),
                m.flash_done.0,
                m.flash_done.1
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    // Every single-source system against BitTorrent, saying when a side ran without its rate caps.
    let cmp: String = match sums.get("bittorrent") {
        Some(b) => moved
            .iter()
            .filter(|s| s.system != "bittorrent")
            .map(|s| {
                let m = &sums[s.system.as_str()];
                let uncapped = if m.caps == "yes" && b.caps == "yes" {
                    String::new()
                } else {
                    format!(
                        " ({} rate caps: {}; bittorrent: {}; a source without its cap is not the bottleneck on loopback)",
                        s.system, m.caps, b.caps
                    )
                };
                match (m.flash_worst_s, b.flash_worst_s) {
                    (Some(w), Some(bw)) if bw < w => format!(
                        " BitTorrent's worst case ({bw:.2} s) beat {}'s ({w:.2} s): as predicted{uncapped}.",
                        s.system
                    ),
                    (Some(w), Some(bw)) => format!(
                        " BitTorrent's worst case ({bw:.2} s) did NOT beat {}'s ({w:.2} s){uncapped}.",
                        s.system
                    ),
                    _ => format!(
                        " {} vs BitTorrent: not every download finished, so the worst cases are not comparable.",
                        s.system
                    ),
                }
            })
            .collect(),
        None => String::new(),
    };
    verdict(
        &mut h,
        "with one source, client-server download time grows linearly with the number of downloaders; BitTorrent peers upload to each other, so the swarm's capacity grows with the crowd and completion stays nearly flat.",
        &(seen + "." + &cmp),
    );

    // Completion time against the crowd size.
    if ran.iter().any(|s| !s.flash_sweep.is_empty()) {
        h.push_str("<h2>Flash crowd: worst completion time against the number of downloaders</h2>");
        let series: Vec<(String, Vec<(f64, f64)>)> = ran
            .iter()
            .filter(|s| !s.flash_sweep.is_empty())
            .map(|s| (s.system.clone(), sweep_points(s)))
            .collect();
        h.push_str(&svg_lines(
            &series,
            "downloaders at once",
            "worst completion (s)",
        ));
        let seen = series
            .iter()
            .map(|(name, pts)| {
                let p: Vec<String> = pts
                    .iter()
                    .map(|(x, y)| format!("{x:.0}: {y:.2} s"))
                    .collect();
                format!("{name}: {}", p.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let grew: Vec<String> = series
            .iter()
            .filter_map(|(name, pts)| {
                growth(pts).map(|(a, b, g)| {
                    format!("{name}'s worst time grew {g:.1}-fold from {a:.0} to {b:.0} downloaders ({:.0}-fold more downloaders)", b / a)
                })
            })
            .collect();
        let shape = match (
            series.iter().find(|s| s.0 == "napster").and_then(|s| growth(&s.1)),
            series.iter().find(|s| s.0 == "bittorrent").and_then(|s| growth(&s.1)),
        ) {
            (Some(n), Some(b)) if n.2 > b.2 * 1.5 => " The tutorial's shape: the client-server line climbs with the crowd, BitTorrent's stays much flatter.",
            (Some(_), Some(_)) if sums.get("napster").is_some_and(|m| m.caps != "yes") => " NOT the tutorial's shape: Napster's line did not climb clearly faster than BitTorrent's, and Napster ran without its rate caps (see Rate caps): an uncapped loopback source is not the bottleneck.",
            (Some(_), Some(_)) => " NOT the tutorial's shape: Napster's line did not climb clearly faster than BitTorrent's.",
            _ => "",
        };
        verdict(
            &mut h,
            "client-server time grows about linearly with the number of downloaders (one uplink shared N ways); BitTorrent's stays nearly flat because every downloader also uploads.",
            &format!(
                "{seen} (a crowd where a download failed is left out of its line). {}.{shape}",
                grew.join("; ")
            ),
        );
    }

    flood_section(&mut h, &ran);
    ring_section(&mut h, &ran);
    pollution_section(&mut h, res, &ran);

    // Control traffic per search.
    h.push_str("<h2>Control traffic per search</h2>");
    let bars: Vec<(String, f64)> = ran
        .iter()
        .filter_map(|s| {
            sums[s.system.as_str()]
                .ctl_msgs_per_search
                .map(|v| (s.system.clone(), v))
        })
        .collect();
    h.push_str(&svg_bars(&bars, "messages sent per search"));
    let notes: Vec<String> = ran
        .iter()
        .map(
            |s| match (&s.search_note, sums[s.system.as_str()].ctl_msgs_per_search) {
                (Some(n), _) => format!("{}: {n}", s.system),
                (None, Some(v)) => format!(
                    "{}: {v:.1} messages per search (including the searching client's login)",
                    s.system
                ),
                (None, None) => format!("{}: no figure", s.system),
            },
        )
        .collect();
    let ctl = |sys: &str| sums.get(sys).and_then(|m| m.ctl_msgs_per_search);
    verdict(
        &mut h,
        "a central index answers a search with a handful of messages whatever the swarm size; Gnutella's flood costs about 1 + the sum over hops i = 2..TTL of d(d-1)^(i-2) transmissions, growing with TTL and degree.",
        &format!(
            "{}; {}.{}",
            notes.join("; "),
            control_verdict(ctl("napster"), ctl("gnutella")),
            classic_contrast(ctl("gnutella"), ctl(crate::lab::CLASSIC_CONTRAST))
        ),
    );

    // Upload load.
    h.push_str("<h2>Upload load across peers</h2>");
    for s in &moved {
        let mut ups: Vec<(String, f64)> = s
            .nodes
            .iter()
            .filter(|n| !n.infrastructure)
            .map(|n| (n.node.clone(), n.upload_bytes as f64 / 1024.0))
            .collect();
        ups.sort_by(|a, b| b.1.total_cmp(&a.1));
        let _ = write!(h, "<h3>{}</h3>", esc(&s.system));
        h.push_str(&svg_bars(&ups, "KiB uploaded"));
    }
    let seen = moved
        .iter()
        .map(|s| {
            let m = &sums[s.system.as_str()];
            format!(
                "{}: busiest {} vs median {}",
                s.system,
                kib(m.busiest_upload),
                kib(m.median_upload)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let share = |sys: &str| {
        moved.iter().find(|s| s.system == sys).map(|s| {
            let ups: Vec<u64> = s
                .nodes
                .iter()
                .filter(|n| !n.infrastructure)
                .map(|n| n.upload_bytes)
                .collect();
            busiest_share(&ups)
        })
    };
    verdict(
        &mut h,
        "in Napster the peer holding a hot file carries the whole flash crowd alone; BitTorrent spreads the upload over the downloaders (tit-for-tat, rarest first).",
        &format!(
            "{seen}; {}.",
            upload_verdict(share("napster"), share("bittorrent"))
        ),
    );

    // Overlay graphs, from the links the nodes reported.
    h.push_str(&crate::overlay::html_section(&ran));

    // Churn.
    h.push_str("<h2>Downloads whose source left</h2><ul>");
    for s in &moved {
        if let (Some((a, b, c)), Some(ch)) = (sums[s.system.as_str()].churn, &s.churn) {
            let _ = write!(
                h,
                "<li>{}: {a} finished before the first source left, {b} finished after, {c} failed ({} of {} sources left, {})</li>",
                esc(&s.system),
                ch.departures.len(),
                ch.sources,
                if ch.graceful { "with a goodbye" } else { "killed" }
            );
        }
    }
    h.push_str("</ul>");
    for s in &moved {
        let Some(ch) = &s.churn else { continue };
        let series: Vec<(String, Vec<(f64, f64)>)> = ch
            .downloads
            .iter()
            .filter(|d| !d.progress.is_empty())
            .map(|d| {
                (
                    format!("{}{}", d.node, if d.verified { "" } else { " (failed)" }),
                    d.progress
                        .iter()
                        .map(|&(t, b)| (t, b as f64 / 1024.0))
                        .collect(),
                )
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let marks: Vec<(f64, String)> = ch
            .departures
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, format!("source {} left", i + 1)))
            .collect();
        let _ = write!(
            h,
            "<h3>{}: bytes received while the sources left</h3>",
            esc(&s.system)
        );
        h.push_str(&svg_lines_marked(
            &series,
            "seconds since the downloads began",
            "KiB on disk",
            &marks,
        ));
    }
    verdict(
        &mut h,
        "a single-source download dies with its source; a multi-source download (KaZaA, Gnutella) carries on from the sources left, re-searching for more; BitTorrent leechers can finish from each other if the swarm together still holds every piece.",
        &format!(
            "{}. A progress line that keeps climbing after a dashed mark recovered from the loss of that source.",
            churn_verdict(
                &moved.iter()
                    .filter(|s| s.system != "napster")
                    .filter_map(|s| {
                        sums[s.system.as_str()]
                            .churn
                            .map(|(a, b, c)| (s.system.as_str(), a + b, c))
                    })
                    .collect::<Vec<_>>()
            )
        ),
    );

    // Rate caps.
    h.push_str("<h2>Rate caps</h2><ul>");
    for s in &ran {
        for c in &s.rate_caps {
            let _ = write!(h, "<li>{}: {}</li>", esc(&s.system), esc(c));
        }
    }
    h.push_str("</ul>");
    h.push_str("</body></html>\n");
    h
}

/// Gnutella flood cost against TTL, beside the tutorial's tree count.
fn flood_section(h: &mut String, ran: &[&SystemResult]) {
    for s in ran.iter().filter(|s| !s.flood.is_empty()) {
        let _ = write!(h, "<h2>Flood cost against TTL ({})</h2>", esc(&s.system));
        let pts = |f: &dyn Fn(&crate::results::FloodPoint) -> f64| {
            s.flood
                .iter()
                .map(|p| (f64::from(p.ttl), f(p)))
                .collect::<Vec<_>>()
        };
        // The tree count grows without bound; on a finite overlay it cannot pass the full flood.
        let series = vec![
            ("measured".to_owned(), pts(&|p| p.measured)),
            (
                "formula (capped)".to_owned(),
                pts(&|p| p.tree_formula.min(p.full_flood)),
            ),
            ("full flood 2E-N+2".to_owned(), pts(&|p| p.full_flood)),
        ];
        h.push_str(&svg_lines(&series, "TTL", "query messages per search"));
        let o = s.flood_overlay.unwrap_or_default();
        let seen: Vec<String> = s
            .flood
            .iter()
            .map(|p| {
                format!(
                    "TTL {}: {:.1} measured, {:.1} by the formula",
                    p.ttl,
                    p.measured,
                    p.tree_formula.min(p.full_flood)
                )
            })
            .collect();
        verdict(
            h,
            "a flood with TTL t on a graph of degree d costs about 1 + sum over hops i = 2..t of d(d-1)^(i-2) transmissions (each node forwards to its other links), growing geometrically with TTL until the horizon covers the whole overlay; then duplicates make up most of it and the cost levels off at the full flood, 2E - N + 2 here.",
            &format!(
                "overlay of {} nodes, {:.0} links, mean degree {:.2} (the nodes' own connection counts); {}; {}.",
                o.nodes,
                o.edges,
                o.mean_degree(),
                seen.join("; "),
                flood_verdict(&s.flood)
            ),
        );
    }
}

/// Expanding ring against fixed TTL during a flash crowd.
fn ring_section(h: &mut String, ran: &[&SystemResult]) {
    for s in ran.iter().filter(|s| !s.ring.is_empty()) {
        let _ = write!(
            h,
            "<h2>Expanding ring during a flash crowd ({})</h2>",
            esc(&s.system)
        );
        let line = |expanding: bool, f: &dyn Fn(&crate::results::RingRecord) -> Option<f64>| {
            s.ring
                .iter()
                .filter(|r| r.expanding == expanding)
                .filter_map(|r| f(r).map(|v| (r.copies as f64, v)))
                .collect::<Vec<_>>()
        };
        let msgs = vec![
            (
                "fixed TTL".to_owned(),
                line(false, &|r| Some(r.query_msgs as f64)),
            ),
            (
                "expanding ring".to_owned(),
                line(true, &|r| Some(r.query_msgs as f64)),
            ),
        ];
        h.push_str(&svg_lines(
            &msgs,
            "copies online when searching",
            "query messages",
        ));
        let times = vec![
            ("fixed TTL".to_owned(), line(false, &|r| r.first_hit_s)),
            ("expanding ring".to_owned(), line(true, &|r| r.first_hit_s)),
        ];
        h.push_str(&svg_lines(
            &times,
            "copies online when searching",
            "seconds to the first hit",
        ));
        let stat = |expanding: bool| {
            let rs: Vec<&crate::results::RingRecord> =
                s.ring.iter().filter(|r| r.expanding == expanding).collect();
            let m: Vec<f64> = rs.iter().map(|r| r.query_msgs as f64).collect();
            let t: Vec<f64> = rs.iter().filter_map(|r| r.first_hit_s).collect();
            let ttl: Vec<f64> = rs.iter().filter_map(|r| r.ttl.map(f64::from)).collect();
            let ok = rs.iter().filter(|r| r.verified).count();
            (
                m.iter().sum::<f64>() / m.len().max(1) as f64,
                figures::median(&t),
                ttl.iter().sum::<f64>() / ttl.len().max(1) as f64,
                ok,
                rs.len(),
            )
        };
        let (fm, ft, _, fok, fn_) = stat(false);
        let (xm, xt, xttl, xok, xn) = stat(true);
        let verdict_text = if xm < fm {
            "the expanding ring sent fewer query messages: as predicted"
        } else {
            "the expanding ring did NOT send fewer query messages here"
        };
        verdict(
            h,
            "during a flash crowd each successful searcher becomes a source, so later searches find a copy close by; an expanding ring (TTL 1, 2, 3, ...) stops at the first ring that finds one and pays far fewer transmissions than a fixed-TTL flood, at the price of more rounds (time) while copies are still rare.",
            &format!(
                "fixed TTL: {fm:.1} query messages per search, first hit median {} s, {fok}/{fn_} downloads verified; expanding ring: {xm:.1} messages, first hit median {} s, found at TTL {xttl:.1} on average, {xok}/{xn} verified — {verdict_text}.",
                opt(ft, 2),
                opt(xt, 2)
            ),
        );
    }
}

/// Decoys under a popular name: what a name pick and a content-hash pick downloaded.
fn pollution_section(h: &mut String, res: &Results, ran: &[&SystemResult]) {
    if res.scenario.pollution_downloads == 0 {
        return;
    }
    h.push_str("<h2>Pollution: decoys under a popular name</h2>");
    let mut bars = Vec::new();
    let mut seen = Vec::new();
    for s in ran {
        let m = s.summary();
        for (label, v) in [("name", m.polluted_by_name), ("hash", m.polluted_by_hash)] {
            if let Some((a, n)) = v {
                bars.push((
                    format!("{} {label}", s.system),
                    100.0 * a as f64 / n.max(1) as f64,
                ));
                let failed = s
                    .pollution
                    .iter()
                    .filter(|p| p.pick == label && p.outcome == "failed")
                    .count();
                seen.push(format!(
                    "{} by {label}: {a}/{n} decoys ({failed} failed)",
                    s.system
                ));
            }
        }
        for n in &s.pollution_notes {
            seen.push(format!("{}: {n}", s.system));
        }
    }
    h.push_str(&svg_bars(&bars, "% of downloads that got a decoy"));
    let total = |f: fn(&Summary) -> Option<(usize, usize)>| {
        ran.iter()
            .filter_map(|s| f(&s.summary()))
            .fold((0, 0), |acc, (a, n)| (acc.0 + a, acc.1 + n))
    };
    seen.push(pollution_verdict(
        total(|m| m.polluted_by_name),
        total(|m| m.polluted_by_hash),
    ));
    verdict(
        h,
        "polluters put bogus copies of popular songs under the real name on many well-connected nodes; a user who picks by name gets a decoy about as often as decoys outnumber real copies, while a download pinned to a content hash from a trusted link (KaZaA's sig2dat UUHash, Gnutella's urn:sha1, BitTorrent's info_hash) can only fetch the real bytes.",
        &format!(
            "{} decoy holders against {} genuine; {}.",
            res.scenario.decoys,
            res.scenario.pollution_genuine,
            seen.join("; ")
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{DownloadRecord, SystemResult};

    fn sample() -> Results {
        let d = |s: f64| DownloadRecord {
            node: "n<1>".into(),
            file: "f".into(),
            ok: true,
            verified: true,
            seconds: s,
            ended_at: s,
            source: Some("peer000".into()),
            error: None,
            progress: Vec::new(),
        };
        Results {
            scenario: crate::scenario::Scenario::small(),
            corpus: serde_json::Value::Null,
            temp_dir: "/tmp/x".into(),
            seconds: 1.0,
            systems: vec![
                SystemResult {
                    system: "napster".into(),
                    flash: vec![d(1.0), d(2.0)],
                    transfer_edges: vec![("peer000".into(), "n<1>".into(), "download".into())],
                    ..Default::default()
                },
                SystemResult {
                    system: "kazaa".into(),
                    unavailable: Some("placeholder <binary>".into()),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn verdicts_say_yes_or_no_with_their_figures() {
        assert!(control_verdict(Some(14.5), Some(124.0))
            .contains("held: yes (Napster 14.5 vs Gnutella 124.0"));
        assert!(control_verdict(Some(200.0), Some(124.0)).contains("held: NO"));
        assert!(control_verdict(None, Some(1.0)).contains("not checked"));

        assert_eq!(busiest_share(&[0, 0]), 0.0);
        assert_eq!(busiest_share(&[30, 10, 0]), 0.75);
        let v = upload_verdict(Some(1.0), Some(0.3));
        assert!(
            v.contains("held: yes") && v.contains("Napster 100%, BitTorrent 30%"),
            "{v}"
        );
        assert!(upload_verdict(Some(0.4), Some(0.3)).contains("held: NO"));
        assert!(upload_verdict(Some(0.9), Some(0.95)).contains("held: NO"));

        let v = churn_verdict(&[("kazaa", 3, 0), ("bittorrent", 3, 0)]);
        assert!(
            v.contains("held for the multi-source systems: yes")
                && v.contains("kazaa 3 finished, 0 failed"),
            "{v}"
        );
        assert!(churn_verdict(&[("kazaa", 2, 1)]).contains(": NO"));
        assert!(churn_verdict(&[]).contains("not checked"));

        let pt = |ttl: u8, measured: f64, tree: f64| crate::results::FloodPoint {
            ttl,
            searches: 3,
            measured,
            tree_formula: tree,
            full_flood: 66.0,
        };
        // The demo's measured curve (README) against its formula: within 2x, growing.
        let ok = [
            pt(1, 1.7, 1.0),
            pt(3, 17.0, 18.6),
            pt(4, 39.3, 61.6),
            pt(7, 64.3, 2049.0),
        ];
        let v = flood_verdict(&ok);
        assert!(
            v.contains("held: yes") && v.contains("1.7 at TTL 1 to 64.3 at TTL 7"),
            "{v}"
        );
        assert!(flood_verdict(&[pt(1, 1.0, 1.0), pt(3, 60.0, 18.6)]).contains("held: NO"));
        assert!(flood_verdict(&[pt(1, 5.0, 1.0), pt(3, 4.0, 5.0)]).contains("held: NO"));
        assert!(flood_verdict(&[]).contains("not checked"));

        let v = pollution_verdict((4, 6), (0, 12));
        assert!(
            v.contains("held: yes (by name 4/6 decoys, by content hash 0/12)"),
            "{v}"
        );
        assert!(pollution_verdict((4, 6), (1, 12)).contains("held: NO"));
        assert!(pollution_verdict((0, 6), (0, 12)).contains("held: NO"));
        assert!(pollution_verdict((0, 0), (0, 0)).contains("not checked"));
    }

    #[test]
    fn html_has_charts_and_escapes() {
        let h = html(&sample());
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert!(h.matches("<svg").count() >= 4, "cdf, bars, uploads, graph");
        assert_eq!(h.matches("<svg").count(), h.matches("</svg>").count());
        assert!(h.contains("kazaa: not available yet: placeholder &lt;binary&gt;"));
        assert!(!h.contains("n<1>"), "node names are escaped");
        assert!(h.contains("<path d=\"M"), "a CDF line is drawn");
        assert!(!h.contains("http://") || h.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!h.contains("<script"), "self-contained, no scripts");
    }

    #[test]
    fn cdf_svg_points_follow_data() {
        let s = svg_cdf(&[("a".into(), vec![(1.0, 0.5), (2.0, 1.0)])], "s");
        // Last point at x = 2.0 of xmax 2.1 and y = 1.0 (top of the plot area).
        assert!(
            s.contains(&format!(
                "{:.1},{:.1}",
                PAD + 2.0 / 2.1 * (W - 2.0 * PAD),
                PAD
            )),
            "{s}"
        );
    }

    #[test]
    fn sweep_line_leaves_out_failed_crowds() {
        let mut r = sample();
        let ok = r.systems[0].flash[0].clone();
        let mut bad = ok.clone();
        bad.verified = false;
        r.systems[0].flash_sweep = vec![
            (1, vec![ok.clone()]),
            (2, vec![ok.clone(), bad]),
            (3, vec![ok]),
        ];
        // The main flash crowd (2 downloads, worst 2 s) joins the line; the failed sweep crowd does not.
        assert_eq!(
            sweep_points(&r.systems[0]),
            vec![(1.0, 1.0), (2.0, 2.0), (3.0, 1.0)]
        );
        let h = html(&r);
        assert!(h.contains("against the number of downloaders"));
        assert!(h.contains("<polyline"));
    }

    #[test]
    fn table_lists_systems_and_reasons() {
        let t = table(&sample());
        assert!(t.lines().next().unwrap().contains("napster"));
        assert!(t.contains("flash crowd done (verified)"));
        assert!(t.contains("2/2"));
        assert!(t.contains("kazaa: not available yet: placeholder <binary>"));
    }

    #[test]
    fn classic_contrast_says_whether_the_flood_cost_more() {
        assert!(classic_contrast(Some(20.0), Some(60.0)).contains("3.0x"));
        assert!(classic_contrast(Some(20.0), Some(60.0)).contains("as predicted"));
        assert!(classic_contrast(Some(60.0), Some(20.0)).contains("did NOT"));
        assert!(classic_contrast(Some(20.0), None).is_empty());
    }
}
