//! Characters a name must not hide, and how to show untrusted text on a terminal.
//!
//! A username or chat name is shown to other people, so it must look like what it is. It
//! refuses (INVALID_ARGUMENT, in [`super::Command::validate`]) every character that
//! controls a terminal or is not drawn at all:
//! - control characters (Unicode general category Cc: C0, DEL, C1);
//! - format characters (Cf): zero-width space and joiners, bidirectional overrides and
//!   isolates (U+202A..U+202E, U+2066..U+2069), word joiner, the byte order mark, ...;
//! - line and paragraph separators (Zl, Zp);
//! - the rest of Unicode's Default_Ignorable_Code_Point (variation selectors, Hangul fillers,
//!   tags, ...), the blank Braille pattern, and noncharacters.
//!
//! The table is from Unicode 16 (`DerivedCoreProperties.txt`, `DerivedGeneralCategory.txt`);
//! the standard library has no general-category lookup and no crate in the tree provides
//! one. Message content may contain any of these (a message may have line breaks); clients
//! that print it escape it with [`escape_hidden`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// Inclusive ranges of hidden characters, sorted (see the module docs for what they are).
const HIDDEN: &[(u32, u32)] = &[
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFDD0, 0xFDEF),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// Whether `c` controls a terminal or is not drawn (see the module docs).
pub fn is_hidden(c: char) -> bool {
    let c = c as u32;
    // Noncharacters: the last two code points of every plane.
    if c & 0xFFFE == 0xFFFE {
        return true;
    }
    HIDDEN
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The first hidden character of `s` and its byte offset.
pub fn first_hidden(s: &str) -> Option<(usize, char)> {
    s.char_indices().find(|(_, c)| is_hidden(*c))
}

/// `s` with every hidden character escaped (`\n`, `\t`, `\r`, else `\u{202e}`), and
/// backslashes doubled so that an escape in the output is never ambiguous. Borrowed when
/// nothing needs escaping.
pub fn escape_hidden(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_hidden(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_disjoint() {
        for w in HIDDEN.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:x?}");
        }
    }

    #[test]
    fn hides_controls_and_invisibles_but_not_visible_text() {
        let hidden = "\0\n\r\t\x1b\x7f\u{85}\u{9f}\u{ad}\u{200b}\u{200d}\u{200e}\u{2028}\u{2029}\
                      \u{202a}\u{202e}\u{2060}\u{2066}\u{2069}\u{feff}\u{fe0f}\u{3164}\u{e0041}\
                      \u{fffe}\u{1fffe}\u{10ffff}";
        for c in hidden.chars() {
            assert!(is_hidden(c), "{:x}", c as u32);
        }
        for c in "aZ ~éßΩж中ا😀\u{a0}\u{3000}\u{fffd}".chars() {
            assert!(!is_hidden(c), "{:x}", c as u32);
        }
    }

    #[test]
    fn escaping_leaves_no_control_byte() {
        let s = "a\x1b[31mb\nc\u{202e}d\\e\u{7f}";
        let e = escape_hidden(s);
        assert_eq!(e, "a\\u{1b}[31mb\\nc\\u{202e}d\\\\e\\u{7f}");
        assert!(!e.chars().any(is_hidden));
        assert!(matches!(escape_hidden("plain ünïcode"), Cow::Borrowed(_)));
    }
}
