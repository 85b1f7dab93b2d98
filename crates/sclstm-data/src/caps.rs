//! The paper's 8 capitalization features.
//!
//! "Digit" means an ASCII digit `0-9`; "letter" means a char with `char::is_alphabetic`; a letter is
//! upper/lower case by `char::is_uppercase` / `char::is_lowercase`. The first rule that matches wins:
//!
//! | id | feature | rule | examples |
//! |---|---|---|---|
//! | 5 | all digit | every char is a digit | `1996`, `0` |
//! | 4 | has digit | at least one digit (and not all digits) | `1996-97`, `3.5`, `A4`, `2nd` |
//! | 0 | all lower | ≥ 1 letter, every cased letter lower case, no upper case | `the`, `e-mail`, `don't` |
//! | 1 | all upper | ≥ 1 letter, every cased letter upper case, no lower case, ≥ 1 upper | `EU`, `U.S.`, `I` |
//! | 2 | initial upper | first letter upper case, all later letters lower case | `Peter`, `O'neil` |
//! | 3 | mixed case | upper and lower case letters otherwise | `iPhone`, `McDonald`, `O'Neil` |
//! | 6 | punctuation only | no letter, no digit, every char neither alphanumeric nor whitespace | `,`, `--`, `$`, `(` |
//! | 7 | other | anything else: letters without case (`中文`), non-ASCII numerals (`½`), whitespace, empty | |
//!
//! "All lower" needs at least one lower-case letter and "all upper" at least one upper-case letter, so a
//! word whose letters are all uncased falls through to "other". The ids are the `u32` values fed to the
//! capitalization embedding; padding positions carry 0 and are masked.

/// One of the 8 capitalization classes (see the module docs for the precise rules and precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapFeature {
    /// Every letter lower case.
    AllLower = 0,
    /// Every letter upper case.
    AllUpper = 1,
    /// First letter upper case, the rest lower case.
    InitialUpper = 2,
    /// Upper and lower case letters in any other arrangement.
    MixedCase = 3,
    /// Some digit, but not only digits.
    HasDigit = 4,
    /// Only digits.
    AllDigit = 5,
    /// Only punctuation and symbols.
    PunctOnly = 6,
    /// Anything else.
    Other = 7,
}

/// Number of capitalization classes.
pub const NUM_CAP_FEATURES: usize = 8;

impl CapFeature {
    /// Classifies a word.
    pub fn of(word: &str) -> Self {
        let digits = word.chars().filter(char::is_ascii_digit).count();
        let n = word.chars().count();
        if n > 0 && digits == n {
            return Self::AllDigit;
        }
        if digits > 0 {
            return Self::HasDigit;
        }
        let letters: Vec<char> = word.chars().filter(|c| c.is_alphabetic()).collect();
        let upper = letters.iter().filter(|c| c.is_uppercase()).count();
        let lower = letters.iter().filter(|c| c.is_lowercase()).count();
        if !letters.is_empty() {
            if lower > 0 && upper == 0 {
                return Self::AllLower;
            }
            if upper > 0 && lower == 0 {
                return Self::AllUpper;
            }
            if upper > 0 && lower > 0 {
                let first_upper = letters[0].is_uppercase();
                let rest_lower = letters[1..].iter().all(|c| !c.is_uppercase());
                return if first_upper && rest_lower {
                    Self::InitialUpper
                } else {
                    Self::MixedCase
                };
            }
            return Self::Other;
        }
        if n > 0
            && word
                .chars()
                .all(|c| !c.is_alphanumeric() && !c.is_whitespace())
        {
            return Self::PunctOnly;
        }
        Self::Other
    }

    /// The feature's id (0..8).
    pub fn id(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::CapFeature::{self, *};

    #[test]
    fn classes_follow_the_documented_precedence() {
        let cases = [
            ("the", AllLower),
            ("e-mail", AllLower),
            ("don't", AllLower),
            ("EU", AllUpper),
            ("U.S.", AllUpper),
            ("I", AllUpper),
            ("Peter", InitialUpper),
            ("O'neil", InitialUpper),
            ("Élodie", InitialUpper),
            ("iPhone", MixedCase),
            ("McDonald", MixedCase),
            ("O'Neil", MixedCase),
            ("1996", AllDigit),
            ("1996-97", HasDigit),
            ("3.5", HasDigit),
            ("A4", HasDigit),
            ("2nd", HasDigit),
            (",", PunctOnly),
            ("--", PunctOnly),
            ("$", PunctOnly),
            ("中文", Other),
            ("½", Other),
            ("", Other),
        ];
        for (w, want) in cases {
            assert_eq!(CapFeature::of(w), want, "word {w:?}");
        }
    }

    #[test]
    fn ids_are_distinct_and_dense() {
        let all = [
            AllLower,
            AllUpper,
            InitialUpper,
            MixedCase,
            HasDigit,
            AllDigit,
            PunctOnly,
            Other,
        ];
        let mut ids: Vec<u32> = all.iter().map(|c| c.id()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..super::NUM_CAP_FEATURES as u32).collect::<Vec<_>>());
    }
}
