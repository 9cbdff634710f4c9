//! Deterministic pseudo-random numbers and text for the benchmark images.
//!
//! The text is made of lines of words drawn from a generated vocabulary with a Zipf-like (log-uniform
//! rank) distribution, some indentation, numbers and punctuation: it compresses about 3–4× with gzip,
//! like source code or documentation, unlike a repeated byte (which would make decompression look free).

/// A xorshift64* generator: fast, deterministic, good enough for file contents and sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        let mut rng = Rng((seed ^ 0x5851_F42D_4C95_7F2D).max(1));
        for _ in 0..4 {
            rng.next();
        }
        rng
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number between `lo` and `hi` with a log-uniform distribution (many small, few large).
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

const SYLLABLES: &[&str] = &[
    "ab", "ac", "al", "an", "ar", "as", "at", "be", "ca", "ce", "co", "de", "di", "do", "el", "en", "er", "es", "fi",
    "ga", "ge", "in", "io", "is", "it", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "no", "nt", "on",
    "or", "pa", "pe", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "st", "ta", "te", "th", "ti", "to", "tr",
    "un", "ur", "us", "ve", "vi",
];

/// Words in the vocabulary.
const VOCABULARY: usize = 1024;

const PUNCT: &[&str] = &[", ", ". ", "; ", " = ", "(", ") ", " -> ", ": ", " {", "}"];

/// A vocabulary and a generator of text lines over it.
pub struct TextGen {
    words: Vec<String>,
    rng: Rng,
}

impl TextGen {
    /// A generator whose vocabulary and lines depend only on `seed`.
    pub fn new(seed: u64) -> TextGen {
        // The vocabulary is the same for every seed (files of one "project" share words); only lines differ.
        let mut vocab_rng = Rng::new(0xC0FFEE);
        let words = (0..VOCABULARY)
            .map(|_| {
                let n = 1 + vocab_rng.below(4) as usize;
                (0..n)
                    .map(|_| SYLLABLES[vocab_rng.below(SYLLABLES.len() as u64) as usize])
                    .collect()
            })
            .collect();
        TextGen {
            words,
            rng: Rng::new(seed),
        }
    }

    /// Appends about `len` bytes of text lines to `out` (exactly `len`: the last line is cut).
    pub fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        while out.len() < end {
            self.line(out);
        }
        out.truncate(end);
    }

    /// `len` bytes of text.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 256);
        self.fill(&mut out, len);
        out
    }

    fn line(&mut self, out: &mut Vec<u8>) {
        let indent = [0, 0, 4, 4, 8, 12][self.rng.below(6) as usize];
        out.extend(std::iter::repeat_n(b' ', indent));
        let n = 3 + self.rng.below(10);
        for i in 0..n {
            if i > 0 {
                match self.rng.below(10) {
                    0 => out.extend_from_slice(PUNCT[self.rng.below(PUNCT.len() as u64) as usize].as_bytes()),
                    _ => out.push(b' '),
                }
            }
            match self.rng.below(40) {
                0 => out.extend_from_slice(self.rng.below(1000).to_string().as_bytes()),
                _ => {
                    // Log-uniform rank: word k is drawn with probability ~ 1/k (Zipf).
                    let rank = self.rng.log_uniform(1.0, self.words.len() as f64) as usize - 1;
                    out.extend_from_slice(self.words[rank.min(self.words.len() - 1)].as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
}
