//! Splitting raw text into sentences and tokens the way the shipped corpora are tokenized
//! (Penn Treebank / CoNLL conventions), for `sclstm predict --format text`.
//!
//! The rules are deliberately simple and predictable.
//!
//! # Sentences
//! 1. Every non-blank input line holds one or more sentences; a sentence never spans lines.
//! 2. Inside a line, a sentence ends after a word ending in `.`, `!` or `?` (possibly followed
//!    by closing `"` `'` `)` `]` `}`) when the next word starts with an uppercase letter
//!    (possibly after opening `"` `'` `(` `[` `{`).
//! 3. A word ending in an abbreviation's period (see below) does not end a sentence, so
//!    `the U.S. Army` and `Mr. Smith` stay in one sentence (and so, as a known limitation,
//!    does `in the U.S. He`).
//!
//! # Tokens
//! Words are split at whitespace. The typographic quotes `‘ ’` and `“ ”` are first read as
//! `'` and `"`, as the corpora are ASCII. Each word then gives, in order:
//! 1. **Leading punctuation**: each of `( ) [ ] { } " ' , ; : ! ? . $` at the start of the
//!    word is a token of its own, and `...` is one token. A `.` before a digit (`.5`) stays,
//!    as does a `'` before a digit (`'90s`) or starting a clitic (`'s` written apart).
//! 2. **Trailing punctuation**: each of `( ) [ ] { } " ' , ; : ! ? . %` at the end of the word
//!    is a token of its own, and `...` is one token, except that an abbreviation keeps its
//!    final period. Abbreviations are the titles, company suffixes and month names in
//!    [`ABBREVIATIONS`] (`Mr.`, `Inc.`, `Jan.`, `etc.`, case-sensitive) and dotted
//!    initialisms, single letters each followed by a period (`U.S.`, `a.m.`, `J.`). An
//!    abbreviation ending the last word of a sentence is followed by an extra `.` token, as
//!    the corpora write a sentence-final `U.S.` as `U.S. .`.
//! 3. **Clitics**: `n't` and `'s 're 've 'll 'd 'm` (any case) at the end of what remains
//!    become tokens of their own: `doesn't` → `does n't`, `can't` → `ca n't`, `won't` →
//!    `wo n't`, `John's` → `John 's`, `they're` → `they 're`.
//! 4. Everything else stays whole: hyphenated words (`state-of-the-art`), numbers with inner
//!    periods or commas (`3.14`, `1,000`), inner punctuation (`U.S.-based`, `AT&T`), and `--`.

/// Punctuation split off the start of a word.
const LEADING: &[u8] = b"()[]{}\"',;:!?.$";
/// Punctuation split off the end of a word.
const TRAILING: &[u8] = b"()[]{}\"',;:!?.%";
/// Characters that may follow a sentence-final `.`, `!` or `?` in the same word.
const CLOSERS: &[char] = &['"', '\'', ')', ']', '}'];
/// Characters that may precede the uppercase letter opening a sentence.
const OPENERS: &[char] = &['"', '\'', '(', '[', '{'];
/// Clitics written after an apostrophe.
const APOSTROPHE_CLITICS: [&str; 6] = ["'s", "'re", "'ve", "'ll", "'d", "'m"];
/// The negation clitic.
const NEGATION: &str = "n't";
/// Ellipsis, kept as one token.
const ELLIPSIS: &str = "...";

/// Words (without their final period) whose period is part of the word.
pub const ABBREVIATIONS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "Ft", "Gen", "Gov", "Sen", "Rep",
    "Rev", "Col", "Lt", "Capt", "Sgt", "Inc", "Corp", "Co", "Ltd", "Bros", "Jan", "Feb", "Mar",
    "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "vs", "etc",
];

/// Splits `text` into sentences of tokens following the rules in the module documentation.
/// Blank lines give no sentence; the result is empty for blank input.
pub fn tokenize(text: &str) -> Vec<Vec<String>> {
    let mut sentences = Vec::new();
    for line in text.lines() {
        let line: String = line
            .chars()
            .map(|c| match c {
                '\u{2018}' | '\u{2019}' => '\'',
                '\u{201C}' | '\u{201D}' => '"',
                c => c,
            })
            .collect();
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut start = 0;
        for i in 0..words.len() {
            let last = i + 1 == words.len();
            if last || ends_sentence(words[i], words[i + 1]) {
                let mut tokens = Vec::new();
                for (j, word) in words.iter().enumerate().take(i + 1).skip(start) {
                    split_word(word, j == i, &mut tokens);
                }
                sentences.push(tokens);
                start = i + 1;
            }
        }
    }
    sentences
}

