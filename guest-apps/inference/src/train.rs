//! Tokenizer and n-gram training. Self-contained (std only, no `crate::` paths) because
//! `build.rs` includes this same file to train the built-in model from `corpus.txt` at
//! build time; the library uses it for `encode`/`decode` and tests re-train at test time
//! to check the generated tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Token id 0: end of sentence. Emitted by the training data after `.`, `!` and `?`.
pub const EOS: u32 = 0;
/// The text form of [`EOS`].
pub const EOS_TEXT: &str = "<eos>";

/// Punctuation kept as tokens of their own.
const PUNCT: &[char] = &['.', ',', '!', '?', ';', ':'];
/// Punctuation that ends a sentence (followed by [`EOS`] in the training data).
const TERMINATORS: &[&str] = &[".", "!", "?"];

/// True for tokens after which a sentence ends.
pub fn is_terminator(token: &str) -> bool {
    TERMINATORS.contains(&token)
}

/// Splits text into lowercase words and punctuation tokens. Anything else (whitespace,
/// quotes, brackets, ...) separates tokens and is dropped.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || ((ch == '\'' || ch == '-') && !word.is_empty()) {
            word.extend(ch.to_lowercase());
        } else {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if PUNCT.contains(&ch) {
                out.push(ch.to_string());
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A trained n-gram model, owned. Successor lists are stored CSR-style (`*_offsets[i] ..
/// *_offsets[i + 1]` index into `*_next`/`*_count`), each list sorted by token id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trained {
    /// Token text by id; id 0 is [`EOS_TEXT`], then by descending frequency, ties by text.
    pub vocab: Vec<String>,
    /// Occurrences of each token in the corpus.
    pub unigram: Vec<u32>,
    /// Bigram successor lists, one per token id (`vocab.len() + 1` offsets).
    pub bi_offsets: Vec<u32>,
    pub bi_next: Vec<u32>,
    pub bi_count: Vec<u32>,
    /// Trigram contexts `(a << 32) | b`, sorted, with their successor lists.
    pub tri_keys: Vec<u64>,
    pub tri_offsets: Vec<u32>,
    pub tri_next: Vec<u32>,
    pub tri_count: Vec<u32>,
}

/// Trains bigram and trigram counts over `corpus`. The token stream starts with [`EOS`] and
/// has [`EOS`] after every sentence terminator, so `EOS -> w` counts are sentence starts.
pub fn train(corpus: &str) -> Trained {
    let words = split_words(corpus);

    // Vocabulary: EOS first, then by descending frequency, ties alphabetical (deterministic).
    let mut freq: BTreeMap<&str, u32> = BTreeMap::new();
    for w in &words {
        *freq.entry(w.as_str()).or_default() += 1;
    }
    let mut by_freq: Vec<(&str, u32)> = freq.into_iter().collect();
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut vocab = vec![EOS_TEXT.to_string()];
    vocab.extend(by_freq.iter().map(|(w, _)| w.to_string()));
    let id_of: BTreeMap<&str, u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect();

    let mut stream = vec![EOS];
    for w in &words {
        stream.push(id_of[w.as_str()]);
        if is_terminator(w) {
            stream.push(EOS);
        }
    }
    if stream.last() != Some(&EOS) {
        stream.push(EOS);
    }

    let mut unigram = vec![0u32; vocab.len()];
    for &t in &stream {
        unigram[t as usize] += 1;
    }
    let mut bigrams: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for w in stream.windows(2) {
        *bigrams.entry((w[0], w[1])).or_default() += 1;
    }
    let mut trigrams: BTreeMap<(u32, u32, u32), u32> = BTreeMap::new();
    for w in stream.windows(3) {
        *trigrams.entry((w[0], w[1], w[2])).or_default() += 1;
    }

    let mut bi_offsets = Vec::with_capacity(vocab.len() + 1);
    let (mut bi_next, mut bi_count) = (Vec::new(), Vec::new());
    let mut iter = bigrams.iter().peekable();
    for prev in 0..vocab.len() as u32 {
        bi_offsets.push(bi_next.len() as u32);
        while let Some(((p, n), c)) = iter.peek() {
            if *p != prev {
                break;
            }
            bi_next.push(*n);
            bi_count.push(**c);
            iter.next();
        }
    }
    bi_offsets.push(bi_next.len() as u32);

    let (mut tri_keys, mut tri_offsets) = (Vec::new(), Vec::new());
    let (mut tri_next, mut tri_count) = (Vec::new(), Vec::new());
    for (&(a, b, n), &c) in &trigrams {
        let key = ((a as u64) << 32) | b as u64;
        if tri_keys.last() != Some(&key) {
            tri_keys.push(key);
            tri_offsets.push(tri_next.len() as u32);
        }
        tri_next.push(n);
        tri_count.push(c);
    }
    tri_offsets.push(tri_next.len() as u32);

    Trained {
        vocab,
        unigram,
        bi_offsets,
        bi_next,
        bi_count,
        tri_keys,
        tri_offsets,
        tri_next,
        tri_count,
    }
}

impl Trained {
    /// Rust source for static tables holding this model (written to OUT_DIR by build.rs).
    pub fn render_rust(&self) -> String {
        let mut s = String::from("// @generated by build.rs from corpus.txt; do not edit.\n");
        let _ = writeln!(s, "pub static VOCAB: &[&str] = &{:?};", self.vocab);
        for (name, v) in [
            ("UNIGRAM", &self.unigram),
            ("BI_OFFSETS", &self.bi_offsets),
            ("BI_NEXT", &self.bi_next),
            ("BI_COUNT", &self.bi_count),
            ("TRI_OFFSETS", &self.tri_offsets),
            ("TRI_NEXT", &self.tri_next),
            ("TRI_COUNT", &self.tri_count),
        ] {
            let _ = writeln!(s, "pub static {name}: &[u32] = &{v:?};");
        }
        let _ = writeln!(s, "pub static TRI_KEYS: &[u64] = &{:?};", self.tri_keys);
        s
    }
}
