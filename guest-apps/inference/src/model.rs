//! Read-only view of an n-gram model: the built-in static tables (trained by build.rs) or
//! a model trained at runtime (tests).

use crate::train::{self, Trained, EOS};

/// Borrowed n-gram tables (see [`Trained`] for the layout).
#[derive(Debug, Clone, Copy)]
pub struct Tables<'a> {
    pub vocab: &'a [&'a str],
    pub unigram: &'a [u32],
    pub bi_offsets: &'a [u32],
    pub bi_next: &'a [u32],
    pub bi_count: &'a [u32],
    pub tri_keys: &'a [u64],
    pub tri_offsets: &'a [u32],
    pub tri_next: &'a [u32],
    pub tri_count: &'a [u32],
}

/// Successors of a context: parallel slices of token ids (ascending) and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successors<'a> {
    pub next: &'a [u32],
    pub count: &'a [u32],
}

mod builtin_tables {
    include!(concat!(env!("OUT_DIR"), "/model_tables.rs"));
}

/// The model trained from `corpus.txt` at build time.
pub fn builtin() -> Tables<'static> {
    use builtin_tables::*;
    Tables {
        vocab: VOCAB,
        unigram: UNIGRAM,
        bi_offsets: BI_OFFSETS,
        bi_next: BI_NEXT,
        bi_count: BI_COUNT,
        tri_keys: TRI_KEYS,
        tri_offsets: TRI_OFFSETS,
        tri_next: TRI_NEXT,
        tri_count: TRI_COUNT,
    }
}

/// The corpus the built-in model was trained from.
pub const CORPUS: &str = include_str!("../corpus.txt");

/// Holds the `&str` slice a [`Tables`] view of a [`Trained`] model borrows.
pub struct OwnedVocab<'a>(Vec<&'a str>);

impl<'a> OwnedVocab<'a> {
    pub fn new(t: &'a Trained) -> Self {
        Self(t.vocab.iter().map(String::as_str).collect())
    }

    pub fn tables(&'a self, t: &'a Trained) -> Tables<'a> {
        Tables {
            vocab: &self.0,
            unigram: &t.unigram,
            bi_offsets: &t.bi_offsets,
            bi_next: &t.bi_next,
            bi_count: &t.bi_count,
            tri_keys: &t.tri_keys,
            tri_offsets: &t.tri_offsets,
            tri_next: &t.tri_next,
            tri_count: &t.tri_count,
        }
    }
}

impl<'a> Tables<'a> {
    pub fn vocab_size(&self) -> u32 {
        self.vocab.len() as u32
    }

