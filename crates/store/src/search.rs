//! What goes into the message search index and how a query is matched against it, shared by
//! every backend so that Chinese and English behave the same everywhere.
//!
//! Word-based tokenizers find English words but not Chinese ones: Chinese is written without
//! spaces, so "我们的通讯软件" would be one token and a search for 通讯 would miss it. Instead of a
//! dictionary segmenter (large, and wrong on names and new words), each run of CJK characters is
//! indexed as its single characters and its overlapping pairs: 通讯软件 becomes 通 讯 软 件 通讯
//! 讯软 软件. Any one- or two-character query is then an exact token, and a longer one is the AND
//! of its pairs, confirmed against the text afterwards because pairs may match apart. Other text
//! is left to the backend's word tokenizer, which lowercases and strips diacritics.

/// Whether `c` belongs to a script written without spaces between words (Han, kana, Hangul).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // CJK Extensions B and later
}

/// Splits text into runs that are all CJK or all not.
fn runs(text: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let cjk = is_cjk(first);
        let end = rest
            .char_indices()
            .find(|(_, c)| is_cjk(*c) != cjk)
            .map_or(rest.len(), |(i, _)| i);
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some((cjk, run))
    })
}

/// The text to index for a message: words as they are, CJK runs as characters and pairs.
pub fn index_terms(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for (cjk, run) in runs(text) {
        if !cjk {
            out.push_str(run);
            out.push(' ');
            continue;
        }
        let chars: Vec<char> = run.chars().collect();
        for c in &chars {
            out.push(*c);
            out.push(' ');
        }
        for pair in chars.windows(2) {
            out.push(pair[0]);
            out.push(pair[1]);
            out.push(' ');
        }
    }
    out
}

/// A parsed search query: the terms every hit must contain, in the FTS5 query language, and
/// the CJK runs longer than a pair that hits must contain contiguously.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedQuery {
    pub fts: String,
    pub cjk_phrases: Vec<String>,
}

/// The longest query, in characters, and the most terms it may produce.
pub const MAX_QUERY_CHARS: usize = 100;
const MAX_TERMS: usize = 32;

/// Parses a user's query; `None` when it has nothing to search for (only punctuation, say).
/// Words match as prefixes, so "hel" finds "Hello".
pub fn parse_query(query: &str) -> Option<ParsedQuery> {
    let mut terms: Vec<String> = Vec::new();
    let mut cjk_phrases = Vec::new();
    for (cjk, run) in runs(query) {
        if cjk {
            let chars: Vec<char> = run.chars().collect();
            if chars.len() == 1 {
                terms.push(format!("\"{run}\""));
            } else {
                for pair in chars.windows(2) {
                    terms.push(format!("\"{}{}\"", pair[0], pair[1]));
                }
                if chars.len() > 2 {
                    cjk_phrases.push(run.to_owned());
                }
            }
        } else {
            for word in run
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                // Quoting makes every word a literal (no FTS5 operators from user input); the
                // words contain no quotes since they are alphanumeric.
                terms.push(format!("\"{}\"*", word.to_lowercase()));
            }
        }
    }
    terms.dedup();
    if terms.is_empty() {
        return None;
    }
    terms.truncate(MAX_TERMS);
    Some(ParsedQuery {
        fts: terms.join(" "),
        cjk_phrases,
    })
}

impl ParsedQuery {
    /// Whether a candidate hit's text really contains the query's longer CJK runs.
    pub fn confirms(&self, text: &str) -> bool {
        self.cjk_phrases.iter().all(|phrase| text.contains(phrase))
    }
}

