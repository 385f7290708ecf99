//! The piece-picking rules of BEP 3 ("piece downloading strategy") pinned on the sans-I/O picker with
//! seeded RNGs: random first pieces, then rarest first over several picks, equally rare pieces taken
//! from a random origin, `have`s and departures moving the availability, and strict priority for a
//! started piece over a rarer new one.

use std::collections::HashSet;

use bittorrent_peer::codec::peer::BLOCK_LEN;
use bittorrent_peer::protocol::bitfield::Bitfield;
use bittorrent_peer::protocol::picker::{Picker, RANDOM_FIRST_PIECES};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn bits(n: u32, ones: impl IntoIterator<Item = u32>) -> Bitfield {
    let mut b = Bitfield::new(n);
    for i in ones {
        b.set(i);
    }
    b
}

/// `n` pieces of `blocks` blocks each, the pieces `0..have` already verified.
fn picker(n: u32, blocks: u32, have: u32) -> Picker {
    let len = blocks * BLOCK_LEN;
    Picker::new(len, u64::from(n) * u64::from(len), bits(n, 0..have))
}

/// Pieces 4..16 are held by 1..=12 peers, each count once, in a scrambled order.
fn distinct_availability(p: &mut Picker) -> Vec<u32> {
    let avail = |i: u32| (i * 5) % 12 + 1;
    for k in 1..=12 {
        p.add_peer_pieces(&bits(16, (4..16).filter(|&i| avail(i) >= k)));
    }
    let mut by_rarity: Vec<u32> = (4..16).collect();
    by_rarity.sort_by_key(|&i| avail(i));
    for &i in &by_rarity {
        assert_eq!(p.availability(i), avail(i));
    }
    by_rarity
}

#[test]
fn after_the_random_first_pieces_new_pieces_come_rarest_first() {
    let all = Bitfield::full(16);
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = picker(16, 1, RANDOM_FIRST_PIECES);
        let want = distinct_availability(&mut p);
        let got: Vec<u32> = (0..12)
            .map(|_| p.pick(1, &all, &mut rng).unwrap().index)
            .collect();
        assert_eq!(got, want, "seed {seed}: every new piece is the rarest left");
    }
}

#[test]
fn the_first_pieces_are_random_not_rarest() {
    let all = Bitfield::full(16);
    let mut firsts = HashSet::new();
    let mut rarest = 0;
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        // One piece short of the random start's end: still random.
        let mut p = picker(16, 1, RANDOM_FIRST_PIECES - 1);
        let order = distinct_availability(&mut p);
        let first = p.pick(1, &all, &mut rng).unwrap().index;
        firsts.insert(first);
        rarest += usize::from(first == order[0]);
    }
    assert!(firsts.len() >= 6, "random first pieces: {firsts:?}");
    assert!(rarest <= 12, "the rarest came first {rarest} times of 40");
}

#[test]
fn equally_rare_pieces_are_taken_from_a_random_origin() {
    let all = Bitfield::full(16);
    let mut firsts = HashSet::new();
    for seed in 0..40 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = picker(16, 1, RANDOM_FIRST_PIECES);
        // Pieces 5, 9 and 13 are with one peer, the rest with three.
        p.add_peer_pieces(&all);
        let common = bits(16, (4..16).filter(|i| ![5, 9, 13].contains(i)));
        p.add_peer_pieces(&common);
        p.add_peer_pieces(&common);
        let first = p.pick(1, &all, &mut rng).unwrap().index;
        assert!(
            [5, 9, 13].contains(&first),
            "seed {seed}: {first} is not rarest"
        );
        firsts.insert(first);
    }
    assert_eq!(
        firsts.len(),
        3,
        "each tied piece can come first: {firsts:?}"
    );
}

#[test]
fn haves_and_departures_move_the_availability() {
    let mut rng = StdRng::seed_from_u64(9);
    let all = Bitfield::full(8);
    let mut p = picker(8, 1, RANDOM_FIRST_PIECES);
    p.add_peer_pieces(&all);
    // `have` messages: piece 7 from two more peers, 5 and 6 from one.
    for i in [7, 7, 6, 5] {
        p.add_peer_piece(i);
    }
    // A `have` for a piece that does not exist changes nothing.
    p.add_peer_piece(99);
    let avail: Vec<u32> = (4..8).map(|i| p.availability(i)).collect();
    assert_eq!(avail, [1, 2, 2, 3]);
    assert_eq!(p.pick(1, &all, &mut rng).unwrap().index, 4);
    // The peer with everything leaves; a new `have` makes 5 commoner than 6.
    p.remove_peer_pieces(&all);
    p.add_peer_piece(5);
    let avail: Vec<u32> = (4..8).map(|i| p.availability(i)).collect();
    assert_eq!(avail, [0, 2, 1, 2]);
    assert_eq!(p.pick(2, &all, &mut rng).unwrap().index, 6);
}

#[test]
fn a_started_piece_is_finished_before_a_rarer_new_one() {
    let all = Bitfield::full(8);
    for seed in 0..10 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p = picker(8, 4, RANDOM_FIRST_PIECES);
        for _ in 0..3 {
            p.add_peer_pieces(&all);
        }
        let x = p.pick(1, &all, &mut rng).unwrap();
        assert_eq!(x.begin, 0);
        // Another piece becomes the rarest: five more peers have everything but it.
        let y = (x.index - 4 + 1) % 4 + 4;
        let not_y = bits(8, (0..8).filter(|&i| i != y));
        for _ in 0..5 {
            p.add_peer_pieces(&not_y);
        }
        assert!(p.availability(y) < p.availability(x.index));
        // The started piece is finished first, and only then the rarer one begins.
        for b in 1..4 {
            let got = p.pick(2, &all, &mut rng).unwrap();
            assert_eq!(
                (got.index, got.begin),
                (x.index, b * BLOCK_LEN),
                "seed {seed}"
            );
        }
        assert_eq!(p.pick(2, &all, &mut rng).unwrap().index, y, "seed {seed}");
    }
}
