//! The folder tree is the program's layering: the low layers (`lifetime`, `process`, `lock`,
//! `adapters`, `lease`) know nothing of the pipeline, the janitor, the commands or the command line.
//! This guard reads the sources, so a new upward import fails the suite instead of a review.

use std::path::Path;

use crate::common::repo_root;

const LOW: [&str; 5] = ["lifetime", "process", "lock", "adapters", "lease"];
const HIGH: [&str; 4] = ["pipeline", "janitor", "commands", "cli"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn low_layers_do_not_reach_up() {
    let mut problems = Vec::new();
    for low in LOW {
        let mut files = Vec::new();
        rust_files(&repo_root().join("src").join(low), &mut files);
        assert!(!files.is_empty(), "src/{low} has no files: update this guard");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                for high in HIGH {
                    if line.contains(&format!("crate::{high}::")) || line.contains(&format!("crate::{high};")) {
                        problems.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "a low layer imports a high one:\n{}", problems.join("\n"));
}