    /// Successors of `prev` under the bigram model (may be empty, e.g. for the final EOS).
    pub fn bigram(&self, prev: u32) -> Successors<'a> {
        let p = prev as usize;
        let (lo, hi) = (self.bi_offsets[p] as usize, self.bi_offsets[p + 1] as usize);
        Successors {
            next: &self.bi_next[lo..hi],
            count: &self.bi_count[lo..hi],
        }
    }

    /// Successors of `(a, b)` under the trigram model, if that context was seen.
    pub fn trigram(&self, a: u32, b: u32) -> Option<Successors<'a>> {
        let key = ((a as u64) << 32) | b as u64;
        let i = self.tri_keys.binary_search(&key).ok()?;
        let (lo, hi) = (
            self.tri_offsets[i] as usize,
            self.tri_offsets[i + 1] as usize,
        );
        Some(Successors {
            next: &self.tri_next[lo..hi],
            count: &self.tri_count[lo..hi],
        })
    }

    /// Text of a token id.
    pub fn token(&self, id: u32) -> Option<&'a str> {
        self.vocab.get(id as usize).copied()
    }

    /// Id of a token text (linear scan; the vocabulary is a few hundred entries).
    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab
            .iter()
            .position(|t| *t == token)
            .map(|i| i as u32)
    }

    /// Text -> token ids, using the training tokenizer. Unknown words are an error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        train::split_words(text)
            .iter()
            .map(|w| {
                self.id(w)
                    .ok_or_else(|| format!("word {w:?} is not in the vocabulary"))
            })
            .collect()
    }

    /// Token ids -> text (EOS renders as a line break; unknown ids as `<?>`).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            if id == EOS {
                out.push('\n');
                continue;
            }
            let t = self.token(id).unwrap_or("<?>");
            let punct = t.len() == 1 && !t.chars().all(char::is_alphanumeric);
            if !out.is_empty() && !out.ends_with('\n') && !punct {
                out.push(' ');
            }
            out.push_str(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_equal_training_the_corpus_now() {
        let trained = train::train(CORPUS);
        let v = OwnedVocab::new(&trained);
        let fresh = v.tables(&trained);
        let b = builtin();
        assert_eq!(fresh.vocab, b.vocab);
        assert_eq!(fresh.unigram, b.unigram);
        assert_eq!(fresh.bi_offsets, b.bi_offsets);
        assert_eq!(fresh.bi_next, b.bi_next);
        assert_eq!(fresh.bi_count, b.bi_count);
        assert_eq!(fresh.tri_keys, b.tri_keys);
        assert_eq!(fresh.tri_offsets, b.tri_offsets);
        assert_eq!(fresh.tri_next, b.tri_next);
        assert_eq!(fresh.tri_count, b.tri_count);
    }

    #[test]
    fn tiny_corpus_counts() {
        let t = train::train("The cat sat. The cat ran!");
        // vocab: <eos>, then by frequency: cat(2) the(2), then . ! ran sat (1 each)
        assert_eq!(t.vocab, ["<eos>", "cat", "the", "!", ".", "ran", "sat"]);
        let v = OwnedVocab::new(&t);
        let m = v.tables(&t);
        let (the, cat, sat, ran) = (2, 1, 6, 5);
        // EOS starts both sentences with "the"
        assert_eq!(
            m.bigram(EOS),
            Successors {
                next: &[the],
                count: &[2]
            }
        );
        // after "cat": sat once, ran once
        assert_eq!(
            m.bigram(cat),
            Successors {
                next: &[ran, sat],
                count: &[1, 1]
            }
        );
        // "." and "!" are followed by EOS
        assert_eq!(m.bigram(4).next, &[EOS]);
        assert_eq!(m.bigram(3).next, &[EOS]);
        // the final EOS has no successor
        assert_eq!(m.unigram[EOS as usize], 3);
        assert_eq!(
            m.trigram(the, cat).unwrap(),
            Successors {
                next: &[ran, sat],
                count: &[1, 1]
            }
        );
        assert_eq!(m.trigram(cat, the), None);
        assert_eq!(m.trigram(EOS, the).unwrap().next, &[cat]);
        let _ = (sat, ran);
    }

    #[test]
    fn tokenizer_lowercases_and_splits_punctuation() {
        assert_eq!(
            train::split_words("Hello, World! It's key-value (v2)."),
            ["hello", ",", "world", "!", "it's", "key-value", "v2", "."]
        );
        assert!(train::split_words("  \n\t").is_empty());
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = builtin();
        let ids = m.encode("The model reads a list of tokens.").unwrap();
        assert_eq!(ids.len(), 8);
        assert_eq!(m.decode(&ids), "the model reads a list of tokens.");
        assert!(m.encode("the flux capacitor").unwrap_err().contains("flux"));
        assert_eq!(m.token(EOS), Some("<eos>"));
        assert_eq!(m.token(m.vocab_size()), None);
    }

    #[test]
    fn builtin_model_is_nontrivial() {
        let m = builtin();
        assert!(m.vocab_size() > 150, "vocab {}", m.vocab_size());
        assert_eq!(m.bi_offsets.len(), m.vocab.len() + 1);
        assert_eq!(*m.tri_offsets.last().unwrap() as usize, m.tri_next.len());
        assert!(
            m.tri_keys.windows(2).all(|w| w[0] < w[1]),
            "trigram keys sorted"
        );
        // every token that is not the last EOS has at least one successor
        let without_successor = (0..m.vocab_size())
            .filter(|&t| m.bigram(t).next.is_empty())
            .count();
        assert_eq!(without_successor, 0);
    }
}
