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
}
