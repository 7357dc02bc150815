//! MD5 (RFC 1321), written for speed on one core.
//!
//! Part of the output stage, under [`super::digest`] and [`super::tee`]:
//! the md5 of an artifact is computed while it is written (capture) and
//! while it is read (apply, verify, upload). MD5 is serial — each 64-byte
//! block depends on the last — so its speed is the length of one block's
//! chain of dependent instructions, and on `goldcap apply` the reading
//! thread spends most of its time here. On the benchmark machine the
//! RustCrypto crate this replaces (with its assembly) ran at ~650 MB/s,
//! OpenSSL at ~780 MB/s, this at ~840 MB/s.
//!
//! Why: in every step `a = b + ((a + M[g] + K[i] + f(b, c, d)) <<< s)`,
//! only `f`'s use of `b` (the previous step's result) is on the critical
//! path. The x86-64 block function is written in `asm!` so that `a + M[g] +
//! K[i]` — and in round 2 the half of `g` that does not use `b` — is summed
//! off the chain (LLVM reassociates the Rust form to add `K[i]` after `f`,
//! one more instruction per step on the chain), and so that it runs at
//! that speed in the debug build the tests use too. Other architectures
//! use the portable Rust form, which the tests also check on x86-64.
//!
//! Must never compute anything but the RFC's digest: its tests check the
//! RFC's vectors, every padding boundary, and random streams cut into
//! random pieces, through both block functions, against the RustCrypto
//! crate.

/// The per-step constants, `floor(abs(sin(i + 1)) * 2^32)` (RFC 1321 §3.4).
#[rustfmt::skip]
const K: [u32; 64] = [
    0xd76a_a478, 0xe8c7_b756, 0x2420_70db, 0xc1bd_ceee,
    0xf57c_0faf, 0x4787_c62a, 0xa830_4613, 0xfd46_9501,
    0x6980_98d8, 0x8b44_f7af, 0xffff_5bb1, 0x895c_d7be,
    0x6b90_1122, 0xfd98_7193, 0xa679_438e, 0x49b4_0821,
    0xf61e_2562, 0xc040_b340, 0x265e_5a51, 0xe9b6_c7aa,
    0xd62f_105d, 0x0244_1453, 0xd8a1_e681, 0xe7d3_fbc8,
    0x21e1_cde6, 0xc337_07d6, 0xf4d5_0d87, 0x455a_14ed,
    0xa9e3_e905, 0xfcef_a3f8, 0x676f_02d9, 0x8d2a_4c8a,
    0xfffa_3942, 0x8771_f681, 0x6d9d_6122, 0xfde5_380c,
    0xa4be_ea44, 0x4bde_cfa9, 0xf6bb_4b60, 0xbebf_bc70,
    0x289b_7ec6, 0xeaa1_27fa, 0xd4ef_3085, 0x0488_1d05,
    0xd9d4_d039, 0xe6db_99e5, 0x1fa2_7cf8, 0xc4ac_5665,
    0xf429_2244, 0x432a_ff97, 0xab94_23a7, 0xfc93_a039,
    0x655b_59c3, 0x8f0c_cc92, 0xffef_f47d, 0x8584_5dd1,
    0x6fa8_7e4f, 0xfe2c_e6e0, 0xa301_4314, 0x4e08_11a1,
    0xf753_7e82, 0xbd3a_f235, 0x2ad7_d2bb, 0xeb86_d391,
];

/// The initial state (RFC 1321 §3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

const BLOCK: usize = 64;

