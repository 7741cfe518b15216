//! Frame maps: per-call-site liveness bitmaps for a function's frame slots.
//!
//! A frame map says, for each call site of a function, which of its frame's
//! slots hold live references there — Go's stack-map index picking a bitmap
//! at each call. Maps are usually `static`, built by [`frame_map!`] in a const
//! context, where a slot index out of range is a compile-time error. Maps
//! built at run time ([`FrameMap::new`], [`FrameMap::from_bytes`]) are
//! checked and return a [`MapError`] naming the problem.

use std::borrow::Cow;
use std::fmt;

use bitvec::prelude::{BitSlice, Lsb0};

/// Bits per storage word.
pub const WORD_BITS: usize = usize::BITS as usize;

/// Most slots a frame may have.
pub const MAX_SLOTS: usize = 1 << 16;
/// Most call sites a map may have.
pub const MAX_SITES: usize = 1 << 16;

/// Storage words per call site for `nslots` slots.
pub const fn words_for(nslots: usize) -> usize {
    if nslots == 0 {
        1
    } else {
        nslots.div_ceil(WORD_BITS)
    }
}

/// A function's frame map: `nslots` slots and one liveness bitmap per call
/// site.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameMap {
    nslots: u32,
    nsites: u32,
    bits: Cow<'static, [usize]>,
}

impl fmt::Debug for FrameMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for s in 0..self.sites() {
            l.entry(&self.live_slots(s).collect::<Vec<_>>());
        }
        l.finish()
    }
}

/// A frame map that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// More slots than [`MAX_SLOTS`].
    TooManySlots(usize),
    /// More call sites than [`MAX_SITES`].
    TooManySites(usize),
    /// A call site names a slot the frame does not have.
    SlotOutOfRange {
        /// The call site.
        site: usize,
        /// The slot named.
        slot: usize,
        /// The frame's slot count.
        nslots: usize,
    },
    /// Encoded input is shorter than its header says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Encoded input has bytes after the last bitmap.
    TrailingBytes(usize),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::TooManySlots(n) => {
                write!(f, "frame map has {n} slots, more than {MAX_SLOTS}")
            }
            MapError::TooManySites(n) => {
                write!(f, "frame map has {n} call sites, more than {MAX_SITES}")
            }
            MapError::SlotOutOfRange { site, slot, nslots } => write!(
                f,
                "call site {site} marks slot {slot} live, but the frame has {nslots} slots"
            ),
            MapError::Truncated { needed, got } => {
                write!(f, "encoded frame map needs {needed} bytes, got {got}")
            }
            MapError::TrailingBytes(n) => write!(f, "encoded frame map has {n} trailing bytes"),
        }
    }
}
impl std::error::Error for MapError {}

/// Builds the bit storage of a static map; used by [`frame_map!`]. Panics
/// (a compile-time error in a const context) on a slot out of range.
#[doc(hidden)]
pub const fn __build_bits<const LEN: usize>(nslots: usize, sites: &[&[usize]]) -> [usize; LEN] {
    let w = words_for(nslots);
    assert!(LEN == w * sites.len(), "frame_map!: storage size mismatch");
    assert!(nslots <= MAX_SLOTS, "frame_map!: too many slots");
    let mut bits = [0usize; LEN];
    let mut s = 0;
    while s < sites.len() {
        let mut i = 0;
        while i < sites[s].len() {
            let slot = sites[s][i];
            assert!(
                slot < nslots,
                "frame_map!: a call site names a slot past the frame's slot count"
            );
            bits[s * w + slot / WORD_BITS] |= 1 << (slot % WORD_BITS);
            i += 1;
        }
        s += 1;
    }
    bits
}

/// Builds a `static` [`FrameMap`] at compile time:
///
/// ```
/// use pardon_stackscan::{frame_map, FrameMap};
/// // Three slots; at call site 0 slots 0 and 2 are live, at site 1 only slot 1.
/// static MAP: FrameMap = frame_map!(3; [0, 2], [1]);
/// assert_eq!(MAP.sites(), 2);
/// assert!(MAP.is_live(0, 2) && !MAP.is_live(1, 2));
/// ```
///
/// A slot index out of range fails to compile:
///
/// ```compile_fail
/// use pardon_stackscan::{frame_map, FrameMap};
/// static BAD: FrameMap = frame_map!(2; [0, 2]);
/// ```
#[macro_export]
macro_rules! frame_map {
    ($nslots:expr; $([$($slot:expr),* $(,)?]),* $(,)?) => {{
        const SITES: &[&[usize]] = &[$(&[$($slot),*]),*];
        const NSLOTS: usize = $nslots;
        const LEN: usize = $crate::words_for(NSLOTS) * SITES.len();
        const BITS: [usize; LEN] = $crate::__build_bits::<LEN>(NSLOTS, SITES);
        $crate::FrameMap::from_static(NSLOTS, SITES.len(), &BITS)
    }};
}

impl FrameMap {
    /// A map over static storage, as [`frame_map!`] builds it.
    #[doc(hidden)]
    pub const fn from_static(nslots: usize, nsites: usize, bits: &'static [usize]) -> FrameMap {
        assert!(bits.len() == words_for(nslots) * nsites);
        assert!(nsites <= MAX_SITES);
        FrameMap {
            nslots: nslots as u32,
            nsites: nsites as u32,
            bits: Cow::Borrowed(bits),
        }
    }

