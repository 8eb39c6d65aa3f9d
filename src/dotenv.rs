//! A pure reader for `.env` / `.env.sample` text. It never executes anything.
//!
//! The file is PR-authored and read by two different programs: abra (a Go dotenv reader:
//! `KEY=value`, `export` prefix, `#` comments, quotes, `$VAR`/`${VAR}` expansion) and, in places,
//! a shell. ccci checks what abra will deploy, so the value ccci computes must be the value abra
//! computes. Where the two readers would disagree — a shell runs `A=b c` as the command `c`,
//! expands `$(…)`, `${X:-y}`, `~` and lowercase `$names`, and reads `\n` in double quotes as two
//! characters — the line is refused instead of guessed. What remains is the common idiom:
//!
//! - `KEY=value`, `export KEY=value`, blank lines and `#` comment lines;
//! - an unquoted value ends at whitespace; ` # …` after it is a comment;
//! - `'…'` is literal; `"…"` allows `\"` and `\$`;
//! - `$VAR` and `${VAR}` (upper-case names) expand in unquoted and double-quoted values, from keys
//!   assigned earlier in the same file; an unknown name expands to nothing and is recorded in
//!   [`Assignment::unassigned`] (abra may fill it from its own environment, so the policy gate
//!   refuses it rather than trust the empty guess).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use thiserror::Error;

/// One `KEY=value` line, with its value expanded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// 1-based line number.
    pub line: usize,
    pub key: String,
    pub value: String,
    /// Names the value expanded that no earlier line assigned (they became empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unassigned: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {problem}")]
pub struct DotenvError {
    pub line: usize,
    pub problem: Problem,
}

/// Why a line is refused. Each says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("is not KEY=value (a shell would run it as a command); write KEY=value or comment it out with #")]
    NotAssignment,
    #[error("key {0:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")]
    BadKey(String),
    #[error("has a space around `=`; write KEY=value with no spaces (a shell reads `A= b` as running `b`)")]
    SpaceAroundEquals,
    #[error("has an unterminated {0} quote; close it on the same line (multi-line values are not supported)")]
    Unterminated(char),
    #[error("has text after the closing quote; only ` # comment` may follow a quoted value")]
    TrailingText,
    #[error("has a space in an unquoted value (a shell would run the rest as a command); quote the value")]
    UnquotedSpace,
    #[error("uses {0:?} unquoted, which a shell interprets and abra does not; put the value in single quotes")]
    ShellSyntax(char),
    #[error("uses command substitution (`$(` or a backtick), which ccci never runs; write the value itself")]
    Substitution,
    #[error(
        "uses the shell expansion {0:?}, which abra does not understand; use $VAR or ${{VAR}}, or single quotes for a literal"
    )]
    Expansion(String),
    #[error("expands the lower-case name {0:?}, which abra leaves as text and a shell expands; use upper-case names")]
    LowercaseName(String),
    #[error("uses the shell parameter {0:?}; write a literal `$` in single quotes")]
    SpecialParameter(String),
    #[error("has the escape {0:?} in double quotes, which abra and a shell read differently; use single quotes")]
    Escape(String),
    #[error("ends with a carriage return; convert the file to LF line endings")]
    CarriageReturn,
}

/// Every assignment in file order. The first refused line is the error.
pub fn parse(text: &str) -> Result<Vec<Assignment>, DotenvError> {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let fail = |problem| DotenvError { line, problem };
        if raw.ends_with('\r') {
            return Err(fail(Problem::CarriageReturn));
        }
        let body = raw.trim_start_matches([' ', '\t']);
        if body.trim_end_matches([' ', '\t']).is_empty() || body.starts_with('#') {
            continue;
        }
        let body = match body.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start_matches([' ', '\t']),
            _ => body,
        };
        let key_len = body.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
        let (key, rest) = body.split_at(key_len);
        let Some(raw_value) = rest.strip_prefix('=') else {
            return Err(fail(match rest.find('=') {
                None => Problem::NotAssignment,
                Some(_) if key_len > 0 && rest.starts_with([' ', '\t']) => Problem::SpaceAroundEquals,
                Some(at) => Problem::BadKey(body[..key_len + at].to_string()),
            }));
        };
        if key.is_empty() || key.as_bytes()[0].is_ascii_digit() {
            return Err(fail(Problem::BadKey(key.to_string())));
        }
        let mut unassigned = Vec::new();
        let value = value(raw_value, &vars, &mut unassigned).map_err(fail)?;
        vars.insert(key.to_string(), value.clone());
        out.push(Assignment { line, key: key.to_string(), value, unassigned });
    }
    Ok(out)
}

/// The environment the assignments leave: the last assignment of a key wins.
pub fn effective(assignments: &[Assignment]) -> BTreeMap<String, String> {
    assignments.iter().map(|a| (a.key.clone(), a.value.clone())).collect()
}

/// Whitespace, then nothing or a `#` comment.
fn only_comment_after(rest: &str) -> bool {
    let trimmed = rest.trim_start_matches([' ', '\t']);
    trimmed.is_empty() || (trimmed.len() < rest.len() && trimmed.starts_with('#'))
}