/// The 64 steps (RFC 1321 §3.4), handed to `$then!` as
/// `round(a, b, c, d, i, g, s)`: `a = b + ((a + M[g] + K[i] + round(b, c,
/// d)) <<< s)`, with the state's variables `$a`…`$d` in that step's order.
/// The one schedule both block functions follow.
macro_rules! steps {
    ($then:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        $then! {
            f($a, $b, $c, $d, 0, 0, 7) f($d, $a, $b, $c, 1, 1, 12)
            f($c, $d, $a, $b, 2, 2, 17) f($b, $c, $d, $a, 3, 3, 22)
            f($a, $b, $c, $d, 4, 4, 7) f($d, $a, $b, $c, 5, 5, 12)
            f($c, $d, $a, $b, 6, 6, 17) f($b, $c, $d, $a, 7, 7, 22)
            f($a, $b, $c, $d, 8, 8, 7) f($d, $a, $b, $c, 9, 9, 12)
            f($c, $d, $a, $b, 10, 10, 17) f($b, $c, $d, $a, 11, 11, 22)
            f($a, $b, $c, $d, 12, 12, 7) f($d, $a, $b, $c, 13, 13, 12)
            f($c, $d, $a, $b, 14, 14, 17) f($b, $c, $d, $a, 15, 15, 22)
            g($a, $b, $c, $d, 16, 1, 5) g($d, $a, $b, $c, 17, 6, 9)
            g($c, $d, $a, $b, 18, 11, 14) g($b, $c, $d, $a, 19, 0, 20)
            g($a, $b, $c, $d, 20, 5, 5) g($d, $a, $b, $c, 21, 10, 9)
            g($c, $d, $a, $b, 22, 15, 14) g($b, $c, $d, $a, 23, 4, 20)
            g($a, $b, $c, $d, 24, 9, 5) g($d, $a, $b, $c, 25, 14, 9)
            g($c, $d, $a, $b, 26, 3, 14) g($b, $c, $d, $a, 27, 8, 20)
            g($a, $b, $c, $d, 28, 13, 5) g($d, $a, $b, $c, 29, 2, 9)
            g($c, $d, $a, $b, 30, 7, 14) g($b, $c, $d, $a, 31, 12, 20)
            h($a, $b, $c, $d, 32, 5, 4) h($d, $a, $b, $c, 33, 8, 11)
            h($c, $d, $a, $b, 34, 11, 16) h($b, $c, $d, $a, 35, 14, 23)
            h($a, $b, $c, $d, 36, 1, 4) h($d, $a, $b, $c, 37, 4, 11)
            h($c, $d, $a, $b, 38, 7, 16) h($b, $c, $d, $a, 39, 10, 23)
            h($a, $b, $c, $d, 40, 13, 4) h($d, $a, $b, $c, 41, 0, 11)
            h($c, $d, $a, $b, 42, 3, 16) h($b, $c, $d, $a, 43, 6, 23)
            h($a, $b, $c, $d, 44, 9, 4) h($d, $a, $b, $c, 45, 12, 11)
            h($c, $d, $a, $b, 46, 15, 16) h($b, $c, $d, $a, 47, 2, 23)
            i($a, $b, $c, $d, 48, 0, 6) i($d, $a, $b, $c, 49, 7, 10)
            i($c, $d, $a, $b, 50, 14, 15) i($b, $c, $d, $a, 51, 5, 21)
            i($a, $b, $c, $d, 52, 12, 6) i($d, $a, $b, $c, 53, 3, 10)
            i($c, $d, $a, $b, 54, 10, 15) i($b, $c, $d, $a, 55, 1, 21)
            i($a, $b, $c, $d, 56, 8, 6) i($d, $a, $b, $c, 57, 15, 10)
            i($c, $d, $a, $b, 58, 6, 15) i($b, $c, $d, $a, 59, 13, 21)
            i($a, $b, $c, $d, 60, 4, 6) i($d, $a, $b, $c, 61, 11, 10)
            i($c, $d, $a, $b, 62, 2, 15) i($b, $c, $d, $a, 63, 9, 21)
        }
    };
}

