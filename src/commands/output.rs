//! What the commands print on stdout: their primary output (a table for people, a JSON document
//! with `--json`). Logs go to stderr.
//!
//! stdout may be a pipe whose reader has gone (`ccci run --json | head -c1`). Rust ignores
//! SIGPIPE, so the write fails with EPIPE instead of killing ccci; `println!` would then panic.
//! A closed stdout is not the run's failure: it is logged, and the command still exits with its
//! own code.

use std::io::Write;

/// Prints `text` (and a final newline if it has none) on stdout; false when stdout could not
/// take it.
pub fn stdout(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    let mut put = || -> std::io::Result<()> {
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    match put() {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            tracing::warn!("stdout was closed by its reader; the output was not delivered");
            false
        }
        Err(e) => {
            tracing::warn!("cannot write to stdout: {e}");
            false
        }
    }
}

/// A plain-text table: a header row, then one row per entry, columns padded to their widest
/// cell and two spaces apart; the last column is not padded.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = width[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_lines_up_its_columns() {
        let rows = vec![
            vec!["reap".to_string(), "app".to_string(), "x.example".to_string()],
            vec!["leave".to_string(), "lockfile".to_string(), "y".to_string()],
        ];
        assert_eq!(
            table(&["ACTION", "WHAT", "NAME"], &rows),
            "ACTION  WHAT      NAME\nreap    app       x.example\nleave   lockfile  y\n"
        );
    }
}