/// Whether a sentence ends after `word` when `next` follows it on the same line.
fn ends_sentence(word: &str, next: &str) -> bool {
    let core = word.trim_end_matches(CLOSERS).trim_start_matches(OPENERS);
    let ends_with_stop = match core.chars().next_back() {
        Some('!' | '?') => true,
        Some('.') => !is_abbreviation(core),
        _ => false,
    };
    ends_with_stop
        && next
            .trim_start_matches(OPENERS)
            .chars()
            .next()
            .is_some_and(char::is_uppercase)
}

/// Whether `word` (ending in `.`) is an abbreviation whose period belongs to it.
fn is_abbreviation(word: &str) -> bool {
    let Some(body) = word.strip_suffix('.') else {
        return false;
    };
    ABBREVIATIONS.contains(&body) || is_initialism(word)
}

/// Whether `word` is one or more letters each followed by a period (`U.S.`, `a.m.`, `J.`).
fn is_initialism(word: &str) -> bool {
    let mut chars = word.chars();
    let mut letters = 0;
    loop {
        match (chars.next(), chars.next()) {
            (None, _) => return letters > 0,
            (Some(c), Some('.')) if c.is_alphabetic() => letters += 1,
            _ => return false,
        }
    }
}

/// Whether `word` ends with the ASCII `suffix`, ignoring ASCII case.
fn ends_with_ignore_case(word: &str, suffix: &str) -> bool {
    word.len() >= suffix.len()
        && word.as_bytes()[word.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether `rest` (the text after a leading apostrophe) is a clitic such as `s` or `re`,
/// alone or followed by something other than a letter or digit.
fn starts_with_clitic(rest: &str) -> bool {
    APOSTROPHE_CLITICS.iter().any(|clitic| {
        let body = &clitic[1..];
        rest.len() >= body.len()
            && rest.as_bytes()[..body.len()].eq_ignore_ascii_case(body.as_bytes())
            // The matched bytes are ASCII, so `body.len()` is a character boundary.
            && rest[body.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric())
    })
}

/// Length in bytes of a clitic ending `word`, if one can be split off: `n't` after a
/// letter, an apostrophe clitic after a letter or digit.
fn clitic_len(word: &str) -> Option<usize> {
    let splits = |clitic: &str, before: fn(char) -> bool| {
        word.len() > clitic.len()
            && ends_with_ignore_case(word, clitic)
            // The matched bytes are ASCII, so the cut is a character boundary.
            && word[..word.len() - clitic.len()].chars().next_back().is_some_and(before)
    };
    if splits(NEGATION, char::is_alphabetic) {
        return Some(NEGATION.len());
    }
    APOSTROPHE_CLITICS
        .iter()
        .find(|c| splits(c, char::is_alphanumeric))
        .map(|c| c.len())
}

/// Appends the tokens of one whitespace-delimited word to `out`. `sentence_final` marks the
/// last word of a sentence (where an abbreviation gets an extra `.`).
fn split_word(word: &str, sentence_final: bool, out: &mut Vec<String>) {
    // Punctuation bytes are ASCII, so slicing one byte off either end keeps valid UTF-8.
    let mut rest = word;
    loop {
        if let Some(after) = rest.strip_prefix(ELLIPSIS) {
            out.push(ELLIPSIS.to_string());
            rest = after;
            continue;
        }
        let Some(&b) = rest.as_bytes().first() else {
            break;
        };
        if !LEADING.contains(&b) {
            break;
        }
        let next = rest[1..].chars().next();
        let keeps = match b {
            b'.' => next.is_some_and(|c| c.is_ascii_digit()),
            b'\'' => next.is_some_and(|c| c.is_ascii_digit()) || starts_with_clitic(&rest[1..]),
            _ => false,
        };
        if keeps {
            break;
        }
        out.push(char::from(b).to_string());
        rest = &rest[1..];
    }

    // Trailing tokens, collected from the right.
    let mut trailing: Vec<&str> = Vec::new();
    loop {
        if let Some(before) = rest.strip_suffix(ELLIPSIS) {
            trailing.push(ELLIPSIS);
            rest = before;
            continue;
        }
        let Some(&b) = rest.as_bytes().last() else {
            break;
        };
        if !TRAILING.contains(&b) {
            break;
        }
        if b == b'.' && is_abbreviation(rest) {
            if sentence_final && trailing.is_empty() {
                trailing.push(".");
            }
            break;
        }
        trailing.push(&rest[rest.len() - 1..]);
        rest = &rest[..rest.len() - 1];
    }

    let mut clitics: Vec<&str> = Vec::new();
    while let Some(n) = clitic_len(rest) {
        clitics.push(&rest[rest.len() - n..]);
        rest = &rest[..rest.len() - n];
    }

    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out.extend(clitics.iter().rev().map(|t| t.to_string()));
    out.extend(trailing.iter().rev().map(|t| t.to_string()));
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    /// Tokenizes `text` and compares with sentences written as space-separated tokens.
    fn check(text: &str, expected: &[&str]) {
        let got = tokenize(text);
        let expected: Vec<Vec<String>> = expected
            .iter()
            .map(|s| s.split(' ').map(str::to_string).collect())
            .collect();
        assert_eq!(got, expected, "input: {text:?}");
    }

    #[test]
    fn clitics_brackets_and_titles() {
        check(
            "Mr. Smith doesn't like (New York) prices, he said.",
            &["Mr. Smith does n't like ( New York ) prices , he said ."],
        );
    }

    #[test]
    fn sentence_ends_before_uppercase_word() {
        check(
            "I can't go. She won't either! Why? Because.",
            &["I ca n't go .", "She wo n't either !", "Why ?", "Because ."],
        );
    }

    #[test]
    fn no_sentence_end_before_lowercase_or_digit() {
        check(
            "Wait. then go. 3.5 is fine.",
            &["Wait . then go . 3.5 is fine ."],
        );
    }

    #[test]
    fn numbers_stay_whole_and_symbols_split() {
        check(
            "It rose 3.14 to 1,000.5, or $2,500 (12%) and .5 more.",
            &["It rose 3.14 to 1,000.5 , or $ 2,500 ( 12 % ) and .5 more ."],
        );
    }

    #[test]
    fn abbreviations_keep_their_period_and_do_not_end_sentences() {
        check(
            "The U.S. Army and Mr. Brown met at 5 p.m. Monday, J. R. R. Tolkien too.",
            &["The U.S. Army and Mr. Brown met at 5 p.m. Monday , J. R. R. Tolkien too ."],
        );
    }

    #[test]
    fn sentence_final_abbreviation_gets_an_extra_period() {
        check("He moved to the U.S.", &["He moved to the U.S. ."]);
        check(
            "Apples, pears, etc. are sold by Acme Inc.",
            &["Apples , pears , etc. are sold by Acme Inc. ."],
        );
    }

    #[test]
    fn abbreviation_followed_by_punctuation() {
        check(
            "Acme Corp., Widget Co.) and U.S.-based firms.",
            &["Acme Corp. , Widget Co. ) and U.S.-based firms ."],
        );
    }

    #[test]
    fn quotes_around_sentences() {
        check(
            "\"Stop,\" she said. \"We're late.\" Then they left.",
            &[
                "\" Stop , \" she said .",
                "\" We 're late . \"",
                "Then they left .",
            ],
        );
    }

    #[test]
    fn all_clitics_and_possessives() {
        check(
            "They're sure it'll work; I'd say we've won, I'm told: John's players' cards.",
            &[
                "They 're sure it 'll work ; I 'd say we 've won , I 'm told : John 's players ' cards .",
            ],
        );
        check(
            "DON'T shouldn't've the 1990's",
            &["DO N'T should n't 've the 1990 's"],
        );
    }

    #[test]
    fn apostrophe_before_digit_or_clitic_stays() {
        check("the '90s and 's alone", &["the '90s and 's alone"]);
        check("'quoted'", &["' quoted '"]);
    }

    #[test]
    fn hyphens_dashes_and_inner_punctuation_stay() {
        check(
            "state-of-the-art e-mail -- AT&T http://x.org/a?b=1 well",
            &["state-of-the-art e-mail -- AT&T http://x.org/a?b=1 well"],
        );
    }

    #[test]
    fn ellipsis_is_one_token() {
        check("Well... I think so...", &["Well ...", "I think so ..."]);
        check("...and then", &["... and then"]);
    }

    #[test]
    fn repeated_trailing_punctuation() {
        check("Really?! [sic]", &["Really ? ! [ sic ]"]);
    }

    #[test]
    fn one_sentence_per_line_and_blank_lines_skipped() {
        check(
            "First line\n\n   \nsecond line without period\r\nthird: a; b\n",
            &["First line", "second line without period", "third : a ; b"],
        );
        assert!(tokenize("").is_empty());
        assert!(tokenize(" \n\t\n").is_empty());
    }

    #[test]
    fn typographic_quotes_are_read_as_ascii() {
        check("It\u{2019}s \u{201C}fine\u{201D}", &["It 's \" fine \""]);
    }

    #[test]
    fn non_ascii_words() {
        check(
            "Müller's café, naïve résumé.",
            &["Müller 's café , naïve résumé ."],
        );
        check("Élan. Über alles", &["Élan .", "Über alles"]);
    }
}