fn value(raw: &str, vars: &HashMap<String, String>, unassigned: &mut Vec<String>) -> Result<String, Problem> {
    let mut chars = raw.char_indices().peekable();
    match raw.chars().next() {
        None => Ok(String::new()),
        Some(' ' | '\t') => {
            if raw.trim_matches([' ', '\t']).is_empty() {
                Ok(String::new())
            } else {
                Err(Problem::SpaceAroundEquals)
            }
        }
        Some('\'') => {
            let end = raw[1..].find('\'').ok_or(Problem::Unterminated('\''))? + 1;
            if !only_comment_after(&raw[end + 1..]) {
                return Err(Problem::TrailingText);
            }
            Ok(raw[1..end].to_string())
        }
        Some('"') => {
            chars.next();
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        if !only_comment_after(&raw[i + 1..]) {
                            return Err(Problem::TrailingText);
                        }
                        return Ok(out);
                    }
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '$'))) => out.push(e),
                        Some((_, e)) => return Err(Problem::Escape(format!("\\{e}"))),
                        None => return Err(Problem::Unterminated('"')),
                    },
                    '`' => return Err(Problem::Substitution),
                    '$' => expand(raw, &mut chars, vars, unassigned, &mut out)?,
                    c => out.push(c),
                }
            }
            Err(Problem::Unterminated('"'))
        }
        Some(_) => {
            let mut out = String::new();
            let mut prev: Option<char> = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    ' ' | '\t' => {
                        return if only_comment_after(&raw[i..]) { Ok(out) } else { Err(Problem::UnquotedSpace) };
                    }
                    '`' => return Err(Problem::Substitution),
                    // A shell expands `~` after `=` and after `:` in an assignment.
                    '~' if matches!(prev, None | Some(':')) => return Err(Problem::ShellSyntax('~')),
                    '\'' | '"' | '\\' | ';' | '&' | '|' | '<' | '>' | '(' | ')' => return Err(Problem::ShellSyntax(c)),
                    '$' => expand(raw, &mut chars, vars, unassigned, &mut out)?,
                    c => out.push(c),
                }
                prev = Some(c);
            }
            Ok(out)
        }
    }
}

