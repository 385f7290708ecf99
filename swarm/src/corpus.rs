//! The deterministic corpus: realistic file names and sizes, placed on peers with Zipf-like popularity.
//!
//! Popularity follows the tutorial's search discussion (`shared/protocols/gnutella.md` §8): a few files are
//! everywhere, most are held by one or two peers, so a search for the rarest file and one for the most
//! popular file show the two ends of the curve. Two extra files start on a single peer: the flash-crowd
//! release (peer 0) and the churn file (the last peer, which leaves mid-download).
//!
//! Everything derives from the scenario seed: [`Corpus::plan`] decides names, sizes and holders without I/O,
//! [`Corpus::content`] regenerates any file's bytes, so downloads are checked against the plan, not against
//! a copy that could share a bug.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

use crate::scenario::Scenario;

const ARTISTS: &[&str] = &[
    "Radiohead",
    "Portishead",
    "Bjork",
    "Moby",
    "Blur",
    "Oasis",
    "Beck",
    "Metallica",
    "Eminem",
    "Madonna",
    "Nirvana",
    "Pavement",
    "Massive Attack",
    "Daft Punk",
    "Air",
    "Outkast",
    "Weezer",
    "Pixies",
    "Prodigy",
    "Underworld",
    "Sade",
    "Dido",
    "Tricky",
    "Muse",
    "Coldplay",
    "Travis",
    "Morcheeba",
    "Garbage",
    "Hole",
    "Placebo",
];
const WORDS: &[&str] = &[
    "Karma",
    "Glory",
    "Teardrop",
    "Porcelain",
    "Song",
    "Wonderwall",
    "Loser",
    "Enter",
    "Stan",
    "Frozen",
    "Lithium",
    "Range",
    "Angel",
    "Around",
    "World",
    "Sexy",
    "Hey",
    "Buddy",
    "Holly",
    "Debaser",
    "Firestarter",
    "Born",
    "Slippy",
    "Smooth",
    "Operator",
    "Thank",
    "You",
    "Overcome",
    "Plug",
    "Yellow",
    "Why",
    "Rome",
    "Wonder",
    "Queer",
    "Doll",
    "Parts",
    "Pure",
    "Morning",
    "Paranoid",
    "Android",
    "Silent",
    "Night",
    "Electric",
    "Dreams",
    "Blue",
    "Monday",
    "Summer",
    "Rain",
    "Street",
    "Lights",
];

/// What a file is for in the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ordinary shared file placed by popularity.
    Regular,
    /// The new release every flash-crowd peer downloads; starts on peer 0 only.
    Flash,
    /// The file whose sources (the last peers) leave mid-download.
    Churn,
    /// A popular new file with decoys under its name (pollution).
    Polluted,
}

/// One file of the corpus.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CorpusFile {
    /// File name, `Artist - Title.mp3`.
    pub name: String,
    /// The words a user would type to find it.
    pub query: String,
    /// Size in bytes.
    pub size: u64,
    /// Popularity rank, 1 = most popular (0 for the flash and churn files).
    pub rank: usize,
    /// Indices of the peers sharing it.
    pub holders: Vec<usize>,
    /// Its part in the workload.
    pub role: Role,
    /// Peers sharing a decoy under the same name (same size, other bytes); empty but for pollution.
    pub decoy_holders: Vec<usize>,
    /// Seed of its content.
    content_seed: u64,
}

/// Mixed into a file's content seed to make its decoy's bytes.
const DECOY_SEED: u64 = 0xDEC0_DEC0_DEC0_DEC0;

/// The whole corpus of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Corpus {
    /// Number of sharing peers.
    pub peers: usize,
    /// Every file; regular files first by rank, then the flash and churn files.
    pub files: Vec<CorpusFile>,
}