    /// Builds a map at run time from the live slots of each call site.
    pub fn new(nslots: usize, sites: &[&[usize]]) -> Result<FrameMap, MapError> {
        if nslots > MAX_SLOTS {
            return Err(MapError::TooManySlots(nslots));
        }
        if sites.len() > MAX_SITES {
            return Err(MapError::TooManySites(sites.len()));
        }
        let w = words_for(nslots);
        let mut bits = vec![0usize; w * sites.len()];
        for (s, live) in sites.iter().enumerate() {
            for &slot in live.iter() {
                if slot >= nslots {
                    return Err(MapError::SlotOutOfRange {
                        site: s,
                        slot,
                        nslots,
                    });
                }
                bits[s * w + slot / WORD_BITS] |= 1 << (slot % WORD_BITS);
            }
        }
        Ok(FrameMap {
            nslots: nslots as u32,
            nsites: sites.len() as u32,
            bits: Cow::Owned(bits),
        })
    }

    /// Decodes a map: `u16` slot count and `u16` site count (little endian),
    /// then per site `ceil(nslots / 8)` bytes of bitmap, bit `i` of byte `j`
    /// being slot `8j + i`. Bits past the slot count are an error, and so are
    /// missing or extra bytes.
    pub fn from_bytes(b: &[u8]) -> Result<FrameMap, MapError> {
        if b.len() < 4 {
            return Err(MapError::Truncated {
                needed: 4,
                got: b.len(),
            });
        }
        let nslots = u16::from_le_bytes([b[0], b[1]]) as usize;
        let nsites = u16::from_le_bytes([b[2], b[3]]) as usize;
        let per = nslots.div_ceil(8);
        let needed = 4 + per * nsites;
        if b.len() < needed {
            return Err(MapError::Truncated {
                needed,
                got: b.len(),
            });
        }
        if b.len() > needed {
            return Err(MapError::TrailingBytes(b.len() - needed));
        }
        let w = words_for(nslots);
        let mut bits = vec![0usize; w * nsites];
        for s in 0..nsites {
            for j in 0..per {
                let byte = b[4 + s * per + j];
                for i in 0..8 {
                    if byte & (1 << i) != 0 {
                        let slot = 8 * j + i;
                        if slot >= nslots {
                            return Err(MapError::SlotOutOfRange {
                                site: s,
                                slot,
                                nslots,
                            });
                        }
                        bits[s * w + slot / WORD_BITS] |= 1 << (slot % WORD_BITS);
                    }
                }
            }
        }
        Ok(FrameMap {
            nslots: nslots as u32,
            nsites: nsites as u32,
            bits: Cow::Owned(bits),
        })
    }

    /// Encodes the map in the [`FrameMap::from_bytes`] format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (n, per) = (self.slots(), self.slots().div_ceil(8));
        let mut out = Vec::with_capacity(4 + per * self.sites());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(self.sites() as u16).to_le_bytes());
        for s in 0..self.sites() {
            let mut bytes = vec![0u8; per];
            for slot in self.live_slots(s) {
                bytes[slot / 8] |= 1 << (slot % 8);
            }
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Slots per frame.
    #[inline]
    pub fn slots(&self) -> usize {
        self.nslots as usize
    }

    /// Call sites.
    #[inline]
    pub fn sites(&self) -> usize {
        self.nsites as usize
    }

    /// The liveness bitmap of call site `site` (`nslots` bits).
    pub fn site(&self, site: usize) -> &BitSlice<usize, Lsb0> {
        assert!(
            site < self.sites(),
            "call site {site} out of range ({} sites)",
            self.sites()
        );
        let w = words_for(self.slots());
        &BitSlice::from_slice(&self.bits[site * w..(site + 1) * w])[..self.slots()]
    }

    /// Whether slot `slot` is live at call site `site`.
    pub fn is_live(&self, site: usize, slot: usize) -> bool {
        self.site(site)[slot]
    }

    /// The raw liveness words of `site` (bit `i` of word `i / usize::BITS`
    /// is slot `i`; bits at and above `slots()` are zero). For the scanner's
    /// loop, which visits set bits with trailing-zero counts rather than
    /// through a bit iterator.
    #[inline]
    pub(crate) fn site_words(&self, site: usize) -> &[usize] {
        let w = words_for(self.slots());
        &self.bits[site * w..(site + 1) * w]
    }

    /// The live slots at `site`, in increasing order.
    ///
    /// Walks the site's words with trailing-zero counts rather than
    /// `BitSlice::iter_ones`: bitvec 1.1's iterator retags its slice in a way
    /// Miri's Stacked Borrows model rejects (it passes under Tree Borrows), and
    /// this is the loop the scanner runs anyway.
    pub fn live_slots(&self, site: usize) -> impl Iterator<Item = usize> + '_ {
        assert!(
            site < self.sites(),
            "call site {site} out of range ({} sites)",
            self.sites()
        );
        self.site_words(site)
            .iter()
            .enumerate()
            .flat_map(|(i, &word)| {
                let mut w = word;
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let b = w.trailing_zeros() as usize;
                        w &= w - 1;
                        i * WORD_BITS + b
                    })
                })
            })
    }
}