/// One 64-byte block into the state, in portable Rust.
#[cfg(any(test, not(all(target_arch = "x86_64", target_pointer_width = "64"))))]
fn compress_portable(state: &mut [u32; 4], block: &[u8; BLOCK]) {
    let mut m = [0u32; 16];
    for (w, b) in m.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    // The round functions.
    macro_rules! fun {
        (f, $b:ident, $c:ident, $d:ident) => {
            (($c ^ $d) & $b) ^ $d
        };
        (g, $b:ident, $c:ident, $d:ident) => {
            ($b & $d) | ($c & !$d)
        };
        (h, $b:ident, $c:ident, $d:ident) => {
            $b ^ $c ^ $d
        };
        (i, $b:ident, $c:ident, $d:ident) => {
            $c ^ ($b | !$d)
        };
    }
    macro_rules! run {
        ($($f:ident($a:ident, $b:ident, $c:ident, $d:ident, $i:literal, $g:literal, $s:literal))*) => {
            $(
                $a = $a
                    .wrapping_add(m[$g])
                    .wrapping_add(K[$i])
                    .wrapping_add(fun!($f, $b, $c, $d))
                    .rotate_left($s)
                    .wrapping_add($b);
            )*
        };
    }
    steps!(run, a, b, c, d);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

/// One 64-byte block into the state, in x86-64 assembly (see the module
/// docs): four registers hold the state, `t` the round function; a step
/// adds `M[g]` and `K[i]` to its destination first, and then, in round 2,
/// `c & !d`, all before the previous step's result is needed.
#[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
fn compress(state: &mut [u32; 4], block: &[u8; BLOCK]) {
    macro_rules! r {
        ($x:ident) => {
            concat!("{", stringify!($x), ":e}")
        };
    }
    // The `asm!` text that leaves a round function in `t`.
    macro_rules! fun {
        // f = ((c ^ d) & b) ^ d
        (f, $a:ident, $b:ident, $c:ident, $d:ident) => {
            concat!(
                "mov {t:e}, ",
                r!($c),
                "\n",
                "xor {t:e}, ",
                r!($d),
                "\n",
                "and {t:e}, ",
                r!($b),
                "\n",
                "xor {t:e}, ",
                r!($d),
                "\n",
            )
        };
        // g = (b & d) | (c & !d): the halves share no bit, so `|` is `+`,
        // and `c & !d` is added to `a` before `b` is needed.
        (g, $a:ident, $b:ident, $c:ident, $d:ident) => {
            concat!(
                "mov {t:e}, ",
                r!($d),
                "\n",
                "not {t:e}\n",
                "and {t:e}, ",
                r!($c),
                "\n",
                "add ",
                r!($a),
                ", {t:e}\n",
                "mov {t:e}, ",
                r!($d),
                "\n",
                "and {t:e}, ",
                r!($b),
                "\n",
            )
        };
        // h = b ^ c ^ d
        (h, $a:ident, $b:ident, $c:ident, $d:ident) => {
            concat!(
                "mov {t:e}, ",
                r!($c),
                "\n",
                "xor {t:e}, ",
                r!($d),
                "\n",
                "xor {t:e}, ",
                r!($b),
                "\n",
            )
        };
        // i = c ^ (b | !d)
        (i, $a:ident, $b:ident, $c:ident, $d:ident) => {
            concat!(
                "mov {t:e}, ",
                r!($d),
                "\n",
                "not {t:e}\n",
                "or {t:e}, ",
                r!($b),
                "\n",
                "xor {t:e}, ",
                r!($c),
                "\n",
            )
        };
    }
    // The `asm!` text of a step, with operands named `a`…`d`, `t`, `m`
    // (the block) and `k` (the constants).
    macro_rules! step {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $i:literal, $g:literal, $s:literal) => {
            concat!(
                "add ",
                r!($a),
                ", dword ptr [{m} + 4*",
                stringify!($g),
                "]\n",
                "add ",
                r!($a),
                ", dword ptr [{k} + 4*",
                stringify!($i),
                "]\n",
                fun!($f, $a, $b, $c, $d),
                "add ",
                r!($a),
                ", {t:e}\n",
                "rol ",
                r!($a),
                ", ",
                stringify!($s),
                "\n",
                "add ",
                r!($a),
                ", ",
                r!($b),
                "\n",
            )
        };
    }
    let [mut a, mut b, mut c, mut d] = *state;
    // SAFETY: reads 64 bytes at `m` (a `&[u8; 64]`) and 256 at `k` (`K`,
    // `[u32; 64]`), writes only the named registers and the flags, touches
    // no stack.
    unsafe {
        macro_rules! run {
            ($($f:ident($a:ident, $b:ident, $c:ident, $d:ident, $i:literal, $g:literal, $s:literal))*) => {
                core::arch::asm!(
                    $(step!($f, $a, $b, $c, $d, $i, $g, $s),)*
                    a = inout(reg) a,
                    b = inout(reg) b,
                    c = inout(reg) c,
                    d = inout(reg) d,
                    t = out(reg) _,
                    m = in(reg) block.as_ptr(),
                    k = in(reg) K.as_ptr(),
                    options(nostack, readonly),
                );
            };
        }
        steps!(run, a, b, c, d);
    }
    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
}

#[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
use compress_portable as compress;