/// Folds a word the way SQLite's `unicode61 remove_diacritics 2` tokenizer does: lowercase,
/// with combining marks removed after canonical decomposition ("Café" becomes "cafe").
pub fn fold_word(word: &str) -> String {
    let nfd = icu_normalizer::DecomposingNormalizerBorrowed::new_nfd();
    nfd.normalize_iter(word.chars())
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The combining diacritical mark blocks (the marks decomposition splits off Latin, Greek and
/// Cyrillic letters).
fn is_combining_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// The lexemes of a message for backends without a tokenizer of their own (PostgreSQL stores
/// them as a `tsvector`): words split at anything not alphanumeric and folded with
/// [`fold_word`]; CJK runs as characters and pairs, as in [`index_terms`]. Deduplicated.
pub fn lexemes(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (cjk, run) in runs(text) {
        if cjk {
            let chars: Vec<char> = run.chars().collect();
            out.extend(chars.iter().map(|c| c.to_string()));
            out.extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
        } else {
            out.extend(
                run.split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(fold_word),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One term of a [`ParsedQuery`], for backends that match lexemes themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryTerm {
    /// Folded like [`lexemes`] folds the text.
    pub lexeme: String,
    /// Matches any lexeme that starts with it (words), or only itself (CJK).
    pub prefix: bool,
}

impl ParsedQuery {
    /// The terms of the query, each of which a hit must contain. They are read back from the
    /// FTS5 form, which quotes every term, so this stays in step with [`parse_query`].
    pub fn terms(&self) -> Vec<QueryTerm> {
        self.fts
            .split(' ')
            .filter_map(|term| {
                let (quoted, prefix) = match term.strip_suffix('*') {
                    Some(quoted) => (quoted, true),
                    None => (term, false),
                };
                let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
                let lexeme = if prefix {
                    fold_word(inner)
                } else {
                    inner.to_owned()
                };
                (!lexeme.is_empty()).then_some(QueryTerm { lexeme, prefix })
            })
            .collect()
    }

    /// The query as a PostgreSQL `tsquery` literal (cast with `::tsquery`, which parses the
    /// syntax without normalizing the lexemes): every term quoted, words with `:*`, ANDed.
    pub fn tsquery(&self) -> String {
        self.terms()
            .iter()
            .map(|term| {
                let quoted = term.lexeme.replace('\\', "\\\\").replace('\'', "''");
                if term.prefix {
                    format!("'{quoted}':*")
                } else {
                    format!("'{quoted}'")
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_runs_become_characters_and_pairs() {
        assert_eq!(
            index_terms("Hi 通讯软件!"),
            "Hi  通 讯 软 件 通讯 讯软 软件 ! "
        );
        assert_eq!(index_terms("你好"), "你 好 你好 ");
        assert_eq!(index_terms(""), "");
    }

    #[test]
    fn queries_are_literal_and_prefixed() {
        let q = parse_query("Hello, WORLD").unwrap();
        assert_eq!(q.fts, "\"hello\"* \"world\"*");
        assert!(q.cjk_phrases.is_empty());
        let q = parse_query("你好").unwrap();
        assert_eq!(q.fts, "\"你好\"");
        let q = parse_query("通讯软件").unwrap();
        assert_eq!(q.fts, "\"通讯\" \"讯软\" \"软件\"");
        assert!(q.confirms("我们的通讯软件很好"));
        assert!(!q.confirms("通讯 软件"), "pairs apart do not confirm");
        // FTS5 operators in user input stay words.
        let q = parse_query("a OR b NEAR(\"x\")").unwrap();
        assert_eq!(q.fts, "\"a\"* \"or\"* \"b\"* \"near\"* \"x\"*");
        assert_eq!(parse_query("!!! ..."), None);
        assert_eq!(parse_query("通").unwrap().fts, "\"通\"");
    }

    #[test]
    fn lexemes_fold_words_and_expand_cjk() {
        assert_eq!(
            lexemes("Café NOON, 通讯软件!"),
            vec![
                "cafe", "noon", "件", "讯", "讯软", "软", "软件", "通", "通讯"
            ]
        );
        let q = parse_query("MEETING café 通讯软件").unwrap();
        assert_eq!(
            q.tsquery(),
            "'meeting':* & 'cafe':* & '通讯' & '讯软' & '软件'"
        );
        assert_eq!(parse_query("通").unwrap().tsquery(), "'通'");
    }
}