impl Corpus {
    /// Decides names, sizes and placement from the scenario (no I/O).
    pub fn plan(s: &Scenario) -> Corpus {
        let mut rng = StdRng::seed_from_u64(s.seed);
        let mut names = BTreeSet::new();
        let mut files = Vec::with_capacity(s.files + 2);
        let mut new_name = |rng: &mut StdRng| loop {
            let artist = ARTISTS[rng.gen_range(0..ARTISTS.len())];
            let nwords = rng.gen_range(1..=3);
            let title: Vec<&str> = (0..nwords)
                .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
                .collect();
            let title = title.join(" ");
            let name = format!("{artist} - {title}.mp3");
            if names.insert(name.to_lowercase()) {
                return (name, format!("{artist} {title}"));
            }
        };
        for rank in 1..=s.files {
            let (name, query) = new_name(&mut rng);
            // Sizes spread log-uniformly, like a music collection of short and long tracks.
            let (lo, hi) = (
                (s.min_file_kib * 1024) as f64,
                (s.max_file_kib * 1024) as f64,
            );
            let size = (lo * (hi / lo).powf(rng.gen::<f64>())).round() as u64;
            let want =
                (s.peers as f64 * s.top_fraction / (rank as f64).powf(s.zipf_exponent)).round();
            let count = (want as usize).clamp(1, s.peers);
            let mut all: Vec<usize> = (0..s.peers).collect();
            all.shuffle(&mut rng);
            let mut holders = all[..count].to_vec();
            holders.sort_unstable();
            files.push(CorpusFile {
                name,
                query,
                size,
                rank,
                holders,
                role: Role::Regular,
                decoy_holders: Vec::new(),
                content_seed: rng.next_u64(),
            });
        }
        let churn_holders: Vec<usize> =
            (s.peers - s.churn_sources.clamp(1, s.peers - 1)..s.peers).collect();
        for (role, kib, holders) in [
            (Role::Flash, s.flash_file_kib, vec![0]),
            (Role::Churn, s.churn_file_kib, churn_holders.clone()),
        ] {
            let (name, query) = new_name(&mut rng);
            files.push(CorpusFile {
                name,
                query,
                size: kib * 1024,
                rank: 0,
                holders,
                role,
                decoy_holders: Vec::new(),
                content_seed: rng.next_u64(),
            });
        }
        if s.decoys > 0 {
            // Genuine copies and decoys on distinct peers, away from the flash source and the churn sources.
            let mut free: Vec<usize> = (1..s.peers)
                .filter(|p| !churn_holders.contains(p))
                .collect();
            free.shuffle(&mut rng);
            let g = s.pollution_genuine.min(free.len());
            let mut holders = free[..g].to_vec();
            let mut decoy_holders = free[g..(g + s.decoys).min(free.len())].to_vec();
            holders.sort_unstable();
            decoy_holders.sort_unstable();
            let (name, query) = new_name(&mut rng);
            files.push(CorpusFile {
                name,
                query,
                size: s.flash_file_kib * 1024,
                rank: 0,
                holders,
                role: Role::Polluted,
                decoy_holders,
                content_seed: rng.next_u64(),
            });
        }
        Corpus {
            peers: s.peers,
            files,
        }
    }

    /// The most popular regular file.
    pub fn popular(&self) -> &CorpusFile {
        &self.files[0]
    }

    /// The rarest regular file (highest rank; held by one peer unless the swarm is tiny).
    pub fn rare(&self) -> &CorpusFile {
        self.files
            .iter()
            .filter(|f| f.role == Role::Regular)
            .max_by_key(|f| (usize::MAX - f.holders.len(), f.rank))
            .expect("at least one regular file")
    }

    /// The file of a role (the flash and churn files always exist).
    pub fn by_role(&self, role: Role) -> &CorpusFile {
        self.files
            .iter()
            .find(|f| f.role == role)
            .expect("flash and churn files exist")
    }

    /// The polluted file, when the scenario has decoys.
    pub fn polluted(&self) -> Option<&CorpusFile> {
        self.files.iter().find(|f| f.role == Role::Polluted)
    }

    /// True if `peer` must stay reachable without push (it is a flash, churn or pollution source): the
    /// lab makes no such peer firewalled.
    pub fn is_special_source(&self, peer: usize) -> bool {
        self.files
            .iter()
            .filter(|f| f.role != Role::Regular)
            .any(|f| f.holders.contains(&peer) || f.decoy_holders.contains(&peer))
    }

    /// Finds a file by name.
    pub fn by_name(&self, name: &str) -> Option<&CorpusFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Regenerates a file's bytes.
    pub fn content(&self, f: &CorpusFile) -> Vec<u8> {
        Self::bytes(f.content_seed, f.size)
    }

    /// Regenerates the bytes of a file's decoy: same size, other content.
    pub fn decoy_content(&self, f: &CorpusFile) -> Vec<u8> {
        Self::bytes(f.content_seed ^ DECOY_SEED, f.size)
    }

    fn bytes(seed: u64, size: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut buf = vec![0u8; size as usize];
        rng.fill_bytes(&mut buf);
        buf
    }

    /// The share folder of a peer under `root`.
    pub fn peer_dir(root: &Path, peer: usize) -> PathBuf {
        root.join(format!("peer-{peer:03}"))
    }