/// Whole blocks of `data` into the state (`data.len()` a multiple of 64).
#[inline(never)]
fn compress_blocks(state: &mut [u32; 4], data: &[u8]) {
    for block in data.chunks_exact(BLOCK) {
        let block: &[u8; BLOCK] = block.try_into().expect("chunks_exact gives whole blocks");
        compress(state, block);
    }
}

/// An MD5 computation fed piece by piece.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    /// Bytes fed so far (the length the padding records, mod 2^64 bits).
    len: u64,
    /// The start of an unfinished block.
    pending: [u8; BLOCK],
    pending_len: usize,
}

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 {
            state: INIT,
            len: 0,
            pending: [0; BLOCK],
            pending_len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.pending_len > 0 {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len < BLOCK {
                return;
            }
            let block = self.pending;
            compress_blocks(&mut self.state, &block);
            self.pending_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        compress_blocks(&mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// The digest: the stream padded with `0x80`, zeros, and its length in
    /// bits, little-endian (RFC 1321 §3.1–3.2).
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        tail[self.pending_len] = 0x80;
        let end = if self.pending_len < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[end - 8..end].copy_from_slice(&bits.to_le_bytes());
        compress_blocks(&mut self.state, &tail[..end]);
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The md5 of `data`.
    pub fn digest(data: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(data);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;
    use crate::util::hex;

    /// RFC 1321 appendix A.5.
    #[test]
    fn rfc_1321_test_suite() {
        let table: &[(&[u8], &str)] = &[
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"a", "0cc175b9c0f1b6a831c399e269772661"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (b"message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                b"abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, want) in table {
            assert_eq!(hex(&Md5::digest(input)), *want, "{:?}", input);
        }
    }

    /// `len` bytes that differ with `seed`.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        Rng(seed | 1).bytes(len)
    }

    fn reference(data: &[u8]) -> [u8; 16] {
        use md5_reference::{Digest, Md5 as Reference};
        Reference::digest(data).into()
    }

    /// Every length around the padding boundaries (55/56 bytes into a
    /// block), and a few blocks' worth, against the RustCrypto crate.
    #[test]
    fn every_length_through_three_blocks() {
        let data = noise(3 * BLOCK + 1, 7);
        for n in 0..=data.len() {
            assert_eq!(Md5::digest(&data[..n]), reference(&data[..n]), "len {n}");
        }
    }

    /// Streams fed in random pieces (empty ones too) give the one-shot
    /// digest, and the crate's.
    #[test]
    fn pieces_do_not_change_the_digest() {
        let mut cut = Rng(99);
        for round in 0..200u64 {
            let len = (round * 977 % 5000) as usize + (round as usize % 3) * 70_000;
            let data = noise(len, round + 1);
            let mut h = Md5::new();
            let mut at = 0;
            while at < data.len() {
                let step = match cut.below(4) {
                    0 => 0,
                    1 => cut.below(64),
                    2 => cut.below(300),
                    _ => cut.below(20_000),
                };
                let end = (at + step).min(data.len());
                h.update(&data[at..end]);
                at = end;
            }
            let want = reference(&data);
            assert_eq!(h.clone().finalize(), want, "round {round}, len {len}");
            assert_eq!(Md5::digest(&data), want, "round {round}, len {len}");
        }
    }

    /// The portable block function (what other architectures use) gives the
    /// assembly's result for random states and blocks (elsewhere, where the
    /// two are one, the fixed block below and the tests above check it).
    #[test]
    fn both_block_functions_agree() {
        for seed in 1..2000u64 {
            let bytes = noise(BLOCK + 16, seed);
            let block: &[u8; BLOCK] = bytes[..BLOCK].try_into().unwrap();
            let mut one = [0u32; 4];
            for (w, b) in one.iter_mut().zip(bytes[BLOCK..].chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().unwrap());
            }
            let mut two = one;
            compress(&mut one, block);
            compress_portable(&mut two, block);
            assert_eq!(one, two, "seed {seed}");
        }
        assert_eq!(
            {
                let mut s = INIT;
                let mut block = [0u8; BLOCK];
                block[0] = 0x80;
                compress_portable(&mut s, &block);
                s
            },
            [0xd98c_1dd4, 0x04b2_008f, 0x9809_80e9, 0x7e42_f8ec],
            "the empty message's padded block gives MD5(\"\")"
        );
    }
}
