//! Test tools shared by the unit tests: a seeded generator and the
//! mutations the property tests feed to goldcap's parsers of untrusted
//! input (MANIFESTs, archives). Compiled for tests only.

/// xorshift64: the same inputs on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 for 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `len` bytes that do not compress.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 24) as u8).collect()
    }
}

/// Pieces of JSON that parsers and checks meet badly.
pub const JSON_PIECES: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"\"..\"",
    b"\"/etc/shadow\"",
    b"\"\\u0000\"",
    b"\"\\n\"",
    b"\"{{.X}}\"",
    b"\"tool\"",
    b"\"filename\"",
    b"\"size\"",
    b"\\",
    b"\xef\xbb\xbf",
];

/// `base` with one to four random edits: a byte changed, a cut, a piece
/// inserted, a stretch repeated or removed.
pub fn mutate(rng: &mut Rng, base: &[u8], pieces: &[&[u8]]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => v.truncate(at),
            2 if !pieces.is_empty() => {
                let p = pieces[rng.below(pieces.len())];
                v.splice(at..at, p.iter().copied());
            }
            3 => {
                let end = (at + rng.below(64)).min(v.len());
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            _ if at < v.len() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            _ => {}
        }
    }
    v
}
