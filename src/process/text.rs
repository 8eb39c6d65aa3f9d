//! Child output as a log line: terminal escapes removed.
//!
//! A child under a pseudo-terminal colours its output and redraws progress lines with `\r`
//! (abra's charm log prints `FATA` in colour). Logs, the error tail and the `FATA` search want
//! the text a person would have read on the terminal; captured output stays byte-exact.

use std::borrow::Cow;

/// The line without ANSI escape sequences (CSI, OSC and two-byte escapes) and other control
/// characters; of a line redrawn with `\r`, the last non-empty redraw.
pub fn for_log(line: &str) -> Cow<'_, str> {
    if !line.bytes().any(|b| b == 0x1b || b == b'\r' || (b < 0x20 && b != b'\t')) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {
                // A redraw: what follows replaces what came before, unless nothing follows.
                if chars.peek().is_some() {
                    out.clear();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_redraws_and_controls() {
        assert_eq!(for_log("plain text"), "plain text");
        assert_eq!(for_log("\x1b[1;91mFATA\x1b[0m deploy failed"), "FATA deploy failed");
        assert_eq!(for_log("\x1b]0;title\x07after"), "after");
        assert_eq!(for_log("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(for_log("10%\r50%\r100%"), "100%");
        assert_eq!(for_log("done\r"), "done");
        assert_eq!(for_log("a\x07b\tc"), "ab\tc");
    }
}