/// After a `$`: `${NAME}`, `$NAME`, or a literal `$`.
fn expand(
    raw: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    vars: &HashMap<String, String>,
    unassigned: &mut Vec<String>,
    out: &mut String,
) -> Result<(), Problem> {
    let name = match chars.peek().copied() {
        Some((start, '{')) => {
            chars.next();
            let close = raw[start..].find('}').map(|n| start + n);
            let inner = match close {
                Some(end) => &raw[start + 1..end],
                None => return Err(Problem::Expansion(raw[start - 1..].to_string())),
            };
            let end = close.expect("checked");
            let simple = !inner.is_empty()
                && !inner.as_bytes()[0].is_ascii_digit()
                && inner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !simple {
                return Err(Problem::Expansion(raw[start - 1..=end].to_string()));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= end) {
                chars.next();
            }
            inner.to_string()
        }
        Some((start, c)) if c.is_ascii_alphabetic() || c == '_' => {
            let len = raw[start..].bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            while chars.peek().is_some_and(|(i, _)| *i < start + len) {
                chars.next();
            }
            raw[start..start + len].to_string()
        }
        Some((_, '(')) => return Err(Problem::Substitution),
        Some((_, c)) if c.is_ascii_digit() || "$?!#*@-".contains(c) => {
            return Err(Problem::SpecialParameter(format!("${c}")));
        }
        _ => {
            out.push('$');
            return Ok(());
        }
    };
    if name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Problem::LowercaseName(name));
    }
    match vars.get(&name) {
        Some(v) => out.push_str(v),
        None => {
            if !unassigned.contains(&name) {
                unassigned.push(name);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        let a = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        a.last().unwrap_or_else(|| panic!("{text:?}: no assignment")).value.clone()
    }

    #[test]
    fn values_as_abra_and_a_shell_both_read_them() {
        let table: &[(&str, &str)] = &[
            ("A=b", "b"),
            ("A=", ""),
            ("A=   ", ""),
            ("export A=b", "b"),
            ("export\tA=b", "b"),
            ("  A=b  ", "b"),
            ("A=b # comment", "b"),
            ("A=b\t# comment", "b"),
            ("A=b#c", "b#c"),
            ("A=x=y", "x=y"),
            ("A='b c'", "b c"),
            ("A='$B `x` \\n'", "$B `x` \\n"),
            ("A='b' # comment", "b"),
            ("A=\"b c\"", "b c"),
            ("A=\"b\" # comment", "b"),
            ("A=\"say \\\"hi\\\"\"", "say \"hi\""),
            ("A=\"\\$B\"", "$B"),
            ("A=\"a#b\"", "a#b"),
            ("A=\"\"", ""),
            ("A=''", ""),
            ("A=$", "$"),
            ("A=a$/b", "a$/b"),
            ("A=\"cost: 5$\"", "cost: 5$"),
            ("EXTRA_DOMAINS=', `www.example.com`'", ", `www.example.com`"),
            ("SECRET_KEY_VERSION=v1 # length=128", "v1"),
            ("A=*.example.org", "*.example.org"),
            ("A=a~b", "a~b"),
            ("A=é", "é"),
            ("export=1", "1"),
        ];
        for (text, want) in table {
            assert_eq!(one(text), *want, "{text:?}");
        }
    }

    #[test]
    fn expansion_uses_earlier_keys_only() {
        let table: &[(&str, &str)] = &[
            ("B=x\nA=$B", "x"),
            ("B=x\nA=${B}y", "xy"),
            ("B=x\nA=\"$B:${B}\"", "x:x"),
            ("B=x\nA='$B'", "$B"),
            ("B=x\nA=https://${B}/p", "https://x/p"),
            ("B=x\nB=$B$B\nA=$B", "xx"),
            ("A=$B\nB=x", ""),
            ("A=${NOPE}z", "z"),
            ("B_1=x\nA=$B_1.y", "x.y"),
        ];
        for (text, want) in table {
            let a = parse(text).unwrap();
            let got = a.iter().find(|a| a.key == "A").unwrap().value.clone();
            assert_eq!(got, *want, "{text:?}");
        }
        let a = parse("A=$X${Y}$X\n").unwrap();
        assert_eq!(a[0].unassigned, vec!["X".to_string(), "Y".to_string()]);
        assert!(parse("X=1\nA=$X\n").unwrap()[1].unassigned.is_empty());
    }

    #[test]
    fn the_compose_file_idiom() {
        let text = "COMPOSE_FILE=\"compose.yml\"\n# DATABASE\nCOMPOSE_FILE=\"$COMPOSE_FILE:compose.postgres.yml\"\n# COMPOSE_FILE=\"$COMPOSE_FILE:compose.mail.yml\"\n";
        let a = parse(text).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].line, a[1].line), (1, 3));
        assert_eq!(effective(&a)["COMPOSE_FILE"], "compose.yml:compose.postgres.yml");
    }

    #[test]
    fn every_assignment_is_kept_and_the_last_wins() {
        let a = parse("A=1\n\n# c\nB=2\nA=3\n").unwrap();
        let keys: Vec<_> = a.iter().map(|a| (a.line, a.key.as_str(), a.value.as_str())).collect();
        assert_eq!(keys, vec![(1, "A", "1"), (4, "B", "2"), (5, "A", "3")]);
        let e = effective(&a);
        assert_eq!((e["A"].as_str(), e["B"].as_str(), e.len()), ("3", "2", 2));
    }

    #[test]
    fn lines_the_two_readers_would_read_differently_are_refused() {
        use Problem::*;
        let table: &[(&str, Problem)] = &[
            ("just words", NotAssignment),
            ("export A", NotAssignment),
            ("A = b", SpaceAroundEquals),
            ("A =b", SpaceAroundEquals),
            ("A= b", SpaceAroundEquals),
            ("A.B=c", BadKey("A.B".into())),
            ("1A=c", BadKey("1A".into())),
            ("=c", BadKey("".into())),
            ("A-B=c", BadKey("A-B".into())),
            ("A=b c", UnquotedSpace),
            ("A=$(id)", Substitution),
            ("A=\"$(id)\"", Substitution),
            ("A=`id`", Substitution),
            ("A=\"`id`\"", Substitution),
            ("A=x;id", ShellSyntax(';')),
            ("A=x&&id", ShellSyntax('&')),
            ("A=x|id", ShellSyntax('|')),
            ("A=x>f", ShellSyntax('>')),
            ("A=b\"c\"", ShellSyntax('"')),
            ("A=it\\'s", ShellSyntax('\\')),
            ("A=~/x", ShellSyntax('~')),
            ("A=/a:~/x", ShellSyntax('~')),
            ("A='b", Unterminated('\'')),
            ("A=\"b", Unterminated('"')),
            ("A=\"b\\", Unterminated('"')),
            ("A='b'c", TrailingText),
            ("A=\"b\"c", TrailingText),
            ("A='b'#c", TrailingText),
            ("A=${B:-x}", Expansion("${B:-x}".into())),
            ("A=${B", Expansion("${B".into())),
            ("A=${}", Expansion("${}".into())),
            ("A=${#B}", Expansion("${#B}".into())),
            ("A=$home", LowercaseName("home".into())),
            ("A=${home}", LowercaseName("home".into())),
            ("A=$Bc", LowercaseName("Bc".into())),
            ("A=$1", SpecialParameter("$1".into())),
            ("A=$$", SpecialParameter("$$".into())),
            ("A=\"$?\"", SpecialParameter("$?".into())),
            ("A=\"a\\nb\"", Escape("\\n".into())),
            ("A=\"a\\\\b\"", Escape("\\\\".into())),
            ("A=b\r", CarriageReturn),
        ];
        for (text, want) in table {
            let e = parse(text).unwrap_err();
            assert_eq!(&e.problem, want, "{text:?}: {e}");
            assert_eq!(e.line, 1);
        }
        let e = parse("A=1\nB=2\nC=$(reboot)\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3: uses command substitution"), "{e}");
    }
}