    /// Writes every peer's share folder under `root`; returns the bytes written.
    pub fn write(&self, root: &Path) -> std::io::Result<u64> {
        let mut total = 0;
        for p in 0..self.peers {
            std::fs::create_dir_all(Self::peer_dir(root, p))?;
        }
        for f in &self.files {
            let bytes = self.content(f);
            for &h in &f.holders {
                std::fs::write(Self::peer_dir(root, h).join(&f.name), &bytes)?;
                total += bytes.len() as u64;
            }
            if !f.decoy_holders.is_empty() {
                let decoy = self.decoy_content(f);
                for &h in &f.decoy_holders {
                    std::fs::write(Self::peer_dir(root, h).join(&f.name), &decoy)?;
                    total += decoy.len() as u64;
                }
            }
        }
        Ok(total)
    }

    /// True if `path` holds exactly the planned bytes of `f`.
    pub fn verify(&self, f: &CorpusFile, path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b == self.content(f))
    }

    /// True if `path` holds exactly the bytes of `f`'s decoy.
    pub fn is_decoy(&self, f: &CorpusFile, path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b == self.decoy_content(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_corpus_other_seed_differs() {
        let s = Scenario::small();
        let a = Corpus::plan(&s);
        let b = Corpus::plan(&s);
        assert_eq!(a.files, b.files);
        let c = Corpus::plan(&Scenario { seed: 7, ..s });
        assert_ne!(a.files, c.files);
    }

    #[test]
    fn popularity_is_zipf_like_and_names_realistic() {
        let s = Scenario::default();
        let c = Corpus::plan(&s);
        assert_eq!(c.files.len(), s.files + 2);
        assert_eq!(
            c.popular().holders.len(),
            10,
            "top file on half of 20 peers"
        );
        assert_eq!(c.rare().holders.len(), 1);
        let counts: Vec<usize> = c.files[..s.files].iter().map(|f| f.holders.len()).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        let names: BTreeSet<_> = c.files.iter().map(|f| f.name.to_lowercase()).collect();
        assert_eq!(names.len(), c.files.len(), "names are unique");
        for f in &c.files {
            assert!(
                f.name.ends_with(".mp3") && f.name.contains(" - "),
                "{}",
                f.name
            );
            assert!(f.size >= s.min_file_kib * 1024 || f.role != Role::Regular);
            assert!(f.size <= s.max_file_kib * 1024 || f.role != Role::Regular);
            let mut h = f.holders.clone();
            h.dedup();
            assert_eq!(h, f.holders, "holders distinct and sorted");
        }
        assert_eq!(c.by_role(Role::Flash).holders, vec![0]);
        assert_eq!(
            c.by_role(Role::Churn).holders,
            (s.peers - s.churn_sources..s.peers).collect::<Vec<_>>()
        );
    }

    #[test]
    fn written_files_verify_and_a_changed_byte_does_not() {
        let s = Scenario::small();
        let c = Corpus::plan(&s);
        let dir = tempfile::tempdir().unwrap();
        let total = c.write(dir.path()).unwrap();
        let expect: u64 = c
            .files
            .iter()
            .map(|f| f.size * f.holders.len() as u64)
            .sum();
        assert_eq!(total, expect);
        let f = c.popular();
        let p = Corpus::peer_dir(dir.path(), f.holders[0]).join(&f.name);
        assert!(c.verify(f, &p));
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(!c.verify(f, &p));
    }

    #[test]
    fn decoys_share_the_name_not_the_bytes() {
        let s = Scenario {
            decoys: 2,
            pollution_genuine: 1,
            pollution_downloads: 2,
            churn_sources: 2,
            ..Scenario::small()
        };
        s.validate().unwrap();
        let c = Corpus::plan(&s);
        assert_eq!(c.by_role(Role::Churn).holders, vec![4, 5]);
        let f = c.polluted().unwrap();
        assert_eq!((f.holders.len(), f.decoy_holders.len()), (1, 2));
        let too_many = Scenario {
            decoys: 3,
            ..s.clone()
        };
        assert!(too_many
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`decoys`"));
        for p in f.holders.iter().chain(&f.decoy_holders) {
            assert!(
                *p != 0 && *p < 4,
                "away from the flash and churn sources: {p}"
            );
            assert!(c.is_special_source(*p));
        }
        assert!(f.holders.iter().all(|h| !f.decoy_holders.contains(h)));
        let dir = tempfile::tempdir().unwrap();
        c.write(dir.path()).unwrap();
        let genuine = Corpus::peer_dir(dir.path(), f.holders[0]).join(&f.name);
        let decoy = Corpus::peer_dir(dir.path(), f.decoy_holders[0]).join(&f.name);
        assert!(c.verify(f, &genuine) && !c.is_decoy(f, &genuine));
        assert!(c.is_decoy(f, &decoy) && !c.verify(f, &decoy));
        assert_eq!(std::fs::metadata(&decoy).unwrap().len(), f.size);
        // Without decoys the corpus is the one earlier versions planned.
        assert!(Corpus::plan(&Scenario::small()).polluted().is_none());
    }
}
