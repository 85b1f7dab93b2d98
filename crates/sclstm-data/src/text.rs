//! Reading a data file into text: optional gzip, strict UTF-8 with the failing line reported, and a line
//! iterator that accepts both LF and CRLF endings and skips a UTF-8 byte-order mark at the start.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, DataErrorKind};

/// Reads `path` as UTF-8 text, decompressing it first when it starts with the gzip magic bytes.
///
/// Invalid UTF-8 is reported with the line (and the byte offset within it) of the first bad byte.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let io = |e| DataError::new(path, 0, DataErrorKind::Io(e));
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 3);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    decode_utf8(path, bytes)
}

/// Converts bytes to a `String`, reporting the line and byte of the first invalid UTF-8 sequence.
pub fn decode_utf8(path: &Path, bytes: Vec<u8>) -> Result<String, DataError> {
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let prefix = &e.as_bytes()[..good];
        let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
        let line_start = prefix
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        DataError::new(
            path,
            line,
            DataErrorKind::NotUtf8 {
                byte: good - line_start,
            },
        )
    })
}

/// The UTF-8 byte-order mark (U+FEFF) some editors write at the start of a file.
pub const BOM: char = '\u{feff}';

/// `text` without a leading byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// Iterates over `(1-based line number, line)` with the line terminator (`\n` or `\r\n`) removed.
///
/// A byte-order mark at the start of `text` is not part of the first line ([`strip_bom`]). A final
/// line without a terminator is included; the empty remainder after a final `\n` is not.
pub fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let text = strip_bom(text);
    let body = text.strip_suffix('\n').unwrap_or(text);
    let pieces = if text.is_empty() {
        None
    } else {
        Some(body.split('\n'))
    };
    pieces
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

/// True for a line that separates sentences: empty, or only spaces and tabs.
pub fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b == b' ' || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_lf_give_the_same_lines() {
        let lf: Vec<_> = lines("a b\n\nc d\n").collect();
        let crlf: Vec<_> = lines("a b\r\n\r\nc d\r\n").collect();
        assert_eq!(lf, crlf);
        assert_eq!(lf, vec![(1, "a b"), (2, ""), (3, "c d")]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_not_part_of_the_first_line() {
        let v: Vec<_> = lines("\u{feff}a b\n\u{feff}c\n").collect();
        assert_eq!(
            v,
            vec![(1, "a b"), (2, "\u{feff}c")],
            "only the file's first BOM"
        );
        assert_eq!(lines("\u{feff}").count(), 0);
        assert_eq!(strip_bom("\u{feff}x"), "x");
    }

    #[test]
    fn last_line_without_newline_is_kept() {
        let v: Vec<_> = lines("x\ny").collect();
        assert_eq!(v, vec![(1, "x"), (2, "y")]);
        assert_eq!(lines("").count(), 0);
    }

    #[test]
    fn invalid_utf8_names_line_and_byte() {
        let err = decode_utf8(Path::new("f"), b"ok\nab\xffc\n".to_vec()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(matches!(err.kind, DataErrorKind::NotUtf8 { byte: 2 }));
    }
}
